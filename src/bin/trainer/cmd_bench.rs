//! `trainer bench`: time full training steps (forward, loss, backward,
//! optimizer, EMA) on generated data, after warm-up. Prints one JSON
//! object on its last line. A benchmark, not a test: numbers only.

use anyhow::Result;
use irdistill::trainer::train::bench::{time_training_steps, BenchOptions};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// student-p, student-n, teacher-p or teacher-n.
    #[arg(long, default_value = "student-p")]
    pub model: String,
    #[arg(long, default_value_t = 128)]
    pub imgsz: usize,
    #[arg(long, default_value_t = 16)]
    pub batch: usize,
    /// Timed steps (after the warm-up ones).
    #[arg(long, default_value_t = 10)]
    pub steps: usize,
    /// Untimed steps first (allocator and caches settle).
    #[arg(long, default_value_t = 2)]
    pub warmup: usize,
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// candle's own ops instead of irdistill's fast CPU kernels (what they
    /// buy; same as IRDISTILL_REFERENCE_OPS=1).
    #[arg(long)]
    pub reference_ops: bool,
}

pub fn run(a: Args) -> Result<()> {
    if a.reference_ops {
        irdistill::trainer::ops::set_reference_ops(true);
    }
    let timing = time_training_steps(&BenchOptions {
        model: a.model.clone(),
        imgsz: a.imgsz,
        batch: a.batch,
        steps: a.steps,
        warmup: a.warmup,
        device: a.device.clone(),
    })?;
    let mean = timing.mean_ms();
    println!(
        "{}",
        serde_json::json!({
            "model": a.model,
            "imgsz": a.imgsz,
            "batch": a.batch,
            "steps": a.steps,
            "device": a.device,
            "threads": candle_core::utils::get_num_threads(),
            "candle_num_threads": std::env::var("CANDLE_NUM_THREADS").ok(),
            "ops": if irdistill::trainer::ops::reference_ops() { "reference" } else { "fast" },
            "ms_per_step": mean,
            // mean per phase: where a step's time goes
            "forward_ms": timing.forward_ms,
            "loss_ms": timing.loss_ms,
            "backward_ms": timing.backward_ms,
            "optimizer_ms": timing.optimizer_ms,
            "median_ms_per_step": timing.median_ms(),
            "min_ms_per_step": timing.min_ms(),
            "images_per_s": a.batch as f64 * 1e3 / mean,
        })
    );
    Ok(())
}
