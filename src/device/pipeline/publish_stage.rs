//! The publish stage: the last one, on its own thread. Each frame's
//! detections become one [`FrameMessage`] that fans out to the configured
//! outputs (JSON lines, MQTT detections and per-label counts, annotated
//! snapshots on disk and for HTTP `/snapshot.jpg`, the caller's observer),
//! then the frame counts as done (latency, systemd readiness and watchdog).
//! Its end (`pipeline.max_frames` reached, upstream closed) ends the run.

#[cfg(feature = "mqtt")]
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::thread::JoinHandle;
#[cfg(feature = "mqtt")]
use std::time::{Duration, Instant};

use anyhow::Result;
use crossbeam_channel::Receiver;

use super::jobs::Job;
use super::{FrameEvent, Outputs, OutputsUpdate, StageContext};
use crate::device::capture::Frame;
use crate::device::convert::Converter;
use crate::device::events::{EventTracker, ObjectEvent};
use crate::device::infer::ModelInfo;
use crate::device::metrics::Metrics;
use crate::device::postprocess::Zone;
use crate::device::publish::jsonl::JsonlWriter;
use crate::device::publish::snapshot::{annotate, annotate_zones, encode_jpeg};
use crate::device::publish::{rfc3339_utc, DetectionJson, FrameMessage};
use crate::device::service::Notifier;
use crate::shared::bbox::Detection;

/// The publish thread; it hands the outputs back when it ends so the caller
/// can close them.
pub(super) type PublishThread = JoinHandle<(Result<()>, Outputs)>;

/// Starts the publish thread: frames from `input` go to `outputs` until
/// `max_frames` (0 = no limit) are published or `input` closes.
pub(super) fn spawn(
    input: Receiver<Box<Job>>,
    mut outputs: Outputs,
    reloaded: Receiver<OutputsUpdate>,
    info: &ModelInfo,
    max_frames: u64,
    ctx: StageContext,
) -> std::io::Result<PublishThread> {
    let info = info.clone();
    std::thread::Builder::new()
        .name("publish".into())
        .spawn(move || {
            let result = publish_stage(&input, &mut outputs, &reloaded, &info, max_frames, &ctx);
            (result, outputs)
        })
}

/// Swaps in a reloaded configuration's outputs; the events of objects in
/// view carry on.
fn apply_update(outputs: &mut Outputs, u: OutputsUpdate, info: &ModelInfo) {
    outputs.jsonl = u.jsonl;
    outputs.events_jsonl = u.events_jsonl;
    outputs.snapshots = u.snapshots;
    outputs.snapshot_quality = u.snapshot_quality;
    outputs.zones = u.zones.clone();
    outputs.events = match (outputs.events.take(), u.events) {
        (Some(mut t), Some(cfg)) => {
            t.reconfigure(cfg, u.zones);
            Some(t)
        }
        (None, Some(cfg)) => Some(EventTracker::new(cfg, &outputs.camera, u.zones)),
        (_, None) => None,
    };
    #[cfg(feature = "mqtt")]
    if let Some(mqtt) = u.mqtt {
        if let Some(old) = std::mem::replace(&mut outputs.mqtt, mqtt) {
            old.shutdown(std::time::Duration::from_secs(2));
        }
        if let Some(new) = outputs.mqtt.as_ref() {
            new.announce(&outputs.camera, &info.names, &info.path);
        }
    }
    #[cfg(not(feature = "mqtt"))]
    let _ = info;
}

/// What the publish stage remembers between frames.
struct PublishState {
    notifier: Notifier,
    /// For snapshots only: decodes a frame to RGB at its own size.
    converter: Converter,
    /// A JSON lines write error was logged (later ones are not).
    jsonl_failed: bool,
    #[cfg(feature = "mqtt")]
    mqtt: MqttState,
}

/// What MQTT publishing remembers between frames.
#[cfg(feature = "mqtt")]
struct MqttState {
    /// The per-label counts last published (they go out on change only).
    last_counts: Option<BTreeMap<String, usize>>,
    /// When the publisher's statistics were last copied into the metrics.
    last_stats: Instant,
}

fn publish_stage(
    input: &Receiver<Box<Job>>,
    outputs: &mut Outputs,
    reloaded: &Receiver<OutputsUpdate>,
    info: &ModelInfo,
    max_frames: u64,
    ctx: &StageContext,
) -> Result<()> {
    let (pools, metrics) = (&ctx.pools, &*ctx.metrics);
    let mut state = PublishState {
        notifier: Notifier::new(),
        converter: Converter::new(),
        jsonl_failed: false,
        #[cfg(feature = "mqtt")]
        mqtt: MqttState {
            last_counts: None,
            last_stats: Instant::now(),
        },
    };
    #[cfg(feature = "mqtt")]
    if let Some(mqtt) = outputs.mqtt.as_ref() {
        mqtt.announce(&outputs.camera, &info.names, &info.path);
    }
    for job in input.iter() {
        if let Ok(update) = reloaded.try_recv() {
            apply_update(outputs, update, info);
        }
        if max_frames > 0 && metrics.frames.load(Relaxed) >= max_frames {
            // Frames captured before the stop was seen: not published.
            pools.recycle(job);
            continue;
        }
        publish_frame(&job, outputs, info, &mut state, ctx)?;
        pools.recycle(job);
        if max_frames > 0 && metrics.frames.load(Relaxed) >= max_frames {
            ctx.stop.store(true, Relaxed);
        }
    }
    // The objects still in view end with the run.
    if let Some(tracker) = outputs.events.as_mut() {
        let ended = tracker.finish();
        send_events(outputs, &ended, &mut state.jsonl_failed, &ctx.stop);
    }
    Ok(())
}

/// Sends one frame's detections to every output and marks the frame done.
fn publish_frame(
    job: &Job,
    outputs: &mut Outputs,
    info: &ModelInfo,
    state: &mut PublishState,
    ctx: &StageContext,
) -> Result<()> {
    let metrics = &*ctx.metrics;
    let message = frame_message(job, &outputs.camera, info);
    count_detections(&job.detections, metrics);
    let json = serde_json::to_string(&message)?;
    write_line(
        &mut outputs.jsonl,
        &json,
        &mut state.jsonl_failed,
        &ctx.stop,
    );
    #[cfg(feature = "mqtt")]
    publish_mqtt(outputs, &json, &message, info, metrics, &mut state.mqtt);
    let snapshot_path = take_snapshot(outputs, &mut state.converter, &job.frame, &message, metrics);
    let events = match outputs.events.as_mut() {
        Some(t) => t.observe(&message, job.frame.captured_at, snapshot_path.as_deref()),
        None => Vec::new(),
    };
    send_events(outputs, &events, &mut state.jsonl_failed, &ctx.stop);
    if let Some(observe) = outputs.observer.as_mut() {
        observe(&FrameEvent {
            message: &message,
            snapshot: snapshot_path.as_deref(),
            events: &events,
        });
    }
    metrics.latency.observe(job.captured.elapsed());
    metrics.frame_done();
    state.notifier.ready(&format!(
        "running: model {} ({}x{}), first frame processed",
        info.path.display(),
        info.input_w_px,
        info.input_h_px
    ));
    state.notifier.frame_processed();
    Ok(())
}

/// The published form of a job: its detections with labels and track IDs.
fn frame_message(job: &Job, camera: &str, info: &ModelInfo) -> FrameMessage {
    let detections: Vec<DetectionJson> = job
        .detections
        .iter()
        .enumerate()
        .map(|(i, d)| {
            let mut j = DetectionJson::new(d.class_id, info.label(d.class_id), d.score, &d.bbox);
            j.track_id = Some(job.track_ids.get(i).copied().flatten());
            j
        })
        .collect();
    FrameMessage {
        camera: camera.to_string(),
        frame: job.frame.sequence,
        timestamp: rfc3339_utc(job.frame.captured_at),
        width: job.src_w_px,
        height: job.src_h_px,
        detections,
    }
}

/// Object events to the JSON lines output (lines with a `type`), HTTP
/// `/events` and MQTT `<prefix>/<camera>/events`.
fn send_events(
    outputs: &mut Outputs,
    events: &[ObjectEvent],
    jsonl_failed: &mut bool,
    stop: &AtomicBool,
) {
    for e in events {
        let json = match serde_json::to_string(e) {
            Ok(j) => j,
            Err(err) => {
                tracing::warn!("event of track {}: {err}", e.track_id);
                continue;
            }
        };
        tracing::debug!(target: "irdistill::events", "{json}");
        let target = if outputs.events_jsonl.is_some() {
            &mut outputs.events_jsonl
        } else {
            &mut outputs.jsonl
        };
        write_line(target, &json, jsonl_failed, stop);
        if let Some(h) = outputs.http.as_ref() {
            h.push_event(&json);
        }
        #[cfg(feature = "mqtt")]
        if let Some(mqtt) = outputs.mqtt.as_ref() {
            mqtt.publish_event(&outputs.camera, &json);
        }
    }
}

/// Adds a frame's detections to the per-class counters.
fn count_detections(detections: &[Detection], metrics: &Metrics) {
    for d in detections {
        if let Some(c) = metrics.detections.get(d.class_id) {
            c.fetch_add(1, Relaxed);
        }
    }
}

/// Appends `json` to a JSON lines output. A reader that closed the pipe
/// (`| head`) stops the pipeline and drops the writer; other errors are
/// logged once.
fn write_line(
    writer: &mut Option<JsonlWriter>,
    json: &str,
    jsonl_failed: &mut bool,
    stop: &AtomicBool,
) {
    let Some(w) = writer.as_mut() else {
        return;
    };
    let Err(e) = w.write_line(json) else {
        return;
    };
    let broken_pipe = e
        .root_cause()
        .downcast_ref::<std::io::Error>()
        .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe);
    if broken_pipe {
        // The reader went away (`| head`): nothing left to do.
        tracing::info!("JSON lines reader closed the pipe; stopping");
        stop.store(true, Relaxed);
        *writer = None;
    } else if !*jsonl_failed {
        *jsonl_failed = true;
        tracing::error!("{e:#} (further write errors are not logged)");
    }
}

/// Publishes the frame over MQTT, the per-label counts when they changed,
/// and copies the publisher's statistics into the metrics twice a second.
#[cfg(feature = "mqtt")]
fn publish_mqtt(
    outputs: &Outputs,
    json: &str,
    message: &FrameMessage,
    info: &ModelInfo,
    metrics: &Metrics,
    state: &mut MqttState,
) {
    let Some(mqtt) = outputs.mqtt.as_ref() else {
        return;
    };
    mqtt.publish_detections(&outputs.camera, json);
    let mut counts: BTreeMap<String, usize> = info.names.iter().map(|n| (n.clone(), 0)).collect();
    for d in &message.detections {
        *counts.entry(d.label.clone()).or_default() += 1;
    }
    if state.last_counts.as_ref() != Some(&counts) {
        mqtt.publish_counts(&outputs.camera, &counts);
        state.last_counts = Some(counts);
    }
    if state.last_stats.elapsed() >= Duration::from_millis(500) {
        state.last_stats = Instant::now();
        let s = mqtt.stats();
        metrics.set_mqtt(s.published, s.dropped, u64::from(s.connected), s.reconnects);
    }
}

/// Makes an annotated snapshot when HTTP asked for one or one is due on
/// disk (frames with detections only); hands it to HTTP and returns the
/// file it was saved to, if any.
fn take_snapshot(
    outputs: &mut Outputs,
    converter: &mut Converter,
    frame: &Frame,
    message: &FrameMessage,
    metrics: &Metrics,
) -> Option<PathBuf> {
    let http_wants = outputs
        .http
        .as_ref()
        .is_some_and(|h| h.snapshot_wanted.load(Relaxed));
    let disk_wants = !message.detections.is_empty()
        && outputs
            .snapshots
            .as_ref()
            .is_some_and(|s| s.due(message.frame));
    if !(http_wants || disk_wants) {
        return None;
    }
    let jpeg = match snapshot_jpeg(
        converter,
        frame,
        &message.detections,
        &outputs.zones,
        outputs.snapshot_quality,
    ) {
        Ok(jpeg) => jpeg,
        Err(e) => {
            tracing::warn!("snapshot of frame {}: {e:#}", message.frame);
            return None;
        }
    };
    let snapshot_path = if disk_wants {
        save_snapshot(outputs, &jpeg, message, metrics)
    } else {
        None
    };
    if let Some(h) = outputs.http.as_ref() {
        h.set_snapshot(Arc::new(jpeg));
    }
    snapshot_path
}

/// Writes the snapshot to the snapshot folder (counted); a failure is
/// logged and the run goes on.
fn save_snapshot(
    outputs: &mut Outputs,
    jpeg: &[u8],
    message: &FrameMessage,
    metrics: &Metrics,
) -> Option<PathBuf> {
    let w = outputs.snapshots.as_mut().expect("checked by the caller");
    match w.save(jpeg, &message.timestamp, &outputs.camera, message.frame) {
        Ok(path) => {
            metrics.snapshots.fetch_add(1, Relaxed);
            tracing::debug!("snapshot {}", path.display());
            Some(path)
        }
        Err(e) => {
            tracing::warn!("{e:#}");
            None
        }
    }
}

/// The frame with its detections drawn, as a JPEG.
fn snapshot_jpeg(
    converter: &mut Converter,
    frame: &Frame,
    detections: &[DetectionJson],
    zones: &[Zone],
    quality: u8,
) -> Result<Vec<u8>> {
    let mut img = converter.to_rgb_image(frame)?;
    annotate_zones(&mut img, zones);
    annotate(&mut img, detections);
    encode_jpeg(&img, quality)
}
