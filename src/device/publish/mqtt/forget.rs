//! `irdistill mqtt-forget`: clears what a camera's daemon left retained on
//! the broker (its Home Assistant discovery configs and per-label counts),
//! for a camera taken out of service: Home Assistant then removes its
//! device. Retained messages are found by subscribing (the broker sends
//! them at once, flagged retained) and cleared with empty retained ones.

use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use rumqttc::{Client, Event, Incoming, Outgoing, QoS, RecvTimeoutError};

use super::discovery::camera_filter;
use super::endpoint::{redact_url, Endpoint};
use super::topics::camera_filter as state_filter;
use super::{options, MqttConfig};

/// Clears `camera`'s retained discovery configs and counts; returns the
/// topics cleared. Waits at most `wait` for the broker at each step. The
/// camera's daemon should be stopped first (it announces itself again on
/// every connect).
pub fn forget_camera(cfg: &MqttConfig, camera: &str, wait: Duration) -> Result<Vec<String>> {
    cfg.validate()?;
    let endpoint = Endpoint::parse(&cfg.url)?;
    // Its own client id (the daemon's would take over its session) and no
    // Last Will (that would mark the daemon offline).
    let opts = options::plain_options(cfg, &endpoint, "forget")?;
    let (client, mut connection) = Client::new(opts, 64);
    let mut filters = vec![state_filter(&cfg.topic_prefix, camera)];
    if cfg.discovery {
        filters.push(camera_filter(&cfg.discovery_prefix, camera));
    }
    for f in &filters {
        client.subscribe(f.as_str(), QoS::AtLeastOnce)?;
    }
    let url = redact_url(&cfg.url);
    // Retained messages come right after each SUBACK; a quiet spell after
    // the last SUBACK means there are no more.
    let mut retained = Vec::new();
    let (mut subacks, mut last) = (0, Instant::now());
    let deadline = Instant::now() + wait;
    loop {
        // a running daemon's live messages (not retained) never extend the
        // wait, and the deadline always holds
        let to_deadline = deadline.saturating_duration_since(Instant::now());
        let quiet = if subacks == filters.len() {
            Duration::from_millis(300)
                .saturating_sub(last.elapsed())
                .min(to_deadline)
        } else {
            to_deadline
        };
        match connection.recv_timeout(quiet) {
            Ok(Ok(Event::Incoming(Incoming::SubAck(_)))) => {
                subacks += 1;
                last = Instant::now();
            }
            Ok(Ok(Event::Incoming(Incoming::Publish(p)))) => {
                if p.retain && !p.payload.is_empty() && !retained.contains(&p.topic) {
                    retained.push(p.topic.clone());
                    last = Instant::now();
                }
            }
            Ok(Ok(_)) => {}
            Ok(Err(e)) => bail!("MQTT broker {url}: {e}"),
            Err(RecvTimeoutError::Timeout) if subacks == filters.len() => break,
            Err(RecvTimeoutError::Timeout) => bail!("MQTT broker {url}: no answer within {wait:?}"),
            Err(RecvTimeoutError::Disconnected) => bail!("MQTT broker {url}: connection closed"),
        }
    }
    for topic in &retained {
        client.publish(topic.as_str(), QoS::AtLeastOnce, true, Vec::new())?;
    }
    // every clearing message acknowledged, then a clean goodbye
    let mut acked = 0;
    while acked < retained.len() {
        match connection.recv_timeout(deadline.saturating_duration_since(Instant::now()) + wait) {
            Ok(Ok(Event::Incoming(Incoming::PubAck(_)))) => acked += 1,
            Ok(Ok(_)) => {}
            Ok(Err(e)) => bail!(
                "MQTT broker {url}: {e} ({acked} of {} cleared)",
                retained.len()
            ),
            Err(_) => bail!(
                "MQTT broker {url}: {acked} of {} clearing messages acknowledged",
                retained.len()
            ),
        }
    }
    client.disconnect()?;
    while let Ok(Ok(e)) = connection.recv_timeout(Duration::from_millis(500)) {
        if matches!(e, Event::Outgoing(Outgoing::Disconnect)) {
            break;
        }
    }
    Ok(retained)
}
