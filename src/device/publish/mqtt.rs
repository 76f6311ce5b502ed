//! MQTT publishing (rumqttc): per-frame detections, retained per-label
//! counts, and an availability topic with a Last Will.
//!
//! Topics under `topic_prefix` (default `irdistill`):
//! - `<prefix>/available`: retained `online` on every (re)connect; the Last
//!   Will and a clean shutdown set it to `offline`.
//! - `<prefix>/<camera>/detections`: the per-frame JSON, QoS 0.
//! - `<prefix>/<camera>/<label>`: retained current count, QoS 1, sent when
//!   it changes (including back to 0). The event loop sends every current
//!   count again on each reconnect (a broker restarted without persistence
//!   has lost them, and changes made during an outage were never sent), so
//!   callers need not repeat unchanged counts.
//!
//! The pipeline must never wait for the network: publishing only enqueues
//! into rumqttc's bounded request channel (`try_publish`), and detections
//! produced while the broker is unreachable are dropped and counted rather
//! than queued, so consumers never receive a burst of stale frames after a
//! reconnect. The rumqttc event loop runs on its own thread, which also
//! reconnects with capped exponential backoff.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use crossbeam_channel::{Receiver, Sender};
use rumqttc::{
    Client, Connection, Disconnect, Event, Incoming, LastWill, MqttOptions, Outgoing, Publish, QoS,
    RecvTimeoutError, Request, TlsConfiguration, Transport,
};
use serde::{Deserialize, Serialize};

/// The `[mqtt]` configuration (or `--mqtt URL` with defaults).
#[derive(Clone, Deserialize)]
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
        })
    }

    fn validate(&self) -> Result<()> {
        validate_prefix(&self.topic_prefix)?;
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

fn validate_prefix(prefix: &str) -> Result<()> {
    if prefix.is_empty() || prefix.starts_with('/') || prefix.ends_with('/') {
        bail!("mqtt.topic_prefix {prefix:?} must be non-empty without a leading or trailing '/'");
    }
    if prefix.contains(['+', '#', '\0']) {
        bail!("mqtt.topic_prefix {prefix:?} must not contain the wildcards '+' or '#'");
    }
    Ok(())
}

/// The broker address and credentials in an MQTT URL.
#[derive(Debug, PartialEq)]
struct Endpoint {
    tls: bool,
    host: String,
    port: u16,
    username: Option<String>,
    password: Option<String>,
}

impl Endpoint {
    fn parse(url: &str) -> Result<Endpoint> {
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
fn redact_url(url: &str) -> String {
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

/// Counters for `/metrics` and logs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct MqttStats {
    /// Messages written to the broker connection.
    pub published: u64,
    /// Messages dropped: broker unreachable, queue full, or oversized.
    pub dropped: u64,
    pub connected: bool,
    /// Successful connections after the first one.
    pub reconnects: u64,
}

// Detections JSON is far below this; a larger message is a bug upstream
// and would make rumqttc drop the whole connection.
const MAX_PAYLOAD_BYTES: usize = 1 << 20;
const RECONNECT_MIN: Duration = Duration::from_millis(250);
const RECONNECT_MAX: Duration = Duration::from_secs(10);
// No event for this long while shutting down: everything queued is sent.
const GOODBYE_IDLE: Duration = Duration::from_millis(100);
const ONLINE: &str = "online";
const OFFLINE: &str = "offline";

/// State shared by the publishing side and the event-loop thread.
#[derive(Default)]
struct Shared {
    connected: AtomicBool,
    stop_requested: AtomicBool,
    stopping: AtomicBool,
    /// At shutdown, `offline` did not fit into the request channel.
    offline_failed: AtomicBool,
    published: AtomicU64,
    dropped: AtomicU64,
    /// ConnAcks so far.
    connections: AtomicU64,
    oversize_logged: AtomicBool,
    counts: Mutex<HashMap<String, CameraCounts>>,
}

/// One camera's count topics.
#[derive(Default)]
struct CameraCounts {
    /// The current count per label (0 for labels seen before, now absent).
    current: BTreeMap<String, usize>,
    /// What was last enqueued per label in this connection.
    sent: BTreeMap<String, usize>,
}

/// Publishes to one broker; see the module documentation.
pub struct MqttPublisher {
    client: Client,
    shared: Arc<Shared>,
    prefix: String,
    broker: String,
    stop_tx: Sender<()>,
    done_rx: Receiver<()>,
    thread: Option<JoinHandle<()>>,
}

impl MqttPublisher {
    /// Checks the configuration, reads TLS files and starts the event loop
    /// thread. Returns at once: the connection is made in the background,
    /// and a broker that is down is retried with backoff.
    pub fn start(cfg: &MqttConfig) -> Result<MqttPublisher> {
        cfg.validate()?;
        let endpoint = Endpoint::parse(&cfg.url)?;
        let broker = format!("{}:{}", endpoint.host, endpoint.port);
        let prefix = cfg.topic_prefix.clone();
        let options = mqtt_options(cfg, &endpoint)?;
        let (client, connection) = Client::new(options, cfg.queue_capacity);
        let shared = Arc::new(Shared::default());
        let (stop_tx, stop_rx) = crossbeam_channel::bounded(1);
        let (done_tx, done_rx) = crossbeam_channel::bounded(1);
        let event_loop = EventLoopThread {
            connection,
            shared: Arc::clone(&shared),
            broker: broker.clone(),
            prefix: prefix.clone(),
            stop_rx,
        };
        let thread = std::thread::Builder::new()
            .name("mqtt".to_string())
            .spawn(move || {
                event_loop.run();
                let _ = done_tx.send(());
            })
            .context("starting the MQTT thread")?;
        tracing::info!(broker = %broker, tls = endpoint.tls, prefix = %prefix, "MQTT publisher started");
        Ok(MqttPublisher {
            client,
            shared,
            prefix,
            broker,
            stop_tx,
            done_rx,
            thread: Some(thread),
        })
    }

    /// `<prefix>/<camera>/detections`, QoS 0. Never blocks; dropped and
    /// counted when the broker is unreachable or the queue is full.
    pub fn publish_detections(&self, camera: &str, frame_json: &str) {
        let topic = detections_topic(&self.prefix, camera);
        self.try_send(
            topic,
            QoS::AtMostOnce,
            false,
            frame_json.as_bytes().to_vec(),
        );
    }

    /// `<prefix>/<camera>/<label>` retained, for each label whose count
    /// changed since it was last sent (a label missing from `counts` now
    /// counts 0). Never blocks; what cannot be sent now goes out on the
    /// next call or with the next (re)connect.
    pub fn publish_counts(&self, camera: &str, counts: &BTreeMap<String, usize>) {
        let mut all = self
            .shared
            .counts
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let CameraCounts { current, sent } = all.entry(camera.to_string()).or_default();
        current.values_mut().for_each(|n| *n = 0);
        current.extend(counts.iter().map(|(label, &n)| (label.clone(), n)));
        for (label, &n) in current.iter() {
            if sent.get(label) == Some(&n) {
                continue;
            }
            let topic = count_topic(&self.prefix, camera, label);
            if self.try_send(topic, QoS::AtLeastOnce, true, n.to_string().into_bytes()) {
                sent.insert(label.clone(), n);
            }
        }
    }

    pub fn stats(&self) -> MqttStats {
        let connections = self.shared.connections.load(Ordering::Acquire);
        MqttStats {
            published: self.shared.published.load(Ordering::Relaxed),
            dropped: self.shared.dropped.load(Ordering::Relaxed),
            connected: self.shared.connected.load(Ordering::Acquire),
            reconnects: connections.saturating_sub(1),
        }
    }

    /// Publishes `offline` (retained), disconnects cleanly and stops the
    /// thread, waiting at most `timeout`. If the broker is unreachable the
    /// Last Will (or nothing, if never connected) stands instead.
    pub fn shutdown(mut self, timeout: Duration) {
        self.request_stop();
        let finished = self.done_rx.recv_timeout(timeout).is_ok();
        if let (true, Some(thread)) = (finished, self.thread.take()) {
            let _ = thread.join();
            tracing::info!(broker = %self.broker, stats = ?self.stats(), "MQTT publisher stopped");
        } else if !finished {
            tracing::warn!(broker = %self.broker, ?timeout, "MQTT shutdown did not finish in time; the broker's Last Will stands");
        }
    }

    /// Asks the event loop to say goodbye and end (idempotent, non-blocking).
    fn request_stop(&self) {
        if self.shared.stop_requested.swap(true, Ordering::AcqRel) {
            return;
        }
        // First the flag, then the message that wakes an idle event loop,
        // so that the loop sees the flag when it wakes.
        self.shared.stopping.store(true, Ordering::Release);
        let _ = self.stop_tx.try_send(());
        // `offline` through the request channel, behind whatever is queued.
        let queued = self
            .client
            .try_publish(
                availability_topic(&self.prefix),
                QoS::AtLeastOnce,
                true,
                OFFLINE,
            )
            .is_ok();
        self.shared.offline_failed.store(!queued, Ordering::Release);
    }

    /// Enqueues one message; false (and counted as dropped) when it cannot.
    fn try_send(&self, topic: String, qos: QoS, retain: bool, payload: Vec<u8>) -> bool {
        if !self.shared.connected.load(Ordering::Acquire)
            || self.shared.stopping.load(Ordering::Acquire)
        {
            self.shared.dropped.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        if payload.len() > MAX_PAYLOAD_BYTES {
            if !self.shared.oversize_logged.swap(true, Ordering::Relaxed) {
                tracing::warn!(topic = %topic, bytes = payload.len(), "MQTT message over {MAX_PAYLOAD_BYTES} bytes dropped");
            }
            self.shared.dropped.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        match self.client.try_publish(topic, qos, retain, payload) {
            Ok(()) => true,
            Err(_) => {
                self.shared.dropped.fetch_add(1, Ordering::Relaxed);
                false
            }
        }
    }
}

impl Drop for MqttPublisher {
    /// Without `shutdown`, still stop the thread (it would otherwise
    /// reconnect forever); no waiting here.
    fn drop(&mut self) {
        self.request_stop();
    }
}

fn availability_topic(prefix: &str) -> String {
    format!("{prefix}/available")
}

fn detections_topic(prefix: &str, camera: &str) -> String {
    format!("{prefix}/{}/detections", topic_segment(camera))
}

fn count_topic(prefix: &str, camera: &str, label: &str) -> String {
    format!(
        "{prefix}/{}/{}",
        topic_segment(camera),
        topic_segment(label)
    )
}

/// A camera name or label as one topic level: no '/' (would add levels)
/// and no wildcards (a broker refuses those in a publish).
fn topic_segment(name: &str) -> String {
    let cleaned: String = name
        .chars()
        .map(|c| {
            if matches!(c, '/' | '+' | '#' | '\0') {
                '_'
            } else {
                c
            }
        })
        .collect();
    if cleaned.is_empty() {
        "_".to_string()
    } else {
        cleaned
    }
}

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

fn mqtt_options(cfg: &MqttConfig, endpoint: &Endpoint) -> Result<MqttOptions> {
    let client_id = cfg.client_id.clone().unwrap_or_else(default_client_id);
    let mut options = MqttOptions::new(client_id, endpoint.host.clone(), endpoint.port);
    options.set_keep_alive(Duration::from_secs(cfg.keep_alive_s));
    options.set_max_packet_size(64 * 1024, MAX_PAYLOAD_BYTES + 64 * 1024);
    options.set_last_will(LastWill::new(
        availability_topic(&cfg.topic_prefix),
        OFFLINE,
        QoS::AtLeastOnce,
        true,
    ));
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

/// The rumqttc event loop plus our reconnect policy.
struct EventLoopThread {
    connection: Connection,
    shared: Arc<Shared>,
    broker: String,
    prefix: String,
    stop_rx: Receiver<()>,
}

impl EventLoopThread {
    fn run(mut self) {
        let mut backoff = RECONNECT_MIN;
        let mut outage_logged = false;
        let mut goodbye_queued = false;
        loop {
            let stopping = self.shared.stopping.load(Ordering::Acquire);
            if stopping && !self.shared.connected.load(Ordering::Acquire) {
                return;
            }
            let event = if stopping {
                // Shutting down: once nothing is left to send (no event for
                // a while), say goodbye. Cancelling an idle poll is harmless;
                // at worst the broker sees a broken connection and
                // publishes the Last Will, which says `offline` too.
                match self.connection.recv_timeout(GOODBYE_IDLE) {
                    Err(RecvTimeoutError::Timeout) => {
                        if !goodbye_queued {
                            self.queue_goodbye();
                            goodbye_queued = true;
                        }
                        continue;
                    }
                    Err(RecvTimeoutError::Disconnected) => return,
                    Ok(event) => event,
                }
            } else {
                match self.connection.recv() {
                    Ok(event) => event,
                    // Every request sender is gone: nothing more to do.
                    Err(_) => return,
                }
            };
            match event {
                Ok(Event::Incoming(Incoming::ConnAck(_))) => {
                    self.on_connected(outage_logged);
                    backoff = RECONNECT_MIN;
                    outage_logged = false;
                }
                Ok(Event::Outgoing(Outgoing::Publish(_))) => {
                    self.shared.published.fetch_add(1, Ordering::Relaxed);
                }
                Ok(Event::Outgoing(Outgoing::Disconnect)) if stopping => {
                    self.shared.connected.store(false, Ordering::Release);
                    return;
                }
                Ok(_) => {}
                Err(err) => {
                    let was_connected = self.shared.connected.swap(false, Ordering::AcqRel);
                    if self.shared.stopping.load(Ordering::Acquire) {
                        return;
                    }
                    if was_connected {
                        tracing::warn!(broker = %self.broker, "MQTT connection lost: {err}; reconnecting");
                    } else if !outage_logged {
                        tracing::warn!(broker = %self.broker, "cannot connect to the MQTT broker: {err}; retrying with backoff");
                    } else {
                        tracing::debug!(broker = %self.broker, "MQTT connect failed: {err}");
                    }
                    outage_logged = true;
                    // Interrupted by shutdown, which then ends the loop.
                    let _ = self.stop_rx.recv_timeout(backoff);
                    backoff = (backoff * 2).min(RECONNECT_MAX);
                }
            }
        }
    }

    fn on_connected(&mut self, after_outage: bool) {
        // `online` and every current count go ahead of anything left over
        // from the last session.
        let mut hello = vec![retained(&availability_topic(&self.prefix), ONLINE)];
        let mut all = self
            .shared
            .counts
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        for (camera, counts) in all.iter_mut() {
            for (label, n) in &counts.current {
                hello.push(retained(
                    &count_topic(&self.prefix, camera, label),
                    &n.to_string(),
                ));
            }
            counts.sent = counts.current.clone();
        }
        drop(all);
        let pending = &mut self.connection.eventloop.pending;
        for request in hello.into_iter().rev() {
            pending.push_front(request);
        }
        let n = self.shared.connections.fetch_add(1, Ordering::AcqRel) + 1;
        self.shared.connected.store(true, Ordering::Release);
        if n == 1 {
            tracing::info!(broker = %self.broker, "MQTT connected");
        } else {
            tracing::info!(broker = %self.broker, reconnects = n - 1, after_outage, "MQTT reconnected");
        }
    }

    /// DISCONNECT, after `offline` if shutdown could not queue it (a full
    /// channel): a clean disconnect discards the Last Will, so we must say
    /// `offline` ourselves.
    fn queue_goodbye(&mut self) {
        let pending = &mut self.connection.eventloop.pending;
        if self.shared.offline_failed.load(Ordering::Acquire) {
            pending.push_back(retained(&availability_topic(&self.prefix), OFFLINE));
        }
        pending.push_back(Request::Disconnect(Disconnect));
    }
}

fn retained(topic: &str, payload: &str) -> Request {
    let mut publish = Publish::new(topic, QoS::AtLeastOnce, payload);
    publish.retain = true;
    Request::Publish(publish)
}

#[cfg(test)]
mod tests {
    use super::*;

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
            ("keep_alive_s", "0"),
            ("queue_capacity", "0"),
        ] {
            let cfg: MqttConfig =
                toml::from_str(&format!("url = \"mqtt://h\"\n{field} = {value}")).unwrap();
            let err = cfg.validate().unwrap_err().to_string();
            assert!(err.contains(field), "{field}: {err}");
        }
    }

    #[test]
    fn topic_segments_cannot_add_levels_or_wildcards() {
        assert_eq!(topic_segment("traffic light"), "traffic light");
        assert_eq!(topic_segment("a/b+#"), "a_b__");
        assert_eq!(topic_segment(""), "_");
    }

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
