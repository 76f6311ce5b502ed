//! Life cycle under systemd: readiness, watchdog and status notifications
//! (no-ops when not started by systemd), and SIGTERM/SIGINT turned into a
//! stop flag the pipeline drains on.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use sd_notify::NotifyState;

/// Sets the returned flag on SIGTERM or SIGINT, and on SIGHUP too when
/// `hangup_stops` (a run that cannot reload: the demo). A second signal
/// while draining kills the process (signal-hook's conditional shutdown),
/// so a stuck drain can always be interrupted.
pub fn stop_flag(hangup_stops: bool) -> Result<Arc<AtomicBool>> {
    let stop = Arc::new(AtomicBool::new(false));
    let mut signals = vec![signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT];
    if hangup_stops {
        signals.push(signal_hook::consts::SIGHUP);
    }
    for sig in signals {
        signal_hook::flag::register_conditional_shutdown(sig, 1, stop.clone())
            .context("installing signal handlers")?;
        signal_hook::flag::register(sig, stop.clone()).context("installing signal handlers")?;
    }
    Ok(stop)
}

/// Sets the returned flag on SIGHUP: re-read the configuration.
pub fn reload_flag() -> Result<Arc<AtomicBool>> {
    let reload = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGHUP, reload.clone())
        .context("installing the SIGHUP handler")?;
    Ok(reload)
}

/// systemd notifications, rate-limited.
pub struct Notifier {
    /// Half the watchdog interval systemd asked for (`WatchdogSec=`).
    watchdog_every: Option<Duration>,
    last_watchdog: Option<Instant>,
    last_status: Option<Instant>,
    ready: bool,
}

impl Notifier {
    pub fn new() -> Self {
        let mut usec = 0u64;
        let watchdog_every =
            sd_notify::watchdog_enabled(false, &mut usec).then(|| Duration::from_micros(usec / 2));
        Self {
            watchdog_every,
            last_watchdog: None,
            last_status: None,
            ready: false,
        }
    }

    pub fn watchdog_interval(&self) -> Option<Duration> {
        self.watchdog_every
    }

    fn notify(&self, state: &[NotifyState]) {
        // Outside systemd (no NOTIFY_SOCKET) this does nothing.
        if let Err(e) = sd_notify::notify(false, state) {
            tracing::debug!("sd_notify: {e}");
        }
    }

    /// `READY=1` (once): the model is loaded and the first frame arrived.
    pub fn ready(&mut self, status: &str) {
        if !self.ready {
            self.ready = true;
            self.notify(&[NotifyState::Ready, NotifyState::Status(status)]);
        }
    }

    /// `WATCHDOG=1`, called for each processed frame: a stalled camera or
    /// pipeline stops the pings and systemd restarts the service.
    pub fn frame_processed(&mut self) {
        if let Some(every) = self.watchdog_every {
            if self.last_watchdog.map_or(true, |t| t.elapsed() >= every) {
                self.last_watchdog = Some(Instant::now());
                self.notify(&[NotifyState::Watchdog]);
            }
        }
    }

    /// `STATUS=…`, at most every `min_gap` unless `force`.
    pub fn status(&mut self, text: &str, min_gap: Duration, force: bool) {
        if force || self.last_status.map_or(true, |t| t.elapsed() >= min_gap) {
            self.last_status = Some(Instant::now());
            self.notify(&[NotifyState::Status(text)]);
        }
    }

    pub fn stopping(&self) {
        self.notify(&[NotifyState::Stopping, NotifyState::Status("stopping")]);
    }
}

impl Default for Notifier {
    fn default() -> Self {
        Self::new()
    }
}
