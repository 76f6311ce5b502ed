//! Where detections go: JSON lines ([`jsonl`]), MQTT ([`mqtt`]), annotated
//! JPEG snapshots ([`snapshot`]) and the HTTP endpoints ([`http`]). The
//! per-frame message ([`message`]) is the same JSON everywhere.

pub mod http;
pub mod jsonl;
pub mod message;
#[cfg(feature = "mqtt")]
pub mod mqtt;
pub mod snapshot;

pub use message::{rfc3339_utc, DetectionJson, FrameMessage};
