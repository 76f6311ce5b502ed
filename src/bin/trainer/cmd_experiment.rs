//! `trainer experiment`: baseline vs teacher vs distilled student (and, with
//! `--preset full`, the ablations), evaluated per condition on held-out
//! synthetic test pairs; writes DIR/results.json and DIR/results.md.

use anyhow::Result;
use irdistill::trainer::train::experiment::real::{run_real_experiment, RealOptions};
use irdistill::trainer::train::experiment::{run_experiment, Budget};
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// quick (one seed ≤ 45 min on 2 cores), full (every setting and
    /// ablation at 256 px; hours) or paper (the converged protocol of
    /// docs/results/distill.md: 100 epochs, 1200 test pairs; hours per arm).
    /// A rerun with the same --out continues where the last one stopped.
    /// `real`: real recordings (--pool, --eval), no human labels for
    /// training; see README "Your own recordings".
    #[arg(long, default_value = "quick")]
    pub preset: String,
    /// --preset real: unlabeled RGB+IR pairs to learn from.
    #[arg(long)]
    pub pool: Option<PathBuf>,
    /// --preset real: human-labelled pairs (class person) to score on.
    #[arg(long)]
    pub eval: Option<PathBuf>,
    /// --preset real: a checkpoint trained on generated scenes (arm
    /// synthetic_init).
    #[arg(long)]
    pub synthetic_init: Option<PathBuf>,
    /// --preset real: an ONNX model scored as is (arm bundled), e.g.
    /// models/student-p.onnx.
    #[arg(long)]
    pub bundled: Option<PathBuf>,
    /// Number of seeds (0, 1, …, K-1); mean ± std over them.
    #[arg(long, default_value_t = 1)]
    pub seeds: u64,
    /// First seed (run seeds in parallel processes with disjoint ranges).
    #[arg(long, default_value_t = 0)]
    pub first_seed: u64,
    /// Experiment folder (re-running continues it: finished arms are kept).
    #[arg(long)]
    pub out: PathBuf,
    /// Override the preset's image size.
    #[arg(long)]
    pub imgsz: Option<usize>,
    /// Override the preset's epochs.
    #[arg(long)]
    pub epochs: Option<usize>,
    /// Override the preset's number of training pairs.
    #[arg(long)]
    pub synth_train: Option<usize>,
    /// Override the preset's number of held-out test pairs.
    #[arg(long)]
    pub synth_test: Option<usize>,
    /// Override the preset's number of validation pairs.
    #[arg(long)]
    pub synth_val: Option<usize>,
    #[arg(long)]
    pub batch: Option<usize>,
    #[arg(long)]
    pub workers: Option<usize>,
    /// Train the teacher arms for this many epochs (default: --epochs).
    /// The student arms keep equal budgets.
    #[arg(long)]
    pub teacher_epochs: Option<usize>,
    /// Only these arms (comma-separated, e.g. baseline,distilled), plus the
    /// teachers they need; default: every arm of the preset.
    #[arg(long, value_delimiter = ',')]
    pub arms: Vec<String>,
    /// cpu or cuda.
    #[arg(long, default_value = "cpu")]
    pub device: String,
}

pub fn run(a: Args) -> Result<()> {
    if a.preset == "real" {
        return run_real(a);
    }
    anyhow::ensure!(
        a.pool.is_none() && a.eval.is_none() && a.synthetic_init.is_none() && a.bundled.is_none(),
        "--pool, --eval, --synthetic-init and --bundled are for --preset real"
    );
    let mut b = Budget::preset(&a.preset)?;
    b.imgsz = a.imgsz.unwrap_or(b.imgsz);
    b.epochs = a.epochs.unwrap_or(b.epochs);
    b.synth_train = a.synth_train.unwrap_or(b.synth_train);
    b.synth_test = a.synth_test.unwrap_or(b.synth_test);
    b.synth_val = a.synth_val.unwrap_or(b.synth_val);
    b.batch = a.batch.unwrap_or(b.batch);
    b.workers = a.workers.unwrap_or(b.workers);
    b.teacher_epochs = a.teacher_epochs.or(b.teacher_epochs);
    anyhow::ensure!(a.seeds >= 1, "--seeds must be at least 1");
    let seeds: Vec<u64> = (a.first_seed..a.first_seed + a.seeds).collect();
    let json = run_experiment(&b, &seeds, &a.arms, &a.out, &a.device)?;
    println!(
        "{}",
        serde_json::json!({"out": a.out, "splits": json["splits"], "elapsed_s": json["elapsed_s"]})
    );
    Ok(())
}

fn run_real(a: Args) -> Result<()> {
    let (Some(pool), Some(eval)) = (a.pool, a.eval) else {
        anyhow::bail!("--preset real needs --pool DIR (unlabeled pairs) and --eval DIR (labelled)");
    };
    anyhow::ensure!(
        a.seeds == 1,
        "--preset real runs one seed (--first-seed picks it)"
    );
    let mut o = RealOptions::preset(pool, eval, a.out.clone());
    o.imgsz = a.imgsz.unwrap_or(o.imgsz);
    o.epochs = a.epochs.unwrap_or(o.epochs);
    o.teacher_epochs = a.teacher_epochs.unwrap_or(o.epochs);
    o.batch = a.batch.unwrap_or(o.batch);
    o.workers = a.workers.unwrap_or(o.workers);
    o.seed = a.first_seed;
    o.synthetic_init = a.synthetic_init;
    o.bundled = a.bundled;
    o.only = a.arms;
    o.device = a.device;
    let json = run_real_experiment(&o)?;
    println!(
        "{}",
        serde_json::json!({"out": a.out, "arms": json["arms"]})
    );
    Ok(())
}
