//! `irdistill run`: the daemon. The config file (if any) gives the
//! settings, flags override them.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use irdistill::capture;
use irdistill::config::{parse_listen, parse_pixel_format, Config};
use irdistill::infer::{Detector, ModelOptions};
use irdistill::metrics::Metrics;
use irdistill::pipeline::{self, Outputs};
use irdistill::publish::http::{self, HttpState};
use irdistill::publish::jsonl::JsonlWriter;
use irdistill::publish::snapshot::SnapshotWriter;

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
    /// Write a JSON summary (frames, drops, reconnects, peak memory) here at exit.
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
        use irdistill::publish::mqtt::MqttConfig;
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
    let cfg = effective_config(&a)?;
    // Signals first: a SIGTERM while the model loads still stops cleanly.
    let stop = irdistill::service::stop_flag()?;
    let opener = capture::opener(&cfg)?;
    let detector = load_model(&cfg)?;
    let info = detector.info().clone();
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
                let p = irdistill::publish::mqtt::MqttPublisher::start(m)
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
            })
            .transpose()?,
        snapshot_quality: cfg.snapshots.jpeg_quality,
        http: http_state,
    };
    let summary = pipeline::run(&cfg, opener, detector, outputs, metrics, stop)?;
    http_stop.store(true, std::sync::atomic::Ordering::Relaxed);
    if let Some(h) = http_thread {
        let _ = h.join();
    }
    tracing::info!(
        "done: {} frames processed in {:.1} s ({:.1} fps), {} captured, {} dropped, {} corrupt, {} timeouts, {} reconnects",
        summary.frames,
        summary.elapsed.as_secs_f64(),
        summary.frames as f64 / summary.elapsed.as_secs_f64().max(1e-3),
        summary.frames_captured,
        summary.frames_dropped,
        summary.frames_corrupt,
        summary.capture_timeouts,
        summary.camera_reconnects
    );
    if let Some(path) = &a.summary {
        let json = serde_json::json!({
            "frames": summary.frames,
            "frames_captured": summary.frames_captured,
            "frames_dropped": summary.frames_dropped,
            "frames_corrupt": summary.frames_corrupt,
            "capture_timeouts": summary.capture_timeouts,
            "camera_reconnects": summary.camera_reconnects,
            "elapsed_s": summary.elapsed.as_secs_f64(),
            "peak_rss_bytes": irdistill::metrics::peak_resident_memory_bytes(),
        });
        std::fs::write(path, json.to_string() + "\n")
            .with_context(|| format!("--summary {}", path.display()))?;
    }
    Ok(())
}
