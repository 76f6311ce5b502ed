//! The connection options rumqttc is started with: client id, keep-alive,
//! Last Will, credentials and TLS. TLS files are read and checked here, at
//! startup, rather than failing at every connect.

use std::path::Path;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use rumqttc::{LastWill, MqttOptions, QoS, TlsConfiguration, Transport};

use super::endpoint::{redact_url, Endpoint};
use super::topics::{availability_topic, OFFLINE};
use super::{MqttConfig, MAX_PAYLOAD_BYTES};

fn default_client_id() -> String {
    // /proc/sys is hidden under systemd's ProcSubset=pid: /etc/hostname then.
    let host = ["/proc/sys/kernel/hostname", "/etc/hostname"]
        .iter()
        .filter_map(|f| std::fs::read_to_string(f).ok())
        .map(|h| h.trim().to_string())
        .find(|h| !h.is_empty())
        .unwrap_or_else(|| "host".to_string());
    format!("irdistill-{host}-{}", std::process::id())
}

/// The daemon's options: with the Last Will `offline`.
pub(super) fn mqtt_options(cfg: &MqttConfig, endpoint: &Endpoint) -> Result<MqttOptions> {
    let client_id = cfg.client_id.clone().unwrap_or_else(default_client_id);
    let mut options = base_options(cfg, endpoint, client_id)?;
    options.set_last_will(LastWill::new(
        availability_topic(&cfg.topic_prefix),
        OFFLINE,
        QoS::AtLeastOnce,
        true,
    ));
    Ok(options)
}

/// A helper tool's options: the daemon's broker and credentials, its own
/// client id (`<daemon's>-<role>`) and no Last Will.
pub(super) fn plain_options(
    cfg: &MqttConfig,
    endpoint: &Endpoint,
    role: &str,
) -> Result<MqttOptions> {
    let id = cfg.client_id.clone().unwrap_or_else(default_client_id);
    base_options(cfg, endpoint, format!("{id}-{role}"))
}

fn base_options(cfg: &MqttConfig, endpoint: &Endpoint, client_id: String) -> Result<MqttOptions> {
    let mut options = MqttOptions::new(client_id, endpoint.host.clone(), endpoint.port);
    options.set_keep_alive(Duration::from_secs(cfg.keep_alive_s));
    options.set_max_packet_size(64 * 1024, MAX_PAYLOAD_BYTES + 64 * 1024);
    // The config's user wins over one in the URL.
    let username = cfg.username.clone().or_else(|| endpoint.username.clone());
    let password = if cfg.username.is_some() {
        cfg.password.clone()
    } else {
        endpoint.password.clone()
    };
    if let Some(user) = username {
        options.set_credentials(user, password.unwrap_or_default());
    }
    if endpoint.tls {
        options.set_transport(tls_transport(cfg)?);
    } else if let Some(file) = [&cfg.ca_file, &cfg.client_cert, &cfg.client_key]
        .into_iter()
        .flatten()
        .next()
    {
        bail!(
            "{}: TLS files are configured but the broker URL {} is not mqtts://",
            file.display(),
            redact_url(&cfg.url)
        );
    }
    Ok(options)
}

// Where Debian/Raspberry Pi OS, Fedora and Alpine keep the system CAs.
const SYSTEM_CA_BUNDLES: [&str; 3] = [
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/cert.pem",
];

fn tls_transport(cfg: &MqttConfig) -> Result<Transport> {
    let ca = match &cfg.ca_file {
        Some(path) => read_pem(path, "CERTIFICATE", "mqtt.ca_file")?,
        None => {
            let bundle = SYSTEM_CA_BUNDLES
                .iter()
                .map(Path::new)
                .find(|p| p.is_file())
                .ok_or_else(|| {
                    anyhow!(
                        "mqtts:// needs mqtt.ca_file: no system CA bundle found at {}",
                        SYSTEM_CA_BUNDLES.join(", ")
                    )
                })?;
            read_pem(bundle, "CERTIFICATE", "system CA bundle")?
        }
    };
    let client_auth = match (&cfg.client_cert, &cfg.client_key) {
        (Some(cert), Some(key)) => Some((
            read_pem(cert, "CERTIFICATE", "mqtt.client_cert")?,
            read_pem(key, "PRIVATE KEY", "mqtt.client_key")?,
        )),
        (None, None) => None,
        _ => bail!("mqtt.client_cert and mqtt.client_key must be given together"),
    };
    Ok(Transport::tls_with_config(TlsConfiguration::Simple {
        ca,
        alpn: None,
        client_auth,
    }))
}

/// Reads a PEM file and checks that it holds the expected kind of block,
/// so a wrong path fails at startup rather than at every connect.
fn read_pem(path: &Path, kind: &str, what: &str) -> Result<Vec<u8>> {
    let bytes =
        std::fs::read(path).with_context(|| format!("{what} {}: cannot read", path.display()))?;
    let text = String::from_utf8_lossy(&bytes);
    let has_block = text
        .lines()
        .any(|l| l.starts_with("-----BEGIN ") && l.contains(kind));
    if !has_block {
        bail!("{what} {}: no PEM {kind} block in it", path.display());
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use crate::device::publish::mqtt::{MqttConfig, MqttPublisher};

    #[test]
    fn tls_files_are_checked_at_start() {
        let mut cfg = MqttConfig::from_url("mqtts://localhost").unwrap();
        cfg.ca_file = Some("/nonexistent/ca.pem".into());
        let err = format!("{:#}", MqttPublisher::start(&cfg).err().unwrap());
        assert!(err.contains("/nonexistent/ca.pem"), "{err}");
        let mut cfg = MqttConfig::from_url("mqtt://localhost").unwrap();
        cfg.ca_file = Some("/etc/hostname".into());
        let err = format!("{:#}", MqttPublisher::start(&cfg).err().unwrap());
        assert!(err.contains("not mqtts://"), "{err}");
    }
}
