//! Where detections go: JSON lines, MQTT, annotated snapshots, HTTP.

#[cfg(feature = "mqtt")]
pub mod mqtt;
