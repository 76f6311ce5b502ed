//! The state the publishing side and the event-loop thread share: the
//! connection flags, the counters behind [`MqttStats`](super::MqttStats),
//! and each camera's retained counts (what is current and what was sent in
//! this connection), which a reconnect sends again, and each camera's
//! Home Assistant discovery configs.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::Mutex;

use super::discovery::DiscoveryMessage;

/// State shared by the publishing side and the event-loop thread.
#[derive(Default)]
pub(super) struct Shared {
    pub(super) connected: AtomicBool,
    pub(super) stop_requested: AtomicBool,
    pub(super) stopping: AtomicBool,
    /// At shutdown, `offline` did not fit into the request channel.
    pub(super) offline_failed: AtomicBool,
    pub(super) published: AtomicU64,
    pub(super) dropped: AtomicU64,
    /// ConnAcks so far.
    pub(super) connections: AtomicU64,
    pub(super) oversize_logged: AtomicBool,
    /// Per camera name.
    pub(super) counts: Mutex<HashMap<String, CameraCounts>>,
    /// Home Assistant discovery configs per camera name (sent on every
    /// connect; configs of these cameras not among them are cleared).
    pub(super) discovery: Mutex<BTreeMap<String, Vec<DiscoveryMessage>>>,
    /// A camera was announced since the configs were last queued.
    pub(super) discovery_pending: AtomicBool,
}

/// One camera's count topics.
#[derive(Default)]
pub(super) struct CameraCounts {
    /// The current count per label (0 for labels seen before, now absent).
    pub(super) current: BTreeMap<String, usize>,
    /// What was last enqueued per label in this connection.
    pub(super) sent: BTreeMap<String, usize>,
}
