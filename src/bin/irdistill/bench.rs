//! `irdistill bench`: prints numbers, asserts nothing. Model-only
//! throughput, conversion time per frame, full-pipeline throughput and
//! latency percentiles, and the daemon's peak resident memory (measured on
//! a child `irdistill run`, so the bench's own buffers do not count).

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result};
use irdistill::device::capture::synthetic::{encode_rgb_into, SyntheticSource};
use irdistill::device::capture::{self, Frame, PixelFormat};
use irdistill::device::config::Config;
use irdistill::device::convert::Converter;
use irdistill::device::metrics::Metrics;
use irdistill::device::pipeline::{self, Outputs};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The ONNX model (default: models/student-p.onnx).
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Pipeline source (default: synthetic YUYV 640x480, as fast as possible).
    #[arg(long, default_value = "synthetic")]
    pub source: String,
    /// Frames for the model-only and pipeline runs.
    #[arg(long, default_value_t = 200)]
    pub frames: u64,
    /// Inference threads (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Skip the child run measuring the daemon's peak memory.
    #[arg(long)]
    pub no_rss: bool,
    /// Print tract's time per operator kind (where the model's time goes).
    #[arg(long)]
    pub profile: bool,
    /// Camera rate for the latency run (a live source: frames are dropped,
    /// not queued, when inference falls behind).
    #[arg(long, default_value_t = 15.0)]
    pub live_fps: f32,
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((p / 100.0) * (sorted.len() - 1) as f64).round() as usize]
}

fn bench_config(a: &Args) -> Result<Config> {
    let mut cfg = Config::default();
    cfg.source.spec = a.source.clone();
    cfg.source.fps = 0.0;
    // A scene is rendered once and held: the bench measures the daemon,
    // not the scene generator.
    cfg.source.synthetic.hold_frames = 1_000_000;
    cfg.model.path = Some(crate::resolve_model(a.model.as_deref(), None)?);
    if let Some(t) = a.threads {
        cfg.model.threads = t;
    }
    cfg.pipeline.max_frames = a.frames;
    cfg.validate()?;
    Ok(cfg)
}

/// Mean and p50 milliseconds of converting `frame` `n` times.
fn time_conversion(frame: &Frame, w: u32, h: u32, n: usize) -> Result<(f64, f64)> {
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
    Ok((mean, percentile(&times, 50.0)))
}

/// Peak RSS of a child `irdistill run` on the same model and source (from
/// the summary it writes at exit).
fn child_peak_rss(a: &Args, cfg: &Config) -> Result<u64> {
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
        .args(["--source", &a.source, "--fps", "0", "--frames"])
        .arg(a.frames.to_string())
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

pub fn bench(a: Args) -> Result<()> {
    let cfg = bench_config(&a)?;
    let mut detector = crate::run::load_model(&cfg)?;
    let info = detector.info().clone();
    let threads = cfg.model.threads;
    println!(
        "model {} ({}x{}, {} classes, {} anchors), {} inference threads, {} cores",
        info.path.display(),
        info.input_w_px,
        info.input_h_px,
        info.nc(),
        info.anchors,
        threads,
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );

    // 1. Model only: a real letterboxed frame, repeated.
    let source = SyntheticSource::new(&cfg.source)?;
    let rgb = source.render(0);
    let mut frame = Frame::empty();
    encode_rgb_into(&rgb, PixelFormat::Rgb24, &mut frame)?;
    let mut tensor = vec![0.0f32; info.input_len()];
    Converter::new().letterbox_frame(&frame, info.input_w_px, info.input_h_px, &mut tensor)?;
    let mut output = Vec::new();
    for _ in 0..5 {
        detector.run(&tensor, &mut output)?;
    }
    let mut model_only =
        |detector: &mut irdistill::device::infer::Detector| -> Result<(f64, Vec<f64>)> {
            let mut ms = Vec::new();
            let t0 = Instant::now();
            for _ in 0..a.frames {
                let t = Instant::now();
                detector.run(&tensor, &mut output)?;
                ms.push(t.elapsed().as_secs_f64() * 1e3);
            }
            ms.sort_by(f64::total_cmp);
            Ok((a.frames as f64 / t0.elapsed().as_secs_f64(), ms))
        };
    let (model_fps, model_ms) = model_only(&mut detector)?;
    println!(
        "model only:      {model_fps:7.1} fps   p50 {:.2} ms  p90 {:.2} ms",
        percentile(&model_ms, 50.0),
        percentile(&model_ms, 90.0)
    );
    if a.profile {
        println!("tract time per operator kind (per frame):");
        for (op, s, nodes) in detector.profile(&tensor, 20)?.into_iter().take(12) {
            println!("  {op:<28} {:7.2} ms  ({nodes} nodes)", s * 1e3);
        }
    }
    drop(detector);

    // 2. Conversion per frame, 640x480 in each camera format.
    let mut conv = serde_json::Map::new();
    let mut cam_cfg = bench_config(&a)?;
    cam_cfg.source.width_px = 640;
    cam_cfg.source.height_px = 480;
    let rgb640 = SyntheticSource::new(&cam_cfg.source)?.render(0);
    for format in [
        PixelFormat::Yuyv,
        PixelFormat::Nv12,
        PixelFormat::Grey,
        PixelFormat::Rgb24,
        PixelFormat::Mjpeg,
    ] {
        encode_rgb_into(&rgb640, format, &mut frame)?;
        let n = if format == PixelFormat::Mjpeg {
            50
        } else {
            300
        };
        let (mean, p50) = time_conversion(&frame, info.input_w_px, info.input_h_px, n)?;
        println!(
            "convert {:<6} 640x480 → [3,{},{}]: mean {mean:.3} ms  p50 {p50:.3} ms",
            format!("{format:?}"),
            info.input_h_px,
            info.input_w_px
        );
        conv.insert(
            format!("{format:?}").to_lowercase(),
            serde_json::json!(mean),
        );
    }

    // 3. Full pipeline, as fast as the source gives frames (no drops: the
    // source waits for the pipeline, so throughput is the pipeline's).
    let detector = crate::run::load_model(&cfg)?;
    let metrics = Arc::new(Metrics::new(info.names.clone(), vec![]));
    let outputs = Outputs {
        camera: "bench".into(),
        jsonl: None,
        #[cfg(feature = "mqtt")]
        mqtt: None,
        snapshots: None,
        snapshot_quality: 85,
        http: None,
        observer: None,
    };
    // Warm-up frames are part of the run; the rate is measured after them.
    let opener = capture::opener(&cfg.source)?;
    let summary = pipeline::run(
        &cfg,
        opener,
        detector,
        outputs,
        metrics.clone(),
        Arc::new(AtomicBool::new(false)),
    )?;
    let pipeline_fps = summary.frames as f64 / summary.elapsed.as_secs_f64();
    let pct = |p| metrics.latency.recent_percentile(p).unwrap_or(0.0) * 1e3;
    let (p50, p90, p99) = (pct(50.0), pct(90.0), pct(99.0));
    println!(
        "pipeline:        {pipeline_fps:7.1} fps   ({:.2} × model only; {} frames, {} dropped)",
        pipeline_fps / model_fps,
        summary.frames,
        summary.frames_dropped
    );
    println!("  latency capture→published with full queues: p50 {p50:.1} ms  p90 {p90:.1} ms  p99 {p99:.1} ms");
    // The same model alone again: on a shared machine the two runs bracket the pipeline.
    let (model_fps_after, _) = model_only(&mut crate::run::load_model(&cfg)?)?;
    println!(
        "model only again: {model_fps_after:6.1} fps   (pipeline / best model-only: {:.2})",
        pipeline_fps / model_fps.max(model_fps_after)
    );

    // 4. Latency from a live camera at --live-fps (drops instead of queues).
    let mut live_cfg = bench_config(&a)?;
    live_cfg.source.fps = a.live_fps;
    live_cfg.pipeline.max_frames = a.frames.min((a.live_fps * 10.0) as u64).max(10);
    let live_metrics = Arc::new(Metrics::new(info.names.clone(), vec![]));
    let live = pipeline::run(
        &live_cfg,
        capture::opener(&live_cfg.source)?,
        crate::run::load_model(&live_cfg)?,
        Outputs {
            camera: "bench".into(),
            jsonl: None,
            #[cfg(feature = "mqtt")]
            mqtt: None,
            snapshots: None,
            snapshot_quality: 85,
            http: None,
            observer: None,
        },
        live_metrics.clone(),
        Arc::new(AtomicBool::new(false)),
    )?;
    let lpct = |p| live_metrics.latency.recent_percentile(p).unwrap_or(0.0) * 1e3;
    let (l50, l90, l99) = (lpct(50.0), lpct(90.0), lpct(99.0));
    println!(
        "live camera at {} fps: latency p50 {l50:.1} ms  p90 {l90:.1} ms  p99 {l99:.1} ms ({} frames, {} dropped)",
        a.live_fps, live.frames, live.frames_dropped
    );

    // 5. The daemon's own peak memory.
    let rss = if a.no_rss {
        None
    } else {
        let rss = child_peak_rss(&a, &cfg)?;
        println!(
            "peak RSS of `irdistill run` ({} frames): {:.1} MB",
            a.frames,
            rss as f64 / 1e6
        );
        Some(rss)
    };
    let json = serde_json::json!({
        "model": info.path,
        "imgsz": [info.input_h_px, info.input_w_px],
        "threads": threads,
        "model_fps": model_fps,
        "model_p50_ms": percentile(&model_ms, 50.0),
        "pipeline_fps": pipeline_fps,
        "model_fps_after": model_fps_after,
        "pipeline_over_model": pipeline_fps / model_fps.max(model_fps_after),
        "latency_queued_ms": {"p50": p50, "p90": p90, "p99": p99},
        "latency_live_ms": {"fps": a.live_fps, "p50": l50, "p90": l90, "p99": l99, "dropped": live.frames_dropped},
        "convert_640x480_ms": conv,
        "peak_rss_bytes": rss,
    });
    println!("{json}");
    Ok(())
}
