//! The broker URL: parsed into an [`Endpoint`] (TLS or not, host, port,
//! credentials), and redacted for logs and errors so that a password in it
//! is never shown.

use anyhow::{anyhow, Result};

/// The broker address and credentials in an MQTT URL.
#[derive(Debug, PartialEq)]
pub(super) struct Endpoint {
    pub(super) tls: bool,
    pub(super) host: String,
    pub(super) port: u16,
    pub(super) username: Option<String>,
    pub(super) password: Option<String>,
}

impl Endpoint {
    pub(super) fn parse(url: &str) -> Result<Endpoint> {
        let bad = |why: &str| anyhow!("bad MQTT URL {:?}: {why}", redact_url(url));
        let (scheme, rest) = url
            .split_once("://")
            .ok_or_else(|| bad("expected mqtt://HOST[:PORT] or mqtts://HOST[:PORT]"))?;
        let (tls, default_port) = match scheme.to_ascii_lowercase().as_str() {
            "mqtt" | "tcp" => (false, 1883),
            "mqtts" | "ssl" => (true, 8883),
            _ => {
                return Err(bad(&format!(
                    "unknown scheme {scheme:?} (use mqtt:// or mqtts://)"
                )))
            }
        };
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.contains(['/', '?', '#']) {
            return Err(bad("a broker URL has no path or query"));
        }
        let (userinfo, hostport) = match rest.rsplit_once('@') {
            Some((user, host)) => (Some(user), host),
            None => (None, rest),
        };
        let (host, port) = split_host_port(hostport).map_err(|why| bad(&why))?;
        let port = match port {
            None => default_port,
            Some(p) => p
                .parse::<u16>()
                .ok()
                .filter(|&p| p != 0)
                .ok_or_else(|| bad(&format!("bad port {p:?}")))?,
        };
        let (username, password) = match userinfo {
            None => (None, None),
            Some(info) => {
                let (user, pass) = match info.split_once(':') {
                    Some((u, p)) => (u, Some(p)),
                    None => (info, None),
                };
                let decode =
                    |s: &str| percent_decode(s).ok_or_else(|| bad("bad %-escape in the user info"));
                (Some(decode(user)?), pass.map(decode).transpose()?)
            }
        };
        Ok(Endpoint {
            tls,
            host,
            port,
            username,
            password,
        })
    }
}

/// `host`, `host:port`, `[v6]`, `[v6]:port`.
fn split_host_port(hostport: &str) -> Result<(String, Option<&str>), String> {
    let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
        let (addr, after) = v6.split_once(']').ok_or("unclosed '[' in the host")?;
        let port = match after {
            "" => None,
            p => Some(p.strip_prefix(':').ok_or("junk after ']'")?),
        };
        (addr, port)
    } else {
        match hostport.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (hostport, None),
        }
    };
    if host.is_empty() {
        return Err("no host".to_string());
    }
    let allowed = |c: char| c.is_ascii_alphanumeric() || "-._:%".contains(c);
    if !host.chars().all(allowed) {
        return Err(format!("bad host {host:?}"));
    }
    Ok((host.to_string(), port))
}

fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// The URL with any password replaced, for logs and errors.
pub(super) fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    match rest.rsplit_once('@') {
        Some((info, host)) => match info.split_once(':') {
            Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
            None => url.to_string(),
        },
        None => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::publish::mqtt::MqttConfig;

    #[test]
    fn parses_broker_urls() {
        let e = Endpoint::parse("mqtt://127.0.0.1:1884").unwrap();
        assert_eq!((e.tls, e.host.as_str(), e.port), (false, "127.0.0.1", 1884));
        let e = Endpoint::parse("mqtts://broker.local/").unwrap();
        assert_eq!(
            (e.tls, e.host.as_str(), e.port),
            (true, "broker.local", 8883)
        );
        let e = Endpoint::parse("mqtt://[::1]:99").unwrap();
        assert_eq!((e.host.as_str(), e.port), ("::1", 99));
        let e = Endpoint::parse("mqtt://cam:p%40ss@host").unwrap();
        assert_eq!(
            (e.username.as_deref(), e.password.as_deref(), e.port),
            (Some("cam"), Some("p@ss"), 1883)
        );
    }

    #[test]
    fn rejects_bad_urls_naming_the_problem() {
        for (url, needle) in [
            ("127.0.0.1:1883", "expected mqtt://"),
            ("http://host", "unknown scheme"),
            ("mqtt://", "no host"),
            ("mqtt://host:0", "bad port"),
            ("mqtt://host:99999", "bad port"),
            ("mqtt://host:12ab", "bad port"),
            ("mqtt://host/topic", "no path"),
            ("mqtt://ho st", "bad host"),
            ("mqtt://[::1", "unclosed"),
        ] {
            let err = MqttConfig::from_url(url).unwrap_err().to_string();
            assert!(err.contains(needle), "{url}: {err}");
        }
    }

    #[test]
    fn passwords_stay_out_of_messages() {
        let err = Endpoint::parse("mqtt://u:secret@host:bad")
            .unwrap_err()
            .to_string();
        assert!(!err.contains("secret"), "{err}");
        let mut cfg = MqttConfig::from_url("mqtt://u:secret@host").unwrap();
        cfg.password = Some("hunter2".into());
        let shown = format!("{cfg:?}");
        assert!(
            !shown.contains("secret") && !shown.contains("hunter2"),
            "{shown}"
        );
    }
}
