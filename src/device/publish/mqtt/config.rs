//! The `[mqtt]` table ([`MqttConfig`]): its defaults, the checks run at
//! startup, and a `Debug` that keeps the password out of logs.

use std::fmt;
use std::path::PathBuf;

use anyhow::{bail, Result};
use serde::Deserialize;

use super::endpoint::{redact_url, Endpoint};

/// The `[mqtt]` configuration (or `--mqtt URL` with defaults).
#[derive(Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttConfig {
    /// `mqtt://HOST[:PORT]` (1883) or `mqtts://HOST[:PORT]` (TLS, 8883);
    /// `mqtt://USER:PASSWORD@HOST` is accepted too (percent-encoded).
    pub url: String,
    /// Default: `irdistill-<hostname>-<pid>`. Must be unique per broker.
    #[serde(default)]
    pub client_id: Option<String>,
    /// Overrides a user name in the URL.
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password: Option<String>,
    /// PEM CA bundle for `mqtts://` (default: the system bundle).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate and key, for brokers that require them.
    #[serde(default)]
    pub client_cert: Option<PathBuf>,
    #[serde(default)]
    pub client_key: Option<PathBuf>,
    #[serde(default = "default_topic_prefix")]
    pub topic_prefix: String,
    /// MQTT keep-alive; the broker publishes the Last Will after 1.5× this
    /// without traffic from us.
    #[serde(default = "default_keep_alive_s")]
    pub keep_alive_s: u64,
    /// Messages that may wait for the network; more are dropped and counted.
    #[serde(default = "default_queue_capacity")]
    pub queue_capacity: usize,
    /// Home Assistant MQTT discovery: each camera appears as a device.
    #[serde(default = "default_discovery")]
    pub discovery: bool,
    /// Home Assistant's discovery prefix (its MQTT integration setting).
    #[serde(default = "default_discovery_prefix")]
    pub discovery_prefix: String,
}

fn default_discovery() -> bool {
    true
}
fn default_discovery_prefix() -> String {
    "homeassistant".to_string()
}

fn default_topic_prefix() -> String {
    "irdistill".to_string()
}
fn default_keep_alive_s() -> u64 {
    30
}
fn default_queue_capacity() -> usize {
    64
}

// The password stays out of logs and error messages.
impl fmt::Debug for MqttConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MqttConfig")
            .field("url", &redact_url(&self.url))
            .field("client_id", &self.client_id)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .field("ca_file", &self.ca_file)
            .field("client_cert", &self.client_cert)
            .field("client_key", &self.client_key)
            .field("topic_prefix", &self.topic_prefix)
            .field("keep_alive_s", &self.keep_alive_s)
            .field("queue_capacity", &self.queue_capacity)
            .field("discovery", &self.discovery)
            .field("discovery_prefix", &self.discovery_prefix)
            .finish()
    }
}

impl MqttConfig {
    /// A configuration with defaults for everything but the URL, which is
    /// checked here so that a typo fails at startup.
    pub fn from_url(url: &str) -> Result<MqttConfig> {
        Endpoint::parse(url)?;
        Ok(MqttConfig {
            url: url.to_string(),
            client_id: None,
            username: None,
            password: None,
            ca_file: None,
            client_cert: None,
            client_key: None,
            topic_prefix: default_topic_prefix(),
            keep_alive_s: default_keep_alive_s(),
            queue_capacity: default_queue_capacity(),
            discovery: default_discovery(),
            discovery_prefix: default_discovery_prefix(),
        })
    }

    /// Checks every field; the error names it (`mqtt.keep_alive_s`, …).
    pub fn validate(&self) -> Result<()> {
        validate_prefix("mqtt.topic_prefix", &self.topic_prefix)?;
        validate_prefix("mqtt.discovery_prefix", &self.discovery_prefix)?;
        if !(1..=u64::from(u16::MAX)).contains(&self.keep_alive_s) {
            bail!(
                "mqtt.keep_alive_s must be 1..=65535 seconds, got {} (0 would stop the broker from noticing a dead daemon)",
                self.keep_alive_s
            );
        }
        if self.queue_capacity == 0 {
            bail!("mqtt.queue_capacity must be at least 1");
        }
        if self.password.is_some() && self.username.is_none() {
            bail!("mqtt.password is set but mqtt.username is not");
        }
        if self
            .client_id
            .as_deref()
            .is_some_and(|id| id.trim().is_empty())
        {
            bail!("mqtt.client_id must not be empty");
        }
        Ok(())
    }
}

fn validate_prefix(field: &str, prefix: &str) -> Result<()> {
    if prefix.is_empty() || prefix.starts_with('/') || prefix.ends_with('/') {
        bail!("{field} {prefix:?} must be non-empty without a leading or trailing '/'");
    }
    if prefix.contains(['+', '#', '\0']) {
        bail!("{field} {prefix:?} must not contain the wildcards '+' or '#'");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_defaults_and_checks() {
        let cfg: MqttConfig = toml::from_str("url = \"mqtt://h\"").unwrap();
        assert_eq!(
            (
                cfg.topic_prefix.as_str(),
                cfg.keep_alive_s,
                cfg.queue_capacity
            ),
            ("irdistill", 30, 64)
        );
        assert!(toml::from_str::<MqttConfig>("url = \"mqtt://h\"\nqueue_capacty = 3").is_err());
        for (field, value) in [
            ("topic_prefix", "\"a/#\""),
            ("discovery_prefix", "\"/ha\""),
            ("keep_alive_s", "0"),
            ("queue_capacity", "0"),
        ] {
            let cfg: MqttConfig =
                toml::from_str(&format!("url = \"mqtt://h\"\n{field} = {value}")).unwrap();
            let err = cfg.validate().unwrap_err().to_string();
            assert!(err.contains(field), "{field}: {err}");
        }
    }
}
