//! The calling thread's part of a run: while the stages work it forwards a
//! stop signal to them and reports status to systemd; once publish has
//! ended it stops and joins the other stages and closes the outputs.

use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::{Duration, Instant};

use anyhow::{anyhow, Result};

use crossbeam_channel::{Receiver, Sender};

use super::publish_stage::PublishThread;
use super::{Outputs, OutputsUpdate, PostprocessSettings, Reload, Worker};
use crate::device::config::Config;
use crate::device::infer::ModelInfo;
use crate::device::metrics::Metrics;
use crate::device::service::Notifier;

/// Waits for the publish stage to end. The first `stop_signal` (SIGTERM,
/// SIGINT) sets the pipeline's `stop` so the stages drain; meanwhile the
/// systemd status line shows the counters every 5 s.
pub(super) fn until_published(
    publish: &PublishThread,
    stop_signal: &AtomicBool,
    stop: &AtomicBool,
    metrics: &Metrics,
    started: Instant,
    mut reload: Option<&mut Reloading>,
) {
    let mut status = Notifier::new();
    let mut signalled = false;
    while !publish.is_finished() {
        if let Some(r) = reload.as_deref_mut() {
            if r.reload.requested.swap(false, Relaxed) && !signalled {
                r.apply();
            }
        }
        if !signalled && stop_signal.load(Relaxed) {
            signalled = true;
            tracing::info!("signal received: draining the pipeline");
            status.stopping();
            stop.store(true, Relaxed);
        }
        if metrics.any_frame() {
            status.status(
                &status_line(metrics, started),
                Duration::from_secs(5),
                false,
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A reload request's handling: the running configuration and where its
/// successor's settings go.
pub(super) struct Reloading {
    pub reload: Reload,
    pub current: Config,
    pub info: ModelInfo,
    pub to_postprocess: Sender<PostprocessSettings>,
    pub to_publish: Sender<OutputsUpdate>,
    /// The same channels' other ends, to drop an update not taken yet.
    pub pending_postprocess: Receiver<PostprocessSettings>,
    pub pending_publish: Receiver<OutputsUpdate>,
}

impl Reloading {
    /// Re-reads the configuration and hands its settings to the stages;
    /// a bad one is logged and the running one kept.
    fn apply(&mut self) {
        tracing::info!("SIGHUP: reloading the configuration");
        let (new, postprocess, outputs) = match self.prepare() {
            Ok(ready) => ready,
            Err(e) => {
                tracing::error!("reload refused, the running configuration is kept: {e:#}");
                return;
            }
        };
        let cold = needs_restart(&self.current, &new);
        if !cold.is_empty() {
            tracing::warn!(
                "reload: {} changed; that needs a restart (systemctl restart), the running one is kept",
                cold.join(", ")
            );
        }
        // the stages take them before their next frame; an update they
        // have not taken yet is replaced
        while self.pending_postprocess.try_recv().is_ok() {}
        while self.pending_publish.try_recv().is_ok() {}
        let _ = self.to_postprocess.try_send(postprocess);
        let _ = self.to_publish.try_send(outputs);
        self.current = new;
        tracing::info!("reloaded: thresholds, zones, tracking, events and outputs applied");
    }

    /// The new configuration with its postprocess settings and outputs,
    /// or why it cannot run.
    fn prepare(&mut self) -> Result<(Config, PostprocessSettings, OutputsUpdate)> {
        let new = (self.reload.load)()?;
        let postprocess = PostprocessSettings::new(&new, &self.info)?;
        let outputs = (self.reload.open)(&self.current, &new)?;
        Ok((new, postprocess, outputs))
    }
}

/// The sections of `new` that differ from `old` and need a restart.
fn needs_restart(old: &Config, new: &Config) -> Vec<&'static str> {
    let changed = |a: String, b: String| a != b;
    let mut v = Vec::new();
    if changed(format!("{:?}", old.source), format!("{:?}", new.source)) {
        v.push("[source]");
    }
    if changed(format!("{:?}", old.model), format!("{:?}", new.model)) {
        v.push("[model]");
    }
    if old.camera.name != new.camera.name {
        v.push("camera.name");
    }
    if changed(format!("{:?}", old.http), format!("{:?}", new.http))
        || old.http.token != new.http.token
    {
        v.push("[http]");
    }
    if changed(format!("{:?}", old.pipeline), format!("{:?}", new.pipeline))
        || changed(
            format!("{:?}", old.reconnect),
            format!("{:?}", new.reconnect),
        )
    {
        v.push("[pipeline]/[reconnect]");
    }
    v
}

/// Joins the publish stage, then stops and joins the others (a panic there
/// is logged); returns publish's result and the outputs it hands back.
pub(super) fn join_stages(
    publish: PublishThread,
    workers: Vec<Worker>,
    stop: &AtomicBool,
) -> Result<(Result<()>, Outputs)> {
    let (result, outputs) = publish
        .join()
        .map_err(|_| anyhow!("the publish stage panicked"))?;
    // The publish stage ended (max_frames or upstream closed): stop the rest.
    stop.store(true, Relaxed);
    for (name, h) in workers {
        if h.join().is_err() {
            tracing::error!("the {name} stage panicked");
        }
    }
    Ok((result, outputs))
}

/// Ends the outputs: MQTT says `offline` and disconnects.
pub(super) fn finish_outputs(outputs: Outputs) {
    #[cfg(feature = "mqtt")]
    if let Some(mqtt) = outputs.mqtt {
        mqtt.shutdown(Duration::from_secs(2));
    }
    #[cfg(not(feature = "mqtt"))]
    drop(outputs);
}

fn status_line(m: &Metrics, started: Instant) -> String {
    let frames = m.frames.load(Relaxed);
    format!(
        "{frames} frames ({:.1} fps), {} dropped, {} corrupt, {} reconnects, inference p50 {:.0} ms",
        frames as f64 / started.elapsed().as_secs_f64().max(1e-3),
        m.frames_dropped.load(Relaxed),
        m.frames_corrupt.load(Relaxed),
        m.camera_reconnects.load(Relaxed),
        m.inference.recent_percentile(50.0).unwrap_or(0.0) * 1000.0
    )
}
