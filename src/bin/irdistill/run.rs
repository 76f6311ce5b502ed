//! `irdistill run`: the daemon. The config file (if any) gives the
//! settings, flags override them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use irdistill::device::capture;
use irdistill::device::capture::source::{parse_pixel_format, SourceSpec};
use irdistill::device::capture::synthetic::SyntheticSource;
use irdistill::device::config::{parse_listen, Config};
use irdistill::device::infer::{Detector, ModelInfo, ModelOptions};
use irdistill::device::metrics::Metrics;
use irdistill::device::pipeline::{self, FrameEvent, Outputs};
use irdistill::device::publish::http::{self, HttpState};
use irdistill::device::publish::jsonl::JsonlWriter;
use irdistill::device::publish::snapshot::SnapshotWriter;
use irdistill::shared::condition::Condition;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// TOML configuration (see systemd/irdistill.toml); flags override it.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// synthetic | images:DIR (or a glob) | v4l2:/dev/videoN | fault:EVENTS
    #[arg(long)]
    pub source: Option<String>,
    /// The ONNX model (default: [model] path, else models/student-p.onnx).
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Stop after N processed frames (0 = run until stopped).
    #[arg(long)]
    pub frames: Option<u64>,
    /// JSON lines to a file (appended) or - for stdout.
    #[arg(long)]
    pub jsonl: Option<String>,
    /// MQTT broker, mqtt://HOST:PORT (mqtts:// for TLS).
    #[arg(long)]
    pub mqtt: Option<String>,
    /// HTTP endpoints (/metrics, /healthz, /snapshot.jpg) on ADDR:PORT (a
    /// bare port means loopback).
    #[arg(long)]
    pub http: Option<String>,
    /// Folder for annotated JPEG snapshots.
    #[arg(long)]
    pub snapshots: Option<PathBuf>,
    /// Camera name in MQTT topics and JSON (default cam0).
    #[arg(long)]
    pub camera: Option<String>,
    /// Frames per second (camera request; synthetic/images pace, 0 = max).
    #[arg(long)]
    pub fps: Option<f32>,
    /// Capture size WxH.
    #[arg(long)]
    pub size: Option<String>,
    /// Pixel format: YUYV, MJPG, NV12, RGB3, GREY.
    #[arg(long)]
    pub format: Option<String>,
    /// Confidence threshold.
    #[arg(long)]
    pub conf: Option<f32>,
    /// NMS IoU threshold.
    #[arg(long)]
    pub iou: Option<f32>,
    /// Model input size when the model does not record it.
    #[arg(long)]
    pub imgsz: Option<u32>,
    /// Inference threads.
    #[arg(long)]
    pub threads: Option<usize>,
    /// Turn tracking off (track_id is then null).
    #[arg(long)]
    pub no_track: bool,
    /// Write a JSON summary here at exit: frames, fps, latency and
    /// inference percentiles, drops, reconnects, detections per label (and
    /// per condition from the synthetic camera), snapshots, peak memory.
    #[arg(long)]
    pub summary: Option<PathBuf>,
}

/// The config file (or the defaults) with the flags applied, validated.
pub fn effective_config(a: &Args) -> Result<Config> {
    let mut cfg = match &a.config {
        Some(path) => Config::load(path)?,
        None => Config::default(),
    };
    if let Some(s) = &a.source {
        cfg.source.spec = s.clone();
    }
    if let Some(m) = &a.model {
        cfg.model.path = Some(m.clone());
    }
    if let Some(n) = a.frames {
        cfg.pipeline.max_frames = n;
    }
    if let Some(j) = &a.jsonl {
        cfg.output.jsonl = Some(j.clone());
    }
    if let Some(h) = &a.http {
        cfg.http.listen = Some(h.clone());
    }
    if let Some(d) = &a.snapshots {
        cfg.snapshots.dir = Some(d.clone());
    }
    if let Some(c) = &a.camera {
        cfg.camera.name = c.clone();
    }
    if let Some(f) = a.fps {
        cfg.source.fps = f;
    }
    if let Some(size) = &a.size {
        let (w, h) = size
            .split_once(['x', 'X'])
            .and_then(|(w, h)| Some((w.parse().ok()?, h.parse().ok()?)))
            .with_context(|| format!("--size {size:?}: expected WxH, e.g. 640x480"))?;
        cfg.source.width_px = w;
        cfg.source.height_px = h;
    }
    if let Some(f) = &a.format {
        parse_pixel_format(f).context("--format")?;
        cfg.source.format = Some(f.clone());
    }
    if let Some(c) = a.conf {
        cfg.detect.conf = c;
    }
    if let Some(i) = a.iou {
        cfg.detect.iou = i;
    }
    if let Some(s) = a.imgsz {
        cfg.model.imgsz = Some(s);
    }
    if let Some(t) = a.threads {
        cfg.model.threads = t;
    }
    if a.no_track {
        cfg.track.enabled = false;
    }
    #[cfg(feature = "mqtt")]
    if let Some(url) = &a.mqtt {
        use irdistill::device::publish::mqtt::MqttConfig;
        let from_url = MqttConfig::from_url(url).context("--mqtt")?;
        cfg.mqtt = Some(match cfg.mqtt.take() {
            // the config's credentials and TLS files stay, the URL changes
            Some(mut section) => {
                section.url = from_url.url;
                section
            }
            None => from_url,
        });
    }
    #[cfg(not(feature = "mqtt"))]
    if a.mqtt.is_some() {
        anyhow::bail!("--mqtt: this irdistill was built without the mqtt feature");
    }
    if a.model.is_none() {
        if let (Some(path), Some(file)) = (&cfg.model.path, &a.config) {
            anyhow::ensure!(
                path.is_file(),
                "config {}: model.path {}: no such file",
                file.display(),
                path.display()
            );
        }
    }
    let origin = a.config.as_ref().map_or("flags".to_string(), |p| {
        format!("{} with flags", p.display())
    });
    cfg.validate()
        .with_context(|| format!("configuration ({origin})"))?;
    Ok(cfg)
}

/// Loads the model named by the config (or the default one).
pub fn load_model(cfg: &Config) -> Result<Detector> {
    let path = crate::resolve_model(None, cfg.model.path.as_deref())?;
    let opts = ModelOptions {
        imgsz: cfg.model.imgsz.map(|s| (s, s)),
        names: cfg.model.names.clone(),
        threads: cfg.model.threads,
    };
    Detector::load(&path, &opts)
}

pub fn run(a: Args) -> Result<()> {
    let cfg = effective_config(&a).context(crate::StartupError)?;
    let report = execute(&cfg, None)?;
    if let Some(path) = &a.summary {
        report.write(path).context("--summary")?;
    }
    Ok(())
}

/// Per-frame console output of a caller (the demo), with the frame's
/// condition when the source is the synthetic camera.
pub type Printer = Box<dyn FnMut(&FrameEvent, Option<Condition>) + Send>;

/// Detections counted per label, overall and per condition.
#[derive(Default)]
struct Tally {
    frames: u64,
    detections: BTreeMap<String, u64>,
    conditions: BTreeMap<Condition, (u64, BTreeMap<String, u64>)>,
    snapshots: Vec<SnapshotRecord>,
}

#[derive(serde::Serialize, Clone, Debug)]
pub struct SnapshotRecord {
    pub path: PathBuf,
    pub frame: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub condition: Option<Condition>,
    pub detections: usize,
}

/// Detections of one group of frames.
#[derive(serde::Serialize, Clone, Debug)]
pub struct DetectionCounts {
    pub frames: u64,
    pub detections: u64,
    pub per_frame: f64,
    /// Every label of the model, zeros included.
    pub by_label: BTreeMap<String, u64>,
}

impl DetectionCounts {
    fn new(frames: u64, counts: &BTreeMap<String, u64>, names: &[String]) -> Self {
        let by_label: BTreeMap<String, u64> = names
            .iter()
            .map(|n| (n.clone(), counts.get(n).copied().unwrap_or(0)))
            .collect();
        let detections: u64 = counts.values().sum();
        Self {
            frames,
            detections,
            per_frame: if frames > 0 {
                detections as f64 / frames as f64
            } else {
                0.0
            },
            by_label,
        }
    }
}

/// Percentiles of a stage's time, milliseconds.
#[derive(serde::Serialize, Clone, Copy, Debug, Default)]
pub struct Percentiles {
    pub p50: f64,
    pub p95: f64,
}

impl Percentiles {
    fn of(h: &irdistill::device::metrics::Histogram) -> Self {
        let ms = |p| h.recent_percentile(p).unwrap_or(0.0) * 1e3;
        Self {
            p50: ms(50.0),
            p95: ms(95.0),
        }
    }
}

/// What a run did: `--summary`'s JSON and the demo's printout.
#[derive(serde::Serialize, Clone, Debug)]
pub struct Report {
    pub model: PathBuf,
    /// Model input `[height, width]`.
    pub imgsz: [u32; 2],
    /// The model's class names, in class-id order.
    pub classes: Vec<String>,
    pub threads: usize,
    pub source: String,
    pub frames: u64,
    pub frames_captured: u64,
    pub frames_dropped: u64,
    pub frames_corrupt: u64,
    pub capture_timeouts: u64,
    pub camera_reconnects: u64,
    pub elapsed_s: f64,
    /// Processed frames per second over the whole run (model load excluded).
    pub fps: f64,
    /// Capture to published (what `irdistill_latency_seconds` measures).
    pub latency_ms: Percentiles,
    pub inference_ms: Percentiles,
    pub convert_ms: Percentiles,
    pub detections: DetectionCounts,
    /// Per condition of the synthetic camera (empty for other sources).
    pub conditions: BTreeMap<Condition, DetectionCounts>,
    pub snapshots: Vec<SnapshotRecord>,
    pub peak_rss_bytes: Option<u64>,
}

impl Report {
    pub fn write(&self, path: &Path) -> Result<()> {
        let json = serde_json::to_string_pretty(self)?;
        std::fs::write(path, json + "\n").with_context(|| format!("writing {}", path.display()))
    }
}

/// The condition of each frame of the configured source, when known (the
/// synthetic camera renders day, night and fog scenes in a fixed cycle).
fn condition_map(cfg: &Config) -> Result<Option<SyntheticSource>> {
    Ok(match cfg.source_spec()? {
        SourceSpec::Synthetic => Some(SyntheticSource::new(&cfg.source)?),
        _ => None,
    })
}

/// Runs the daemon on a validated config until it stops (signal, source
/// end, `pipeline.max_frames`); `printer` sees every published frame.
pub fn execute(cfg: &Config, mut printer: Option<Printer>) -> Result<Report> {
    // Signals first: a SIGTERM while the model loads still stops cleanly.
    let stop = irdistill::device::service::stop_flag()?;
    let opener = capture::opener(&cfg.source).context(crate::StartupError)?;
    let detector = load_model(cfg).context(crate::StartupError)?;
    let info = detector.info().clone();
    pipeline::detect_filter(cfg, &info).context(crate::StartupError)?;
    tracing::info!(
        "model {}: input {}x{}, classes {}, {} anchors, {} threads",
        info.path.display(),
        info.input_w_px,
        info.input_h_px,
        info.names.join(", "),
        info.anchors,
        cfg.model.threads
    );
    let metrics = Arc::new(Metrics::new(
        info.names.clone(),
        vec![
            ("version".into(), env!("CARGO_PKG_VERSION").into()),
            ("camera".into(), cfg.camera.name.clone()),
            ("model".into(), info.path.display().to_string()),
        ],
    ));
    let http_stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut http_thread = None;
    let http_state = match &cfg.http.listen {
        Some(listen) => {
            let addr = parse_listen(listen).context("--http")?;
            let state = Arc::new(HttpState::new(
                metrics.clone(),
                Duration::from_millis(cfg.pipeline.stall_ms),
            ));
            let (bound, handle) = http::serve(addr, state.clone(), http_stop.clone())?;
            tracing::info!("http: listening on http://{bound} (/metrics, /healthz, /snapshot.jpg)");
            http_thread = Some(handle);
            Some(state)
        }
        None => None,
    };
    let tally = Arc::new(Mutex::new(Tally::default()));
    let observer: pipeline::Observer = {
        let tally = tally.clone();
        let conditions = condition_map(cfg)?;
        Box::new(move |event: &FrameEvent| {
            let condition = conditions
                .as_ref()
                .map(|s| s.condition_of(event.message.frame));
            {
                let mut guard = tally.lock().expect("tally");
                let t = &mut *guard;
                t.frames += 1;
                let mut per_condition = condition.map(|c| {
                    let entry = t.conditions.entry(c).or_default();
                    entry.0 += 1;
                    &mut entry.1
                });
                for d in &event.message.detections {
                    *t.detections.entry(d.label.clone()).or_default() += 1;
                    if let Some(counts) = per_condition.as_mut() {
                        *counts.entry(d.label.clone()).or_default() += 1;
                    }
                }
                if let Some(path) = event.snapshot {
                    t.snapshots.push(SnapshotRecord {
                        path: path.to_path_buf(),
                        frame: event.message.frame,
                        condition,
                        detections: event.message.detections.len(),
                    });
                }
            }
            if let Some(p) = printer.as_mut() {
                p(event, condition);
            }
        })
    };
    let outputs = Outputs {
        camera: cfg.camera.name.clone(),
        jsonl: cfg
            .output
            .jsonl
            .as_deref()
            .map(JsonlWriter::open)
            .transpose()?,
        #[cfg(feature = "mqtt")]
        mqtt: match &cfg.mqtt {
            Some(m) => {
                let p = irdistill::device::publish::mqtt::MqttPublisher::start(m)
                    .with_context(|| format!("mqtt {}", m.url))?;
                tracing::info!("mqtt: publishing to {}", m.url);
                Some(p)
            }
            None => None,
        },
        snapshots: cfg
            .snapshots
            .dir
            .as_deref()
            .map(|d| {
                SnapshotWriter::new(
                    d,
                    Duration::from_millis(cfg.snapshots.min_interval_ms),
                    cfg.snapshots.max_total_bytes,
                )
                .map(|w| w.with_min_interval_frames(cfg.snapshots.min_interval_frames))
            })
            .transpose()?,
        snapshot_quality: cfg.snapshots.jpeg_quality,
        http: http_state,
        observer: Some(observer),
    };
    let summary = pipeline::run(cfg, opener, detector, outputs, metrics.clone(), stop)?;
    http_stop.store(true, std::sync::atomic::Ordering::Relaxed);
    if let Some(h) = http_thread {
        let _ = h.join();
    }
    let fps = summary.frames as f64 / summary.elapsed.as_secs_f64().max(1e-3);
    tracing::info!(
        "done: {} frames processed in {:.1} s ({:.1} fps), {} captured, {} dropped, {} corrupt, {} timeouts, {} reconnects",
        summary.frames,
        summary.elapsed.as_secs_f64(),
        fps,
        summary.frames_captured,
        summary.frames_dropped,
        summary.frames_corrupt,
        summary.capture_timeouts,
        summary.camera_reconnects
    );
    let tally = std::mem::take(&mut *tally.lock().expect("tally"));
    Ok(report(cfg, &info, &summary, &metrics, tally))
}

fn report(
    cfg: &Config,
    info: &ModelInfo,
    summary: &pipeline::RunSummary,
    metrics: &Metrics,
    tally: Tally,
) -> Report {
    let names = &info.names;
    Report {
        model: info.path.clone(),
        imgsz: [info.input_h_px, info.input_w_px],
        classes: names.clone(),
        threads: cfg.model.threads,
        source: cfg.source.spec.clone(),
        frames: summary.frames,
        frames_captured: summary.frames_captured,
        frames_dropped: summary.frames_dropped,
        frames_corrupt: summary.frames_corrupt,
        capture_timeouts: summary.capture_timeouts,
        camera_reconnects: summary.camera_reconnects,
        elapsed_s: summary.elapsed.as_secs_f64(),
        fps: summary.frames as f64 / summary.elapsed.as_secs_f64().max(1e-3),
        latency_ms: Percentiles::of(&metrics.latency),
        inference_ms: Percentiles::of(&metrics.inference),
        convert_ms: Percentiles::of(&metrics.convert),
        detections: DetectionCounts::new(tally.frames, &tally.detections, names),
        conditions: tally
            .conditions
            .iter()
            .map(|(c, (frames, counts))| (*c, DetectionCounts::new(*frames, counts, names)))
            .collect(),
        snapshots: tally.snapshots,
        peak_rss_bytes: irdistill::device::metrics::peak_resident_memory_bytes(),
    }
}
