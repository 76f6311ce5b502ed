//! The thread that drives rumqttc's event loop: it counts what was
//! written, re-announces `online` and every current count on each
//! (re)connect, retries a lost broker with capped exponential backoff, and
//! at shutdown says goodbye (`offline`, then DISCONNECT) once nothing is
//! left to send.

use std::ops::ControlFlow;
use std::sync::atomic::Ordering;
use std::sync::{Arc, PoisonError};
use std::time::Duration;

use crossbeam_channel::Receiver;
use rumqttc::{
    Connection, ConnectionError, Disconnect, Event, Incoming, Outgoing, QoS, RecvTimeoutError,
    Request, Subscribe,
};

use super::discovery::{camera_filter, is_camera_config};
use super::state::Shared;
use super::topics::{availability_topic, count_topic, retained, OFFLINE, ONLINE};

const RECONNECT_MIN: Duration = Duration::from_millis(250);
const RECONNECT_MAX: Duration = Duration::from_secs(10);
// No event for this long while shutting down: everything queued is sent.
const GOODBYE_IDLE: Duration = Duration::from_millis(100);

/// The rumqttc event loop plus our reconnect policy.
pub(super) struct EventLoopThread {
    pub(super) connection: Connection,
    pub(super) shared: Arc<Shared>,
    pub(super) broker: String,
    pub(super) prefix: String,
    /// Home Assistant's discovery prefix; none: discovery is off.
    pub(super) discovery_prefix: Option<String>,
    /// Wakes a backoff wait at shutdown.
    pub(super) stop_rx: Receiver<()>,
}

/// What waiting for the next event gave.
enum Polled {
    Event(Result<Event, ConnectionError>),
    /// Shutting down, and no event for [`GOODBYE_IDLE`].
    Idle,
    /// Every request sender is gone, or the connection ended: nothing more
    /// to do.
    Ended,
}

/// Reconnect state, reset by every successful connection.
struct Retry {
    /// The wait before the next connection attempt.
    backoff: Duration,
    /// This outage was already logged at warn level.
    outage_logged: bool,
}

impl Default for Retry {
    fn default() -> Self {
        Retry {
            backoff: RECONNECT_MIN,
            outage_logged: false,
        }
    }
}

impl EventLoopThread {
    pub(super) fn run(mut self) {
        let mut retry = Retry::default();
        let mut goodbye_queued = false;
        loop {
            let stopping = self.shared.stopping.load(Ordering::Acquire);
            if stopping && !self.shared.connected.load(Ordering::Acquire) {
                return;
            }
            let event = match self.poll(stopping) {
                Polled::Event(event) => event,
                Polled::Idle => {
                    if !goodbye_queued {
                        self.queue_goodbye();
                        goodbye_queued = true;
                    }
                    continue;
                }
                Polled::Ended => return,
            };
            if self.handle(event, stopping, &mut retry).is_break() {
                return;
            }
            if self.shared.connected.load(Ordering::Acquire)
                && self.shared.discovery_pending.swap(false, Ordering::AcqRel)
            {
                let announce = self.discovery_requests();
                self.connection.eventloop.pending.extend(announce);
            }
        }
    }

    fn poll(&mut self, stopping: bool) -> Polled {
        if stopping {
            // Shutting down: once nothing is left to send (no event for
            // a while), say goodbye. Cancelling an idle poll is harmless;
            // at worst the broker sees a broken connection and
            // publishes the Last Will, which says `offline` too.
            match self.connection.recv_timeout(GOODBYE_IDLE) {
                Err(RecvTimeoutError::Timeout) => Polled::Idle,
                Err(RecvTimeoutError::Disconnected) => Polled::Ended,
                Ok(event) => Polled::Event(event),
            }
        } else {
            match self.connection.recv() {
                Ok(event) => Polled::Event(event),
                // Every request sender is gone: nothing more to do.
                Err(_) => Polled::Ended,
            }
        }
    }

    fn handle(
        &mut self,
        event: Result<Event, ConnectionError>,
        stopping: bool,
        retry: &mut Retry,
    ) -> ControlFlow<()> {
        match event {
            Ok(Event::Incoming(Incoming::ConnAck(_))) => {
                self.on_connected(retry.outage_logged);
                *retry = Retry::default();
            }
            Ok(Event::Outgoing(Outgoing::Publish(_))) => {
                self.shared.published.fetch_add(1, Ordering::Relaxed);
            }
            Ok(Event::Incoming(Incoming::Publish(p))) => self.on_message(&p.topic, &p.payload),
            Ok(Event::Outgoing(Outgoing::Disconnect)) if stopping => {
                self.shared.connected.store(false, Ordering::Release);
                return ControlFlow::Break(());
            }
            Ok(_) => {}
            Err(err) => return self.on_error(&err, retry),
        }
        ControlFlow::Continue(())
    }

    /// A failed connection or a lost one: log it (once per outage at warn
    /// level) and wait out the backoff, unless shutting down.
    fn on_error(&self, err: &ConnectionError, retry: &mut Retry) -> ControlFlow<()> {
        let was_connected = self.shared.connected.swap(false, Ordering::AcqRel);
        if self.shared.stopping.load(Ordering::Acquire) {
            return ControlFlow::Break(());
        }
        if was_connected {
            tracing::warn!(broker = %self.broker, "MQTT connection lost: {err}; reconnecting");
        } else if !retry.outage_logged {
            tracing::warn!(broker = %self.broker, "cannot connect to the MQTT broker: {err}; retrying with backoff");
        } else {
            tracing::debug!(broker = %self.broker, "MQTT connect failed: {err}");
        }
        retry.outage_logged = true;
        // Interrupted by shutdown, which then ends the loop.
        let _ = self.stop_rx.recv_timeout(retry.backoff);
        retry.backoff = (retry.backoff * 2).min(RECONNECT_MAX);
        ControlFlow::Continue(())
    }

    /// Every announced camera's discovery configs, then the subscriptions
    /// to its configs (to clear stale ones).
    fn discovery_requests(&self) -> Vec<Request> {
        let discovery = self
            .shared
            .discovery
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let mut requests: Vec<Request> = discovery
            .values()
            .flatten()
            .map(|m| retained(&m.topic, &m.payload))
            .collect();
        if let Some(dp) = &self.discovery_prefix {
            for camera in discovery.keys() {
                let filter = camera_filter(dp, camera);
                requests.push(Request::Subscribe(Subscribe::new(filter, QoS::AtLeastOnce)));
            }
        }
        requests
    }

    fn on_connected(&mut self, after_outage: bool) {
        // Discovery configs, `online` and every current count go ahead of
        // anything left over from the last session.
        self.shared
            .discovery_pending
            .store(false, Ordering::Release);
        let mut hello = self.discovery_requests();
        hello.push(retained(&availability_topic(&self.prefix), ONLINE));
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

    /// A retained discovery config of one of our cameras that we no longer
    /// announce (an earlier model's label) is cleared.
    fn on_message(&mut self, topic: &str, payload: &[u8]) {
        let Some(dp) = &self.discovery_prefix else {
            return;
        };
        if payload.is_empty() {
            return;
        }
        let discovery = self
            .shared
            .discovery
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let stale = discovery.iter().any(|(camera, messages)| {
            is_camera_config(dp, camera, topic) && !messages.iter().any(|m| m.topic == topic)
        });
        drop(discovery);
        if stale {
            tracing::info!(
                topic,
                "clearing a Home Assistant config this daemon no longer announces"
            );
            self.connection
                .eventloop
                .pending
                .push_back(retained(topic, ""));
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
