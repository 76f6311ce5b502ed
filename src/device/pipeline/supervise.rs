//! The calling thread's part of a run: while the stages work it forwards a
//! stop signal to them and reports status to systemd; once publish has
//! ended it stops and joins the other stages and closes the outputs.

use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::{Duration, Instant};

use anyhow::{anyhow, Result};

use super::publish_stage::PublishThread;
use super::{Outputs, Worker};
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
) {
    let mut status = Notifier::new();
    let mut signalled = false;
    while !publish.is_finished() {
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
