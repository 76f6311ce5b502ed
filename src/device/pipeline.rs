//! The daemon's data path, one thread per stage joined by bounded
//! channels:
//!
//! ```text
//! capture ──▶ convert + letterbox ──▶ inference ──▶ postprocess + track ──▶ publish
//!  Frame        Frame → [3,H,W] f32     [1,4+nc,N]     Detection + track ID    JSONL/MQTT/
//!                                                                               snapshots/HTTP
//! ```
//!
//! Frames and input tensors come from fixed pools and go back to them after
//! use, so memory does not grow with load. A live source (camera) does not
//! wait for the pipeline: when a queue is full the oldest frame in it is
//! dropped and counted, so results stay fresh. A non-live source (a folder
//! read as fast as possible) waits instead, and every frame is processed.
//! The capture stage also owns the camera's life cycle: a lost camera is
//! reopened with capped exponential backoff, each state change is logged
//! once, and reconnects are counted.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Result};
use crossbeam_channel::{bounded, Receiver, RecvTimeoutError, Sender, TrySendError};

use crate::device::capture::{sleep_unless, CaptureError, Frame, Opener};
use crate::device::config::Config;
use crate::device::convert::{Converter, CorruptFrame};
use crate::device::infer::{Detector, ModelInfo};
use crate::device::metrics::Metrics;
use crate::device::postprocess::{frame_detections, DetectFilter};
use crate::device::publish::http::HttpState;
use crate::device::publish::jsonl::JsonlWriter;
use crate::device::publish::snapshot::{annotate, encode_jpeg, SnapshotWriter};
use crate::device::publish::{rfc3339_utc, DetectionJson, FrameMessage};
use crate::device::service::Notifier;
use crate::device::track::Tracker;
use crate::shared::bbox::Detection;
use crate::shared::letterbox::Letterbox;
use crate::shared::nms::NmsParams;

/// One frame on its way through the stages.
struct Job {
    frame: Frame,
    /// `[3, H, W]` model input; taken from the tensor pool by convert,
    /// returned by inference (empty otherwise).
    tensor: Vec<f32>,
    letterbox: Option<Letterbox>,
    src_w_px: u32,
    src_h_px: u32,
    /// `[4 + nc, N]` model output.
    output: Vec<f32>,
    detections: Vec<Detection>,
    track_ids: Vec<Option<u64>>,
    captured: Instant,
}

impl Job {
    fn new() -> Self {
        Self {
            frame: Frame::empty(),
            tensor: Vec::new(),
            letterbox: None,
            src_w_px: 0,
            src_h_px: 0,
            output: Vec::new(),
            detections: Vec::new(),
            track_ids: Vec::new(),
            captured: Instant::now(),
        }
    }
}

/// Returns jobs (and their tensors) to the pools.
#[derive(Clone)]
struct Pools {
    jobs: Sender<Box<Job>>,
    tensors: Sender<Vec<f32>>,
}

impl Pools {
    fn recycle(&self, mut job: Box<Job>) {
        if !job.tensor.is_empty() {
            let _ = self.tensors.send(std::mem::take(&mut job.tensor));
        }
        // The pool channel holds every job, so this never blocks.
        let _ = self.jobs.send(job);
    }
}

/// A stage's output queue. With `drop_oldest`, a full queue loses its
/// oldest job (counted) instead of blocking the sender.
struct Queue {
    tx: Sender<Box<Job>>,
    rx: Receiver<Box<Job>>,
    drop_oldest: bool,
}

impl Queue {
    fn send(&self, mut job: Box<Job>, pools: &Pools, metrics: &Metrics) -> bool {
        if !self.drop_oldest {
            return self.tx.send(job).is_ok();
        }
        loop {
            match self.tx.try_send(job) {
                Ok(()) => return true,
                Err(TrySendError::Disconnected(_)) => return false,
                Err(TrySendError::Full(back)) => {
                    job = back;
                    // The consumer may have taken it meanwhile: then retry.
                    if let Ok(old) = self.rx.try_recv() {
                        metrics.frames_dropped.fetch_add(1, Relaxed);
                        pools.recycle(old);
                    }
                }
            }
        }
    }
}

/// One published frame, as an [`Outputs::observer`] sees it.
pub struct FrameEvent<'a> {
    pub message: &'a FrameMessage,
    /// The snapshot written for this frame, if any.
    pub snapshot: Option<&'a std::path::Path>,
}

/// Called by the publish stage for every published frame (summaries,
/// console output). It runs on the publish thread: keep it short.
pub type Observer = Box<dyn FnMut(&FrameEvent) + Send>;

/// Where results go (all optional).
pub struct Outputs {
    pub camera: String,
    pub jsonl: Option<JsonlWriter>,
    #[cfg(feature = "mqtt")]
    pub mqtt: Option<crate::device::publish::mqtt::MqttPublisher>,
    pub snapshots: Option<SnapshotWriter>,
    pub snapshot_quality: u8,
    pub http: Option<Arc<HttpState>>,
    pub observer: Option<Observer>,
}

/// What a run did.
#[derive(Debug, Clone, Default)]
pub struct RunSummary {
    pub frames: u64,
    pub frames_captured: u64,
    pub frames_dropped: u64,
    pub frames_corrupt: u64,
    pub capture_timeouts: u64,
    pub camera_reconnects: u64,
    pub elapsed: Duration,
}

/// Per-stage settings taken from the config.
struct StageSettings {
    nms: NmsParams,
    filter: DetectFilter,
    tracker: Option<Tracker>,
    reconnect_initial: Duration,
    reconnect_max: Duration,
    timeout: Duration,
    max_frames: u64,
}

/// The detection filter for `cfg` and a model's class names; per-class
/// thresholds must name known labels.
pub fn detect_filter(cfg: &Config, info: &ModelInfo) -> Result<DetectFilter> {
    let mut class_conf = Vec::new();
    for (label, t) in &cfg.detect.class_conf {
        let id = info.names.iter().position(|n| n == label).ok_or_else(|| {
            anyhow!(
                "detect.class_conf.{label}: the model has no class {label:?} (it has {})",
                info.names.join(", ")
            )
        })?;
        class_conf.push((id, *t));
    }
    Ok(DetectFilter {
        class_conf,
        min_area_px: cfg.detect.min_area_px,
        max_area_px: cfg.detect.max_area_px,
        zones: cfg.zones(),
    })
}

/// Runs the pipeline until the source ends, `stop` is set (signals) or
/// `pipeline.max_frames` frames are processed; drains the frames in flight
/// and returns. `metrics` must have been made for the model's labels.
pub fn run(
    cfg: &Config,
    mut opener: Box<dyn Opener>,
    detector: Detector,
    mut outputs: Outputs,
    metrics: Arc<Metrics>,
    stop_signal: Arc<AtomicBool>,
) -> Result<RunSummary> {
    let started = Instant::now();
    let info = detector.info().clone();
    let settings = StageSettings {
        nms: NmsParams {
            conf: cfg.detect.conf,
            iou: cfg.detect.iou,
            max_det: cfg.detect.max_det,
            multi_label: false,
        },
        filter: detect_filter(cfg, &info)?,
        tracker: cfg.track.enabled.then(|| Tracker::new(cfg.track.tracker())),
        reconnect_initial: Duration::from_millis(cfg.reconnect.initial_ms),
        reconnect_max: Duration::from_millis(cfg.reconnect.max_ms),
        timeout: Duration::from_millis(cfg.source.timeout_ms),
        max_frames: cfg.pipeline.max_frames,
    };
    let live = opener.live();
    let q = cfg.pipeline.queue_frames;
    // Pools: every job and tensor exists from the start, none is made later.
    let jobs_total = 4 * q + 5;
    let tensors_total = q + 2;
    let (job_tx, job_rx) = bounded::<Box<Job>>(jobs_total);
    let (tensor_tx, tensor_rx) = bounded::<Vec<f32>>(tensors_total);
    for _ in 0..jobs_total {
        job_tx.send(Box::new(Job::new())).expect("pool has room");
    }
    for _ in 0..tensors_total {
        tensor_tx
            .send(vec![0.0; info.input_len()])
            .expect("pool has room");
    }
    let pools = Pools {
        jobs: job_tx,
        tensors: tensor_tx,
    };
    let queue = |drop_oldest: bool| {
        let (tx, rx) = bounded::<Box<Job>>(q);
        Queue {
            tx,
            rx,
            drop_oldest,
        }
    };
    let to_convert = queue(live);
    let to_infer = queue(live);
    let to_post = queue(false);
    let to_publish = queue(false);
    // The pipeline's own stop (max_frames, end of stream), distinct from the
    // signal flag so a signal during the drain still forces an exit.
    let stop = Arc::new(AtomicBool::new(false));

    let mut handles: Vec<(&str, JoinHandle<()>)> = Vec::new();
    let spawn = |name: &'static str, f: Box<dyn FnOnce() + Send>| {
        std::thread::Builder::new()
            .name(name.into())
            .spawn(f)
            .map(|h| (name, h))
    };
    let from_capture = to_convert.rx.clone();
    let from_convert = to_infer.rx.clone();
    let from_infer = to_post.rx.clone();
    let from_post = to_publish.rx.clone();
    {
        let (pools, metrics, stop) = (pools.clone(), metrics.clone(), stop.clone());
        let backoff = (settings.reconnect_initial, settings.reconnect_max);
        let timeout = settings.timeout;
        handles.push(spawn(
            "capture",
            Box::new(move || {
                capture_stage(
                    opener.as_mut(),
                    &job_rx,
                    &to_convert,
                    &pools,
                    &metrics,
                    &stop,
                    backoff,
                    timeout,
                )
            }),
        )?);
    }
    {
        let (pools, metrics) = (pools.clone(), metrics.clone());
        let (w, h) = (info.input_w_px, info.input_h_px);
        handles.push(spawn(
            "convert",
            Box::new(move || {
                convert_stage(&from_capture, &to_infer, &tensor_rx, w, h, &pools, &metrics)
            }),
        )?);
    }
    {
        let (pools, metrics) = (pools.clone(), metrics.clone());
        let mut detector = detector;
        handles.push(spawn(
            "inference",
            Box::new(move || {
                inference_stage(&from_convert, &to_post, &mut detector, &pools, &metrics)
            }),
        )?);
    }
    {
        let (pools, metrics) = (pools.clone(), metrics.clone());
        let nc = info.nc();
        let (nms, filter, tracker) = (settings.nms, settings.filter, settings.tracker);
        handles.push(spawn(
            "postprocess",
            Box::new(move || {
                postprocess_stage(
                    &from_infer,
                    &to_publish,
                    nc,
                    &nms,
                    &filter,
                    tracker,
                    &pools,
                    &metrics,
                )
            }),
        )?);
    }
    let publish = {
        let (pools, metrics, stop) = (pools.clone(), metrics.clone(), stop.clone());
        let info = info.clone();
        let max_frames = settings.max_frames;
        std::thread::Builder::new()
            .name("publish".into())
            .spawn(move || {
                let result = publish_stage(
                    &from_post,
                    &mut outputs,
                    &info,
                    max_frames,
                    &pools,
                    &metrics,
                    &stop,
                );
                (result, outputs)
            })?
    };
    drop(pools);

    // Supervise: forward signals, report status, until every stage is done.
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
                &status_line(&metrics, started),
                Duration::from_secs(5),
                false,
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let (result, outputs) = publish
        .join()
        .map_err(|_| anyhow!("the publish stage panicked"))?;
    // The publish stage ended (max_frames or upstream closed): stop the rest.
    stop.store(true, Relaxed);
    for (name, h) in handles {
        if h.join().is_err() {
            tracing::error!("the {name} stage panicked");
        }
    }
    finish_outputs(outputs);
    result?;
    Ok(RunSummary {
        frames: metrics.frames.load(Relaxed),
        frames_captured: metrics.frames_captured.load(Relaxed),
        frames_dropped: metrics.frames_dropped.load(Relaxed),
        frames_corrupt: metrics.frames_corrupt.load(Relaxed),
        capture_timeouts: metrics.capture_timeouts.load(Relaxed),
        camera_reconnects: metrics.camera_reconnects.load(Relaxed),
        elapsed: started.elapsed(),
    })
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

/// Ends the outputs: MQTT says `offline` and disconnects.
fn finish_outputs(outputs: Outputs) {
    #[cfg(feature = "mqtt")]
    if let Some(mqtt) = outputs.mqtt {
        mqtt.shutdown(Duration::from_secs(2));
    }
    #[cfg(not(feature = "mqtt"))]
    drop(outputs);
}

/// Takes a free job, waiting while all are in flight; `None` on stop.
fn free_job(pool: &Receiver<Box<Job>>, stop: &AtomicBool) -> Option<Box<Job>> {
    loop {
        if stop.load(Relaxed) {
            return None;
        }
        match pool.recv_timeout(Duration::from_millis(50)) {
            Ok(job) => return Some(job),
            Err(RecvTimeoutError::Timeout) => continue,
            Err(RecvTimeoutError::Disconnected) => return None,
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn capture_stage(
    opener: &mut dyn Opener,
    pool: &Receiver<Box<Job>>,
    out: &Queue,
    pools: &Pools,
    metrics: &Metrics,
    stop: &AtomicBool,
    (backoff_initial, backoff_max): (Duration, Duration),
    timeout: Duration,
) {
    let name = opener.name();
    let mut backoff = backoff_initial;
    let mut ever_open = false;
    let mut lost = false;
    let mut unavailable_logged = false;
    'open: while !stop.load(Relaxed) {
        let mut source = match opener.open() {
            Ok(s) => s,
            Err(e) => {
                metrics.camera_connected.store(0, Relaxed);
                if !unavailable_logged {
                    unavailable_logged = true;
                    tracing::warn!(
                        "camera {name}: unavailable: {e:#}; retrying with backoff ({} ms doubling up to {} ms)",
                        backoff_initial.as_millis(),
                        backoff_max.as_millis()
                    );
                } else {
                    tracing::debug!("camera {name}: still unavailable: {e:#}");
                }
                if sleep_unless(stop, backoff) {
                    break;
                }
                backoff = (backoff * 2).min(backoff_max);
                continue;
            }
        };
        metrics.camera_connected.store(1, Relaxed);
        if lost {
            metrics.camera_reconnects.fetch_add(1, Relaxed);
            tracing::info!("camera {name}: reconnected: {}", source.describe());
        } else if !ever_open {
            tracing::info!("camera {name}: open: {}", source.describe());
        }
        ever_open = true;
        unavailable_logged = false;
        backoff = backoff_initial;
        let mut stalled = false;
        let mut corrupt_logged = false;
        loop {
            let Some(mut job) = free_job(pool, stop) else {
                break 'open;
            };
            match source.read_into(&mut job.frame) {
                Ok(()) => {
                    if stalled {
                        stalled = false;
                        tracing::info!("camera {name}: frames flowing again");
                    }
                    metrics.frames_captured.fetch_add(1, Relaxed);
                    job.captured = Instant::now();
                    if !out.send(job, pools, metrics) {
                        break 'open;
                    }
                }
                Err(e) => {
                    pools.recycle(job);
                    match e {
                        CaptureError::Timeout => {
                            metrics.capture_timeouts.fetch_add(1, Relaxed);
                            if !stalled {
                                stalled = true;
                                tracing::warn!(
                                    "camera {name}: stalled: no frame within {} ms",
                                    timeout.as_millis()
                                );
                            }
                        }
                        CaptureError::Corrupt(why) => {
                            metrics.frames_corrupt.fetch_add(1, Relaxed);
                            if !corrupt_logged {
                                corrupt_logged = true;
                                tracing::warn!("camera {name}: skipping corrupt frames (counted in irdistill_frames_corrupt_total): {why}");
                            } else {
                                tracing::debug!("camera {name}: corrupt frame: {why}");
                            }
                        }
                        CaptureError::Disconnected(why) => {
                            metrics.camera_connected.store(0, Relaxed);
                            lost = true;
                            tracing::warn!("camera {name}: lost: {why}; reconnecting");
                            drop(source);
                            if sleep_unless(stop, backoff) {
                                break 'open;
                            }
                            backoff = (backoff * 2).min(backoff_max);
                            continue 'open;
                        }
                        CaptureError::EndOfStream => {
                            tracing::info!("source {name}: end of stream");
                            break 'open;
                        }
                    }
                }
            }
        }
    }
    metrics.camera_connected.store(0, Relaxed);
}

fn convert_stage(
    input: &Receiver<Box<Job>>,
    out: &Queue,
    tensors: &Receiver<Vec<f32>>,
    w: u32,
    h: u32,
    pools: &Pools,
    metrics: &Metrics,
) {
    let mut converter = Converter::new();
    let mut corrupt_logged = false;
    for mut job in input.iter() {
        let Ok(tensor) = tensors.recv() else {
            pools.recycle(job);
            break;
        };
        job.tensor = tensor;
        let t0 = Instant::now();
        match converter.letterbox_frame(&job.frame, w, h, &mut job.tensor) {
            Ok(lb) => {
                metrics.convert.observe(t0.elapsed());
                (job.src_w_px, job.src_h_px) = converter.source_size();
                job.letterbox = Some(lb);
                if !out.send(job, pools, metrics) {
                    break;
                }
            }
            Err(e) => {
                if e.downcast_ref::<CorruptFrame>().is_some() {
                    metrics.frames_corrupt.fetch_add(1, Relaxed);
                } else {
                    metrics.inference_errors.fetch_add(1, Relaxed);
                }
                if !corrupt_logged {
                    corrupt_logged = true;
                    tracing::warn!("skipping unconvertible frames (counted): {e:#}");
                } else {
                    tracing::debug!("skipping frame {}: {e:#}", job.frame.sequence);
                }
                pools.recycle(job);
            }
        }
    }
}

fn inference_stage(
    input: &Receiver<Box<Job>>,
    out: &Queue,
    detector: &mut Detector,
    pools: &Pools,
    metrics: &Metrics,
) {
    let mut error_logged = false;
    for mut job in input.iter() {
        let t0 = Instant::now();
        let result = detector.run(&job.tensor, &mut job.output);
        // The tensor is copied into tract's input: back to the pool now.
        let _ = pools.tensors.send(std::mem::take(&mut job.tensor));
        match result {
            Ok(()) => {
                metrics.inference.observe(t0.elapsed());
                if !out.send(job, pools, metrics) {
                    break;
                }
            }
            Err(e) => {
                metrics.inference_errors.fetch_add(1, Relaxed);
                if !error_logged {
                    error_logged = true;
                    tracing::error!(
                        "inference failed (counted in irdistill_inference_errors_total): {e:#}"
                    );
                }
                pools.recycle(job);
            }
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn postprocess_stage(
    input: &Receiver<Box<Job>>,
    out: &Queue,
    nc: usize,
    nms: &NmsParams,
    filter: &DetectFilter,
    mut tracker: Option<Tracker>,
    pools: &Pools,
    metrics: &Metrics,
) {
    for mut job in input.iter() {
        let t0 = Instant::now();
        let lb = job.letterbox.expect("set by convert");
        job.detections = frame_detections(
            &job.output,
            nc,
            nms,
            filter,
            &lb,
            job.src_w_px,
            job.src_h_px,
        );
        job.track_ids = match tracker.as_mut() {
            Some(t) => {
                let ids = t.update(&job.detections);
                metrics.tracks_active.store(t.active() as u64, Relaxed);
                ids
            }
            None => Vec::new(),
        };
        metrics.postprocess.observe(t0.elapsed());
        if !out.send(job, pools, metrics) {
            break;
        }
    }
}

fn publish_stage(
    input: &Receiver<Box<Job>>,
    outputs: &mut Outputs,
    info: &ModelInfo,
    max_frames: u64,
    pools: &Pools,
    metrics: &Metrics,
    stop: &AtomicBool,
) -> Result<()> {
    let mut notifier = Notifier::new();
    // For snapshots only: decodes a frame to RGB at its own size.
    let mut converter = Converter::new();
    let mut last_counts: Option<BTreeMap<String, usize>> = None;
    let mut jsonl_failed = false;
    let mut last_mqtt_stats = Instant::now();
    for job in input.iter() {
        if max_frames > 0 && metrics.frames.load(Relaxed) >= max_frames {
            // Frames captured before the stop was seen: not published.
            pools.recycle(job);
            continue;
        }
        let detections: Vec<DetectionJson> = job
            .detections
            .iter()
            .enumerate()
            .map(|(i, d)| {
                let mut j =
                    DetectionJson::new(d.class_id, info.label(d.class_id), d.score, &d.bbox);
                j.track_id = Some(job.track_ids.get(i).copied().flatten());
                j
            })
            .collect();
        for d in &job.detections {
            if let Some(c) = metrics.detections.get(d.class_id) {
                c.fetch_add(1, Relaxed);
            }
        }
        let message = FrameMessage {
            camera: outputs.camera.clone(),
            frame: job.frame.sequence,
            timestamp: rfc3339_utc(job.frame.captured_at),
            width: job.src_w_px,
            height: job.src_h_px,
            detections,
        };
        let json = serde_json::to_string(&message)?;
        if let Some(w) = outputs.jsonl.as_mut() {
            if let Err(e) = w.write_line(&json) {
                let broken_pipe = e
                    .root_cause()
                    .downcast_ref::<std::io::Error>()
                    .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe);
                if broken_pipe {
                    // The reader went away (`| head`): nothing left to do.
                    tracing::info!("JSON lines reader closed the pipe; stopping");
                    stop.store(true, Relaxed);
                    outputs.jsonl = None;
                } else if !jsonl_failed {
                    jsonl_failed = true;
                    tracing::error!("{e:#} (further write errors are not logged)");
                }
            }
        }
        #[cfg(feature = "mqtt")]
        if let Some(mqtt) = outputs.mqtt.as_ref() {
            mqtt.publish_detections(&outputs.camera, &json);
            let mut counts: BTreeMap<String, usize> =
                info.names.iter().map(|n| (n.clone(), 0)).collect();
            for d in &message.detections {
                *counts.entry(d.label.clone()).or_default() += 1;
            }
            if last_counts.as_ref() != Some(&counts) {
                mqtt.publish_counts(&outputs.camera, &counts);
                last_counts = Some(counts);
            }
            if last_mqtt_stats.elapsed() >= Duration::from_millis(500) {
                last_mqtt_stats = Instant::now();
                let s = mqtt.stats();
                metrics.set_mqtt(s.published, s.dropped, u64::from(s.connected), s.reconnects);
            }
        }
        #[cfg(not(feature = "mqtt"))]
        let _ = (&mut last_counts, &mut last_mqtt_stats);
        let http_wants = outputs
            .http
            .as_ref()
            .is_some_and(|h| h.snapshot_wanted.load(Relaxed));
        let disk_wants = !message.detections.is_empty()
            && outputs
                .snapshots
                .as_ref()
                .is_some_and(|s| s.due(message.frame));
        let mut snapshot_path = None;
        if http_wants || disk_wants {
            match snapshot_jpeg(
                &mut converter,
                &job.frame,
                &message.detections,
                outputs.snapshot_quality,
            ) {
                Ok(jpeg) => {
                    if disk_wants {
                        let w = outputs.snapshots.as_mut().expect("checked above");
                        match w.save(&jpeg, &message.timestamp, &outputs.camera, message.frame) {
                            Ok(path) => {
                                metrics.snapshots.fetch_add(1, Relaxed);
                                tracing::debug!("snapshot {}", path.display());
                                snapshot_path = Some(path);
                            }
                            Err(e) => tracing::warn!("{e:#}"),
                        }
                    }
                    if let Some(h) = outputs.http.as_ref() {
                        h.set_snapshot(Arc::new(jpeg));
                    }
                }
                Err(e) => tracing::warn!("snapshot of frame {}: {e:#}", message.frame),
            }
        }
        if let Some(observe) = outputs.observer.as_mut() {
            observe(&FrameEvent {
                message: &message,
                snapshot: snapshot_path.as_deref(),
            });
        }
        metrics.latency.observe(job.captured.elapsed());
        metrics.frame_done();
        notifier.ready(&format!(
            "running: model {} ({}x{}), first frame processed",
            info.path.display(),
            info.input_w_px,
            info.input_h_px
        ));
        notifier.frame_processed();
        pools.recycle(job);
        if max_frames > 0 && metrics.frames.load(Relaxed) >= max_frames {
            stop.store(true, Relaxed);
        }
    }
    Ok(())
}

/// The frame with its detections drawn, as a JPEG.
fn snapshot_jpeg(
    converter: &mut Converter,
    frame: &Frame,
    detections: &[DetectionJson],
    quality: u8,
) -> Result<Vec<u8>> {
    let mut img = converter.to_rgb_image(frame)?;
    annotate(&mut img, detections);
    encode_jpeg(&img, quality)
}
