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
//!
//! This file holds [`run`], which wires the stages, and the types callers
//! see ([`Outputs`], [`Observer`], [`FrameEvent`], [`RunSummary`]). The
//! stages live in `capture_stage`, `detect_stage` (convert, inference,
//! postprocess) and `publish_stage`; `jobs` holds what flows between them
//! (jobs, pools, queues) and `supervise` the calling thread's part.

mod capture_stage;
mod detect_stage;
mod jobs;
mod publish_stage;
mod supervise;

use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::Result;

use crate::device::capture::Opener;
use crate::device::config::Config;
use crate::device::events::{EventTracker, ObjectEvent};
use crate::device::infer::Detector;
use crate::device::metrics::Metrics;
use crate::device::publish::http::HttpState;
use crate::device::publish::jsonl::JsonlWriter;
use crate::device::publish::snapshot::SnapshotWriter;
use crate::device::publish::FrameMessage;
use capture_stage::CaptureSettings;
pub use detect_stage::detect_filter;
pub use detect_stage::PostprocessSettings;
use jobs::{Pools, Queue};

/// One published frame, as an [`Outputs::observer`] sees it.
pub struct FrameEvent<'a> {
    pub message: &'a FrameMessage,
    /// The snapshot written for this frame, if any.
    pub snapshot: Option<&'a std::path::Path>,
    /// Object events this frame produced (`new`, `update`, `end`).
    pub events: &'a [ObjectEvent],
}

/// Called by the publish stage for every published frame (summaries,
/// console output). It runs on the publish thread: keep it short.
pub type Observer = Box<dyn FnMut(&FrameEvent) + Send>;

/// Where results go (all optional).
pub struct Outputs {
    pub camera: String,
    pub jsonl: Option<JsonlWriter>,
    /// Object events' own JSON lines (none: they go to `jsonl`).
    pub events_jsonl: Option<JsonlWriter>,
    #[cfg(feature = "mqtt")]
    pub mqtt: Option<crate::device::publish::mqtt::MqttPublisher>,
    pub snapshots: Option<SnapshotWriter>,
    pub snapshot_quality: u8,
    /// Drawn on snapshots.
    pub zones: Vec<crate::device::postprocess::Zone>,
    pub http: Option<Arc<HttpState>>,
    pub observer: Option<Observer>,
    /// Object events from the tracks (none: events off).
    pub events: Option<EventTracker>,
}

/// What SIGHUP does to a running pipeline: re-read the configuration and
/// apply what can change without dropping the camera (detection
/// thresholds, zones, tracking, events, outputs, MQTT). A configuration
/// that does not validate, or whose outputs cannot be opened, is refused
/// (logged) and the running one kept; changes that need a restart (source,
/// model, camera name, HTTP, pipeline) are logged and not applied.
pub struct Reload {
    /// Set by SIGHUP.
    pub requested: Arc<AtomicBool>,
    /// Re-reads and validates the configuration (file and flags).
    pub load: Box<dyn FnMut() -> Result<Config> + Send>,
    /// Opens the outputs of the new configuration (given the old one, to
    /// keep an unchanged MQTT connection).
    pub open: Box<OutputsOpener>,
}

/// Opens a new configuration's outputs, given the running one: `(old, new)`.
pub type OutputsOpener = dyn FnMut(&Config, &Config) -> Result<OutputsUpdate> + Send;

/// The outputs of a reloaded configuration, handed to the publish stage.
pub struct OutputsUpdate {
    pub jsonl: Option<JsonlWriter>,
    pub events_jsonl: Option<JsonlWriter>,
    /// `Some`: the `[mqtt]` table changed (the old publisher is closed).
    #[cfg(feature = "mqtt")]
    pub mqtt: Option<Option<crate::device::publish::mqtt::MqttPublisher>>,
    pub snapshots: Option<SnapshotWriter>,
    pub snapshot_quality: u8,
    pub zones: Vec<crate::device::postprocess::Zone>,
    /// The events settings (none: events off).
    pub events: Option<crate::device::events::EventsConfig>,
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

impl RunSummary {
    /// The run's counters as they stand, after `elapsed`.
    fn from_metrics(metrics: &Metrics, elapsed: Duration) -> Self {
        Self {
            frames: metrics.frames.load(Relaxed),
            frames_captured: metrics.frames_captured.load(Relaxed),
            frames_dropped: metrics.frames_dropped.load(Relaxed),
            frames_corrupt: metrics.frames_corrupt.load(Relaxed),
            capture_timeouts: metrics.capture_timeouts.load(Relaxed),
            camera_reconnects: metrics.camera_reconnects.load(Relaxed),
            elapsed,
        }
    }

    /// Processed frames per second over the run.
    pub fn fps(&self) -> f64 {
        self.frames as f64 / self.elapsed.as_secs_f64().max(1e-3)
    }
}

/// What every stage thread holds: the pools its spent jobs go back to, the
/// counters the stages share, and the pipeline's own stop flag.
#[derive(Clone)]
struct StageContext {
    pools: Pools,
    metrics: Arc<Metrics>,
    /// Set when the pipeline stops (max_frames, end of stream, a signal).
    stop: Arc<AtomicBool>,
}

/// A running stage thread, named for the log should it panic.
type Worker = (&'static str, JoinHandle<()>);

fn spawn_worker(name: &'static str, f: impl FnOnce() + Send + 'static) -> std::io::Result<Worker> {
    std::thread::Builder::new()
        .name(name.into())
        .spawn(f)
        .map(|h| (name, h))
}

/// Runs the pipeline until the source ends, `stop` is set (signals) or
/// `pipeline.max_frames` frames are processed; drains the frames in flight
/// and returns. `metrics` must have been made for the model's labels.
pub fn run(
    cfg: &Config,
    opener: Box<dyn Opener>,
    detector: Detector,
    outputs: Outputs,
    metrics: Arc<Metrics>,
    stop_signal: Arc<AtomicBool>,
    reload: Option<Reload>,
) -> Result<RunSummary> {
    let started = Instant::now();
    let info = detector.info().clone();
    let postprocess = PostprocessSettings::new(cfg, &info)?;
    let live = opener.live();
    let q = cfg.pipeline.queue_frames;
    let (pools, takers) = jobs::filled_pools(q, info.input_len());
    let to_convert = Queue::new(q, live);
    let to_infer = Queue::new(q, live);
    let to_post = Queue::new(q, false);
    let to_publish = Queue::new(q, false);
    let (from_capture, from_convert) = (to_convert.receiver(), to_infer.receiver());
    let (from_infer, from_post) = (to_post.receiver(), to_publish.receiver());
    // The pipeline's own stop (max_frames, end of stream), distinct from the
    // signal flag so a signal during the drain still forces an exit.
    let stop = Arc::new(AtomicBool::new(false));
    let ctx = StageContext {
        pools,
        metrics: metrics.clone(),
        stop: stop.clone(),
    };
    let capture = CaptureSettings::new(cfg);
    // reloaded settings, taken by the stages between frames
    let (post_tx, post_rx) = crossbeam_channel::bounded(1);
    let (out_tx, out_rx) = crossbeam_channel::bounded(1);
    let workers = vec![
        capture_stage::spawn(opener, takers.jobs, to_convert, capture, ctx.clone())?,
        detect_stage::spawn_convert(from_capture, to_infer, takers.tensors, &info, ctx.clone())?,
        detect_stage::spawn_inference(from_convert, to_post, detector, ctx.clone())?,
        detect_stage::spawn_postprocess(
            from_infer,
            to_publish,
            postprocess,
            post_rx.clone(),
            ctx.clone(),
        )?,
    ];
    // The last context (and with it this thread's pool senders) goes to
    // publish, so the pools close once every stage is done.
    let max_frames = cfg.pipeline.max_frames;
    let publish = publish_stage::spawn(from_post, outputs, out_rx.clone(), &info, max_frames, ctx)?;

    let mut reload = reload.map(|r| supervise::Reloading {
        reload: r,
        current: cfg.clone(),
        info: info.clone(),
        to_postprocess: post_tx,
        to_publish: out_tx,
        pending_postprocess: post_rx,
        pending_publish: out_rx,
    });
    supervise::until_published(
        &publish,
        &stop_signal,
        &stop,
        &metrics,
        started,
        reload.as_mut(),
    );
    let (result, outputs) = supervise::join_stages(publish, workers, &stop)?;
    supervise::finish_outputs(outputs);
    result?;
    Ok(RunSummary::from_metrics(&metrics, started.elapsed()))
}
