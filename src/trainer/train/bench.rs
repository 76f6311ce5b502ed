//! `trainer bench`: full training steps (forward, loss, backward,
//! optimizer, EMA) timed on one generated batch after warm-up steps. The
//! data path is not what is measured, so the batch is reused.

use super::optim::OptimizerKind;
use super::options::TrainOptions;
use super::run::Trainer;
use crate::shared::condition::Split;
use anyhow::{ensure, Result};
use std::path::PathBuf;
use std::time::Instant;

/// What to time.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// student-p, student-n, teacher-p or teacher-n.
    pub model: String,
    pub imgsz: usize,
    pub batch: usize,
    /// Timed steps (after the warm-up ones).
    pub steps: usize,
    /// Untimed steps first (allocator and caches settle).
    pub warmup: usize,
    pub device: String,
}

/// The timed steps, in milliseconds.
#[derive(Debug, Clone)]
pub struct StepTiming {
    /// Each timed step, in order.
    pub step_ms: Vec<f64>,
    /// Mean per phase over the timed steps: where a step's time goes.
    pub forward_ms: f64,
    pub loss_ms: f64,
    pub backward_ms: f64,
    pub optimizer_ms: f64,
}

impl StepTiming {
    pub fn mean_ms(&self) -> f64 {
        self.step_ms.iter().sum::<f64>() / self.step_ms.len() as f64
    }

    /// The upper median (the middle of an odd count).
    pub fn median_ms(&self) -> f64 {
        let sorted = self.sorted_ms();
        sorted[sorted.len() / 2]
    }

    pub fn min_ms(&self) -> f64 {
        self.sorted_ms()[0]
    }

    fn sorted_ms(&self) -> Vec<f64> {
        let mut sorted = self.step_ms.clone();
        sorted.sort_by(f64::total_cmp);
        sorted
    }
}

/// Times `o.steps` training steps after `o.warmup` untimed ones.
pub fn time_training_steps(o: &BenchOptions) -> Result<StepTiming> {
    ensure!(o.steps >= 1, "--steps must be at least 1");
    let out = scratch_dir()?;
    let mut t = Trainer::new(bench_run_options(o, out.clone()), &o.device, false)?;
    // one batch, reused: the data path is not what is measured
    let (batch, _) = t.first_batches()?;
    for _ in 0..o.warmup {
        t.train_step(&batch, None)?;
    }
    let mut timing = StepTiming {
        step_ms: Vec::with_capacity(o.steps),
        forward_ms: 0.0,
        loss_ms: 0.0,
        backward_ms: 0.0,
        optimizer_ms: 0.0,
    };
    for _ in 0..o.steps {
        let t0 = Instant::now();
        t.train_step(&batch, None)?;
        timing.step_ms.push(t0.elapsed().as_secs_f64() * 1e3);
        let p = t.last_step;
        let n = o.steps as f64;
        timing.forward_ms += p.forward_ms / n;
        timing.loss_ms += p.loss_ms / n;
        timing.backward_ms += p.backward_ms / n;
        timing.optimizer_ms += p.optimizer_ms / n;
    }
    let _ = std::fs::remove_dir_all(&out);
    Ok(timing)
}

/// A one-epoch run on generated data holding exactly one batch.
fn bench_run_options(o: &BenchOptions, out: PathBuf) -> TrainOptions {
    TrainOptions {
        data: "synth".into(),
        model: o.model.clone(),
        imgsz: o.imgsz,
        epochs: 1,
        batch: o.batch,
        out,
        seed: 0,
        optimizer: OptimizerKind::AdamW,
        lr0: 0.002,
        lrf: 0.01,
        weight_decay: 0.0005,
        momentum: 0.9,
        warmup_epochs: 0.0,
        workers: 1,
        synth_train: o.batch,
        synth_val: 1,
        augment: true,
        val_split: Split::Val,
        stop_after: None,
        fusion: None,
        distill: None,
        repeat: 1,
        synth_conditions: None,
        init: None,
    }
}

/// A fresh scratch folder for the run's (unused) outputs.
fn scratch_dir() -> Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("irdistill-bench-{}", std::process::id()));
    if dir.exists() {
        std::fs::remove_dir_all(&dir)?;
    }
    Ok(dir)
}
