//! `irdistill bench`: prints numbers, asserts nothing. Model-only
//! throughput, conversion time per frame, full-pipeline throughput and
//! latency percentiles, and the daemon's peak resident memory (measured on
//! a child `irdistill run`, so the bench's own buffers do not count). The
//! measurements are `irdistill::device::bench`; this file holds the flags
//! and the printing.

use std::path::PathBuf;

use anyhow::Result;
use irdistill::device::bench::{
    bench_config, camera_scene, child_peak_rss, live_config, model_input, run_pipeline,
    slowest_ops, time_camera_format, time_model, warm_up, BenchOptions, ModelTiming, PipelineRun,
    CAMERA_FORMATS,
};
use irdistill::device::config::Config;
use irdistill::device::daemon::load_model;
use irdistill::device::infer::ModelInfo;

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
    /// Inference threads (default: auto, the fastest count timed at load).
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

impl Args {
    fn options(&self) -> BenchOptions {
        BenchOptions {
            model: self.model.clone(),
            source: self.source.clone(),
            frames: self.frames,
            threads: self.threads,
            live_fps: self.live_fps,
        }
    }
}

/// The model-only numbers: before the pipeline run and again after it (on
/// a shared machine the two runs bracket the pipeline).
struct ModelRuns {
    before: ModelTiming,
    after_fps: f64,
}

impl ModelRuns {
    fn best_fps(&self) -> f64 {
        self.before.fps.max(self.after_fps)
    }
}

/// Everything measured, for the closing JSON.
struct Results {
    model: ModelRuns,
    queued: PipelineRun,
    live: PipelineRun,
    /// Mean conversion milliseconds by lowercase format name.
    conv: serde_json::Map<String, serde_json::Value>,
    /// Peak RSS of the child run; none with `--no-rss`.
    rss: Option<u64>,
}

pub fn bench(a: Args) -> Result<()> {
    let o = a.options();
    let cfg = bench_config(&o)?;
    let mut detector = load_model(&cfg)?;
    let info = detector.info().clone();
    print_model_header(&info);

    // 1. Model only: a real letterboxed frame, repeated.
    let tensor = model_input(&cfg, &info)?;
    warm_up(&mut detector, &tensor)?;
    let before = time_model(&mut detector, &tensor, a.frames)?;
    println!(
        "model only:      {:7.1} fps   p50 {:.2} ms  p90 {:.2} ms",
        before.fps,
        before.percentile_ms(50.0),
        before.percentile_ms(90.0)
    );
    if a.profile {
        println!("tract time per operator kind (per frame):");
        for (op, s, nodes) in slowest_ops(&mut detector, &tensor)? {
            println!("  {op:<28} {:7.2} ms  ({nodes} nodes)", s * 1e3);
        }
    }
    drop(detector);

    // 2. Conversion per frame, 640x480 in each camera format.
    let conv = bench_conversions(&o, &info)?;

    // 3. Full pipeline, as fast as the source gives frames (no drops: the
    // source waits for the pipeline, so throughput is the pipeline's).
    let queued = run_pipeline(&cfg)?;
    print_queued_run(&queued, before.fps);
    let after = time_model(&mut load_model(&cfg)?, &tensor, a.frames)?;
    let model = ModelRuns {
        before,
        after_fps: after.fps,
    };
    println!(
        "model only again: {:6.1} fps   (pipeline / best model-only: {:.2})",
        model.after_fps,
        queued.fps() / model.best_fps()
    );

    // 4. Latency from a live camera at --live-fps (drops instead of queues).
    let live = run_pipeline(&live_config(&o)?)?;
    print_live_run(&live, a.live_fps);

    // 5. The daemon's own peak memory.
    let rss = peak_rss(&a, &o, &cfg)?;
    let results = Results {
        model,
        queued,
        live,
        conv,
        rss,
    };
    println!("{}", summary_json(&info, &results, a.live_fps));
    Ok(())
}

fn print_model_header(info: &ModelInfo) {
    println!(
        "model {} ({}x{}, {} classes, {} anchors), {} inference threads, {} cores",
        info.path.display(),
        info.input_w_px,
        info.input_h_px,
        info.nc(),
        info.anchors,
        info.threads,
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    for (t, ms) in &info.thread_timings_ms {
        println!("  model.threads auto: {t} threads {ms:.2} ms per run (median at load)");
    }
}

/// Prints each camera format's conversion time; returns the means in ms
/// by lowercase format name.
fn bench_conversions(
    o: &BenchOptions,
    info: &ModelInfo,
) -> Result<serde_json::Map<String, serde_json::Value>> {
    let mut conv = serde_json::Map::new();
    let scene = camera_scene(o)?;
    for (format, n) in CAMERA_FORMATS {
        let t = time_camera_format(&scene, format, n, info.input_w_px, info.input_h_px)?;
        println!(
            "convert {:<6} 640x480 → [3,{},{}]: mean {:.3} ms  p50 {:.3} ms",
            format!("{format:?}"),
            info.input_h_px,
            info.input_w_px,
            t.mean_ms,
            t.p50_ms
        );
        conv.insert(
            format!("{format:?}").to_lowercase(),
            serde_json::json!(t.mean_ms),
        );
    }
    #[cfg(feature = "rtsp")]
    {
        // An RTSP camera decodes every frame before conversion (P-frames
        // need their predecessors, so no frame can be skipped).
        let scenes = irdistill::device::bench::panning_scenes(&scene, 60);
        let ms = irdistill::device::capture::rtsp::time_h264_decode(&scenes, 3)?;
        let mean = ms.iter().sum::<f64>() / ms.len() as f64;
        println!(
            "decode H.264 640x480 (RTSP, key frame + 59 P-frames): mean {mean:.3} ms  p50 {:.3} ms  p99 {:.3} ms per frame ({:.0} fps on one core)",
            irdistill::device::bench::percentile(&ms, 50.0),
            irdistill::device::bench::percentile(&ms, 99.0),
            1e3 / mean
        );
        conv.insert("h264_decode".into(), serde_json::json!(mean));
    }
    Ok(conv)
}

fn print_queued_run(run: &PipelineRun, model_fps: f64) {
    let pipeline_fps = run.fps();
    println!(
        "pipeline:        {pipeline_fps:7.1} fps   ({:.2} × model only; {} frames, {} dropped)",
        pipeline_fps / model_fps,
        run.summary.frames,
        run.summary.frames_dropped
    );
    let l = run.latency;
    println!(
        "  latency capture→published with full queues: p50 {:.1} ms  p90 {:.1} ms  p99 {:.1} ms",
        l.p50, l.p90, l.p99
    );
}

fn print_live_run(run: &PipelineRun, live_fps: f32) {
    let l = run.latency;
    println!(
        "live camera at {} fps: latency p50 {:.1} ms  p90 {:.1} ms  p99 {:.1} ms ({} frames, {} dropped)",
        live_fps, l.p50, l.p90, l.p99, run.summary.frames, run.summary.frames_dropped
    );
}

/// The child run's peak RSS, printed; none with `--no-rss`.
fn peak_rss(a: &Args, o: &BenchOptions, cfg: &Config) -> Result<Option<u64>> {
    if a.no_rss {
        return Ok(None);
    }
    let rss = child_peak_rss(o, cfg)?;
    println!(
        "peak RSS of `irdistill run` ({} frames): {:.1} MB",
        a.frames,
        rss as f64 / 1e6
    );
    Ok(Some(rss))
}

/// The one-line JSON every bench ends with (its fields are read by scripts).
fn summary_json(info: &ModelInfo, r: &Results, live_fps: f32) -> serde_json::Value {
    let Results {
        model,
        queued,
        live,
        conv,
        rss,
    } = r;
    let (q, l) = (queued.latency, live.latency);
    serde_json::json!({
        "model": info.path,
        "imgsz": [info.input_h_px, info.input_w_px],
        "threads": info.threads,
        "thread_timings_ms": info.thread_timings_ms,
        "model_fps": model.before.fps,
        "model_p50_ms": model.before.percentile_ms(50.0),
        "pipeline_fps": queued.fps(),
        "model_fps_after": model.after_fps,
        "pipeline_over_model": queued.fps() / model.best_fps(),
        "latency_queued_ms": {"p50": q.p50, "p90": q.p90, "p99": q.p99},
        "latency_live_ms": {"fps": live_fps, "p50": l.p50, "p90": l.p90, "p99": l.p99, "dropped": live.summary.frames_dropped},
        "convert_640x480_ms": conv,
        "peak_rss_bytes": rss,
    })
}
