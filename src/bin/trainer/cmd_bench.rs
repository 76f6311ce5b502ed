//! `trainer bench`: time full training steps (forward, loss, backward,
//! optimizer, EMA) on generated data, after warm-up. Prints one JSON
//! object on its last line. A benchmark, not a test: numbers only.

use anyhow::{ensure, Result};
use irdistill::trainer::train::optim::OptimizerKind;
use irdistill::trainer::train::options::TrainOptions;
use irdistill::trainer::train::run::Trainer;
use std::time::Instant;

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
    ensure!(a.steps >= 1, "--steps must be at least 1");
    if a.reference_ops {
        irdistill::trainer::ops::set_reference_ops(true);
    }
    let out = tempfile_dir()?;
    let opts = TrainOptions {
        data: "synth".into(),
        model: a.model.clone(),
        imgsz: a.imgsz,
        epochs: 1,
        batch: a.batch,
        out: out.clone(),
        seed: 0,
        optimizer: OptimizerKind::AdamW,
        lr0: 0.002,
        lrf: 0.01,
        weight_decay: 0.0005,
        momentum: 0.9,
        warmup_epochs: 0.0,
        workers: 1,
        synth_train: a.batch,
        synth_val: 1,
        augment: true,
        val_split: irdistill::shared::condition::Split::Val,
        stop_after: None,
        fusion: None,
        distill: None,
    };
    let mut t = Trainer::new(opts, &a.device, false)?;
    // one batch, reused: the data path is not what is measured
    let (batch, _) = t.first_batches()?;
    for _ in 0..a.warmup {
        t.train_step(&batch, None)?;
    }
    let mut step_ms = Vec::with_capacity(a.steps);
    let mut phases = [0.0f64; 4];
    for _ in 0..a.steps {
        let t0 = Instant::now();
        t.train_step(&batch, None)?;
        step_ms.push(t0.elapsed().as_secs_f64() * 1e3);
        let p = t.last_step;
        for (sum, v) in
            phases
                .iter_mut()
                .zip([p.forward_ms, p.loss_ms, p.backward_ms, p.optimizer_ms])
        {
            *sum += v / a.steps as f64;
        }
    }
    let _ = std::fs::remove_dir_all(&out);
    let mean = step_ms.iter().sum::<f64>() / step_ms.len() as f64;
    let mut sorted = step_ms.clone();
    sorted.sort_by(f64::total_cmp);
    let median = sorted[sorted.len() / 2];
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
            "forward_ms": phases[0],
            "loss_ms": phases[1],
            "backward_ms": phases[2],
            "optimizer_ms": phases[3],
            "median_ms_per_step": median,
            "min_ms_per_step": sorted[0],
            "images_per_s": a.batch as f64 * 1e3 / mean,
        })
    );
    Ok(())
}

/// A fresh scratch folder for the run's (unused) outputs.
fn tempfile_dir() -> Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!("irdistill-bench-{}", std::process::id()));
    if dir.exists() {
        std::fs::remove_dir_all(&dir)?;
    }
    Ok(dir)
}
