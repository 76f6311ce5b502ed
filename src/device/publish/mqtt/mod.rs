//! MQTT publishing (rumqttc): per-frame detections, retained per-label
//! counts, and an availability topic with a Last Will.
//!
//! Topics under `topic_prefix` (default `irdistill`):
//! - `<prefix>/available`: retained `online` on every (re)connect; the Last
//!   Will and a clean shutdown set it to `offline`.
//! - `<prefix>/<camera>/detections`: the per-frame JSON, QoS 0.
//! - `<prefix>/<camera>/events`: object events (`new` / `update` / `end`),
//!   QoS 1, see [`crate::device::events`].
//! - `<discovery_prefix>/…/irdistill_<camera>/…/config`: Home Assistant
//!   discovery (retained), see `discovery`.
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
//!
//! This file holds the public [`MqttPublisher`] API; `config` the
//! `[mqtt]` table, `discovery` Home Assistant's configs, `endpoint` the
//! broker URL, `options` the connection
//! options and TLS files, `topics` the topic names, `state` what the
//! publisher and the event-loop thread share, and `event_loop` that thread.

mod config;
mod discovery;
mod endpoint;
mod event_loop;
mod forget;
mod options;
mod state;
mod topics;

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{Context, Result};
use crossbeam_channel::{Receiver, Sender};
use rumqttc::{Client, QoS};
use serde::Serialize;

pub use config::MqttConfig;
pub use discovery::DeviceInfo;
use endpoint::Endpoint;
use event_loop::EventLoopThread;
pub use forget::forget_camera;
use state::{CameraCounts, Shared};
use topics::{availability_topic, count_topic, detections_topic, events_topic, OFFLINE};

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

/// Publishes to one broker; see the module documentation.
pub struct MqttPublisher {
    client: Client,
    shared: Arc<Shared>,
    prefix: String,
    /// Home Assistant's discovery prefix; none: discovery is off.
    discovery_prefix: Option<String>,
    /// `host:port`, for logs.
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
        let discovery_prefix = cfg.discovery.then(|| cfg.discovery_prefix.clone());
        let options = options::mqtt_options(cfg, &endpoint)?;
        let (client, connection) = Client::new(options, cfg.queue_capacity);
        let shared = Arc::new(Shared::default());
        let (stop_tx, stop_rx) = crossbeam_channel::bounded(1);
        let (done_tx, done_rx) = crossbeam_channel::bounded(1);
        let event_loop = EventLoopThread {
            connection,
            shared: Arc::clone(&shared),
            broker: broker.clone(),
            prefix: prefix.clone(),
            discovery_prefix: discovery_prefix.clone(),
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
            discovery_prefix,
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

    /// `<prefix>/<camera>/events`, QoS 1 (an automation should not miss
    /// an `end`), not retained. Never blocks; dropped and counted when the
    /// broker is unreachable or the queue is full.
    pub fn publish_event(&self, camera: &str, event_json: &str) {
        let topic = events_topic(&self.prefix, camera);
        self.try_send(
            topic,
            QoS::AtLeastOnce,
            false,
            event_json.as_bytes().to_vec(),
        );
    }

    /// Announces `camera` (with the model's `labels`) to Home Assistant
    /// when discovery is on: its retained configs go out now if connected,
    /// and again on every reconnect; configs of this camera that are not
    /// among them (an earlier model's labels) are cleared. Never blocks.
    pub fn announce(&self, camera: &str, labels: &[String], model: &std::path::Path) {
        let Some(dp) = &self.discovery_prefix else {
            return;
        };
        let device = discovery::DeviceInfo::detect(model);
        let messages = discovery::messages(dp, &self.prefix, camera, labels, &device);
        self.shared
            .discovery
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(camera.to_string(), messages);
        // The event loop queues them (with the subscription that clears
        // stale ones) at its next event, or on connect: not through the
        // bounded request channel, where a model with many labels could
        // overflow it.
        self.shared.discovery_pending.store(true, Ordering::Release);
        tracing::info!(camera, "Home Assistant discovery under {dp}/");
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
