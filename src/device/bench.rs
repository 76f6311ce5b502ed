//! The measurements behind `irdistill bench`, one small function each:
//! model-only throughput, conversion time per camera format, full-pipeline
//! throughput and latency (with full queues, then from a live camera), and
//! the daemon's peak resident memory, measured on a child `irdistill run`
//! so that the bench's own buffers do not count. Nothing here prints or
//! asserts: the binary prints the numbers.

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result};
use image::RgbImage;

use crate::device::capture::synthetic::{encode_rgb_into, SyntheticSource};
use crate::device::capture::{self, Frame, PixelFormat};
use crate::device::config::Config;
use crate::device::convert::Converter;
use crate::device::daemon::load_model;
use crate::device::infer::{Detector, ModelInfo};
use crate::device::metrics::Metrics;
use crate::device::model_path::resolve_model;
use crate::device::pipeline::{self, Outputs, RunSummary};

/// What to bench (the `irdistill bench` flags that shape the runs).
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// The ONNX model; none = the bundled one.
    pub model: Option<PathBuf>,
    /// Pipeline source spec.
    pub source: String,
    /// Frames for the model-only and pipeline runs.
    pub frames: u64,
    /// Inference threads; none = the config default (all cores).
    pub threads: Option<usize>,
    /// Camera rate of the live-latency run.
    pub live_fps: f32,
}

/// Runs before timing the model, so that first-run allocations and cold
/// caches are not measured.
const WARM_UP_RUNS: usize = 5;
/// Model runs profiled per operator kind, and how many kinds are reported.
const PROFILE_RUNS: usize = 20;
const PROFILE_TOP_KINDS: usize = 12;
/// The camera frame size the conversions are timed at.
const CAMERA_W_PX: u32 = 640;
const CAMERA_H_PX: u32 = 480;

/// The camera formats whose conversion is timed, in print order, with the
/// conversions timed per format (MJPEG decoding is slow: fewer).
pub const CAMERA_FORMATS: [(PixelFormat, usize); 5] = [
    (PixelFormat::Yuyv, 300),
    (PixelFormat::Nv12, 300),
    (PixelFormat::Grey, 300),
    (PixelFormat::Rgb24, 300),
    (PixelFormat::Mjpeg, 50),
];

/// Percentile `p` (0..=100) of ascending `sorted` values.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((p / 100.0) * (sorted.len() - 1) as f64).round() as usize]
}

/// The daemon configuration the bench runs: the source as fast as it
/// gives frames, `frames` frames, the resolved model.
pub fn bench_config(o: &BenchOptions) -> Result<Config> {
    let mut cfg = Config::default();
    cfg.source.spec = o.source.clone();
    cfg.source.fps = 0.0;
    // A scene is rendered once and held: the bench measures the daemon,
    // not the scene generator.
    cfg.source.synthetic.hold_frames = 1_000_000;
    cfg.model.path = Some(resolve_model(o.model.as_deref(), None)?);
    if let Some(t) = o.threads {
        cfg.model.threads = t;
    }
    cfg.pipeline.max_frames = o.frames;
    cfg.validate()?;
    Ok(cfg)
}

/// A real letterboxed frame as model input: the synthetic camera's first
/// scene, in RGB24.
pub fn model_input(cfg: &Config, info: &ModelInfo) -> Result<Vec<f32>> {
    let rgb = SyntheticSource::new(&cfg.source)?.render(0);
    let mut frame = Frame::empty();
    encode_rgb_into(&rgb, PixelFormat::Rgb24, &mut frame)?;
    let mut tensor = vec![0.0f32; info.input_len()];
    Converter::new().letterbox_frame(&frame, info.input_w_px, info.input_h_px, &mut tensor)?;
    Ok(tensor)
}

pub fn warm_up(detector: &mut Detector, input_chw: &[f32]) -> Result<()> {
    let mut output = Vec::new();
    for _ in 0..WARM_UP_RUNS {
        detector.run(input_chw, &mut output)?;
    }
    Ok(())
}

/// Model-only timing: the model run on one input, repeated.
pub struct ModelTiming {
    pub fps: f64,
    /// Milliseconds per run, ascending.
    pub sorted_ms: Vec<f64>,
}

impl ModelTiming {
    pub fn percentile_ms(&self, p: f64) -> f64 {
        percentile(&self.sorted_ms, p)
    }
}

/// Runs the model `frames` times on `input_chw`.
pub fn time_model(detector: &mut Detector, input_chw: &[f32], frames: u64) -> Result<ModelTiming> {
    let mut output = Vec::new();
    let mut ms = Vec::new();
    let t0 = Instant::now();
    for _ in 0..frames {
        let t = Instant::now();
        detector.run(input_chw, &mut output)?;
        ms.push(t.elapsed().as_secs_f64() * 1e3);
    }
    ms.sort_by(f64::total_cmp);
    Ok(ModelTiming {
        fps: frames as f64 / t0.elapsed().as_secs_f64(),
        sorted_ms: ms,
    })
}

/// The slowest operator kinds: (op name, seconds per frame, node count).
pub fn slowest_ops(
    detector: &mut Detector,
    input_chw: &[f32],
) -> Result<Vec<(String, f64, usize)>> {
    let mut ops = detector.profile(input_chw, PROFILE_RUNS)?;
    ops.truncate(PROFILE_TOP_KINDS);
    Ok(ops)
}

/// The synthetic camera's first scene at 640x480, the frame every
/// conversion is timed on.
pub fn camera_scene(o: &BenchOptions) -> Result<RgbImage> {
    let mut cam_cfg = bench_config(o)?;
    cam_cfg.source.width_px = CAMERA_W_PX;
    cam_cfg.source.height_px = CAMERA_H_PX;
    Ok(SyntheticSource::new(&cam_cfg.source)?.render(0))
}

/// `frames` views of the camera scene panning right 4 px a frame (so
/// an H.264 encoder has motion to code), for the decode timing.
pub fn panning_scenes(scene: &RgbImage, frames: usize) -> Vec<RgbImage> {
    let (w, h) = scene.dimensions();
    (0..frames)
        .map(|i| {
            let shift = (4 * i as u32) % w;
            RgbImage::from_fn(w, h, |x, y| *scene.get_pixel((x + shift) % w, y))
        })
        .collect()
}

/// Time of one conversion (pixel format + letterbox).
#[derive(Debug, Clone, Copy)]
pub struct ConversionTiming {
    pub mean_ms: f64,
    pub p50_ms: f64,
}

/// `scene` encoded as `format`, converted `n` times into a `w`x`h` input.
pub fn time_camera_format(
    scene: &RgbImage,
    format: PixelFormat,
    n: usize,
    w: u32,
    h: u32,
) -> Result<ConversionTiming> {
    let mut frame = Frame::empty();
    encode_rgb_into(scene, format, &mut frame)?;
    time_conversion(&frame, w, h, n)
}

/// Mean and p50 milliseconds of converting `frame` `n` times.
pub fn time_conversion(frame: &Frame, w: u32, h: u32, n: usize) -> Result<ConversionTiming> {
    let mut converter = Converter::new();
    let mut tensor = vec![0.0f32; 3 * w as usize * h as usize];
    converter.letterbox_frame(frame, w, h, &mut tensor)?;
    let mut times = Vec::with_capacity(n);
    for _ in 0..n {
        let t0 = Instant::now();
        converter.letterbox_frame(frame, w, h, &mut tensor)?;
        times.push(t0.elapsed().as_secs_f64() * 1e3);
    }
    let mean = times.iter().sum::<f64>() / n as f64;
    times.sort_by(f64::total_cmp);
    Ok(ConversionTiming {
        mean_ms: mean,
        p50_ms: percentile(&times, 50.0),
    })
}

/// Capture → published latency percentiles, milliseconds.
#[derive(Debug, Clone, Copy)]
pub struct LatencyMs {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
}

impl LatencyMs {
    fn of(metrics: &Metrics) -> LatencyMs {
        let pct = |p| metrics.latency.recent_percentile(p).unwrap_or(0.0) * 1e3;
        LatencyMs {
            p50: pct(50.0),
            p90: pct(90.0),
            p99: pct(99.0),
        }
    }
}

/// One full-pipeline run.
pub struct PipelineRun {
    pub summary: RunSummary,
    pub latency: LatencyMs,
}

impl PipelineRun {
    pub fn fps(&self) -> f64 {
        self.summary.fps()
    }
}

/// Runs the whole pipeline on `cfg` with no outputs. Warm-up frames are
/// part of the run.
pub fn run_pipeline(cfg: &Config) -> Result<PipelineRun> {
    let detector = load_model(cfg)?;
    let metrics = Arc::new(Metrics::new(detector.info().names.clone(), vec![]));
    let summary = pipeline::run(
        cfg,
        capture::opener(&cfg.source)?,
        detector,
        no_outputs(),
        metrics.clone(),
        Arc::new(AtomicBool::new(false)),
        None,
    )?;
    Ok(PipelineRun {
        summary,
        latency: LatencyMs::of(&metrics),
    })
}

/// The bench measures the data path, not the writers.
fn no_outputs() -> Outputs {
    Outputs {
        camera: "bench".into(),
        jsonl: None,
        events_jsonl: None,
        #[cfg(feature = "mqtt")]
        mqtt: None,
        snapshots: None,
        snapshot_quality: 85,
        zones: Vec::new(),
        http: None,
        observer: None,
        events: None,
    }
}

/// The config of the live-latency run: a camera at `live_fps` (frames are
/// dropped, not queued, when inference falls behind), for at most about
/// ten seconds and at least 10 frames.
pub fn live_config(o: &BenchOptions) -> Result<Config> {
    let mut live_cfg = bench_config(o)?;
    live_cfg.source.fps = o.live_fps;
    live_cfg.pipeline.max_frames = o.frames.min((o.live_fps * 10.0) as u64).max(10);
    Ok(live_cfg)
}

/// Peak RSS of a child `irdistill run` on the same model and source (from
/// the summary it writes at exit).
pub fn child_peak_rss(o: &BenchOptions, cfg: &Config) -> Result<u64> {
    let exe = std::env::current_exe().context("locating irdistill")?;
    let model = cfg.model.path.as_ref().expect("set by bench_config");
    let dir = std::env::temp_dir().join(format!("irdistill-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let summary = dir.join("summary.json");
    // One scene, rendered once: the generator's own buffers are not the
    // daemon's (a camera source has none of them).
    let config = dir.join("bench.toml");
    std::fs::write(&config, "[source.synthetic]\nhold_frames = 1000000\n")?;
    let status = std::process::Command::new(exe)
        .arg("run")
        .arg("--config")
        .arg(&config)
        .args(["--source", &o.source, "--fps", "0", "--frames"])
        .arg(o.frames.to_string())
        .arg("--model")
        .arg(model)
        .args(["--threads", &cfg.model.threads.to_string(), "--log", "warn"])
        .arg("--summary")
        .arg(&summary)
        .status()
        .context("running a child irdistill run")?;
    anyhow::ensure!(status.success(), "the child irdistill run failed: {status}");
    let text = std::fs::read_to_string(&summary)?;
    let _ = std::fs::remove_dir_all(&dir);
    let v: serde_json::Value = serde_json::from_str(&text)?;
    v["peak_rss_bytes"]
        .as_u64()
        .context("the child's summary has no peak_rss_bytes")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentile_picks_the_nearest_rank() {
        let sorted = [1.0, 2.0, 3.0, 4.0, 5.0];
        assert_eq!(percentile(&sorted, 0.0), 1.0);
        assert_eq!(percentile(&sorted, 50.0), 3.0);
        assert_eq!(percentile(&sorted, 90.0), 5.0);
        assert_eq!(percentile(&[7.0], 99.0), 7.0);
    }
}
