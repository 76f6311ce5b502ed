//! `irdistill run`: the daemon's flags. The config file (if any) gives the
//! settings, flags override them; `irdistill::device::daemon` runs it.

use std::path::PathBuf;

use anyhow::{Context, Result};
use irdistill::device::capture::source::parse_pixel_format;
use irdistill::device::config::Config;
use irdistill::device::daemon::{execute, ConfigLoader, StartupError};

#[derive(clap::Args, Debug, Clone)]
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
    /// Inference threads; 0 = auto (the default: each count from 1 to the
    /// cores timed at load, the fastest kept).
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
    apply_source_flags(&mut cfg, a)?;
    apply_detect_flags(&mut cfg, a);
    apply_output_flags(&mut cfg, a)?;
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

/// `--source`, `--camera`, `--fps`, `--size`, `--format`.
fn apply_source_flags(cfg: &mut Config, a: &Args) -> Result<()> {
    if let Some(s) = &a.source {
        cfg.source.spec = s.clone();
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
    Ok(())
}

/// `--model`, `--imgsz`, `--threads`, `--conf`, `--iou`, `--no-track`.
fn apply_detect_flags(cfg: &mut Config, a: &Args) {
    if let Some(m) = &a.model {
        cfg.model.path = Some(m.clone());
    }
    if let Some(s) = a.imgsz {
        cfg.model.imgsz = Some(s);
    }
    if let Some(t) = a.threads {
        cfg.model.threads = t;
    }
    if let Some(c) = a.conf {
        cfg.detect.conf = c;
    }
    if let Some(i) = a.iou {
        cfg.detect.iou = i;
    }
    if a.no_track {
        cfg.track.enabled = false;
    }
}

/// `--frames`, `--jsonl`, `--http`, `--snapshots`, `--mqtt`.
fn apply_output_flags(cfg: &mut Config, a: &Args) -> Result<()> {
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
    Ok(())
}

/// Runs the daemon on the flags' configuration; writes `--summary` at exit.
pub fn run(a: Args) -> Result<()> {
    let cfg = effective_config(&a).context(StartupError)?;
    // SIGHUP re-reads the file with the same flags on top
    let flags = a.clone();
    let reload: ConfigLoader = Box::new(move || effective_config(&flags));
    let report = execute(&cfg, None, Some(reload))?;
    if let Some(path) = &a.summary {
        report.write(path).context("--summary")?;
    }
    Ok(())
}
