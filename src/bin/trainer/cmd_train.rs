//! `trainer train`: train a student (RGB) or teacher (RGB+IR) detector.

use anyhow::{Context, Result};
use irdistill::trainer::train::optim::OptimizerKind;
use irdistill::trainer::train::options::TrainOptions;
use irdistill::trainer::train::run::train;
use std::path::PathBuf;

#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    /// `synth` (pairs drawn from the generator) or a dataset folder.
    #[arg(long, default_value = "synth")]
    pub data: String,
    /// Model: student-p or student-n (RGB), or teacher-p / teacher-n (RGB+IR).
    #[arg(long, default_value = "student-p")]
    pub model: String,
    /// Teachers: how the RGB and IR streams are fused (default cca).
    #[arg(long, value_enum)]
    pub fusion: Option<irdistill::trainer::model::Fusion>,
    /// Square input size (multiple of 32).
    #[arg(long, default_value_t = 320)]
    pub imgsz: usize,
    #[arg(long, default_value_t = 30)]
    pub epochs: usize,
    #[arg(long, default_value_t = 16)]
    pub batch: usize,
    /// Run folder: results.csv, results.png, last/best.safetensors.
    #[arg(long)]
    pub out: PathBuf,
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Continue the run in --out from its last.safetensors (its own arguments).
    #[arg(long)]
    pub resume: bool,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[arg(long, value_enum, default_value = "adamw")]
    pub optimizer: OptimizerKind,
    /// Initial learning rate (AdamW default as ultralytics' auto for few classes).
    #[arg(long, default_value_t = 0.002)]
    pub lr0: f64,
    /// Final learning rate as a fraction of lr0 (cosine decay).
    #[arg(long, default_value_t = 0.01)]
    pub lrf: f64,
    #[arg(long, default_value_t = 0.0005)]
    pub weight_decay: f64,
    /// AdamW beta1 / SGD momentum.
    #[arg(long, default_value_t = 0.9)]
    pub momentum: f64,
    #[arg(long, default_value_t = 3.0)]
    pub warmup_epochs: f64,
    /// Data worker threads.
    #[arg(long, default_value_t = 2)]
    pub workers: usize,
    /// With --data synth: training pairs (generated once, kept in memory).
    #[arg(long, default_value_t = 2000)]
    pub synth_train: usize,
    /// With --data synth: validation pairs.
    #[arg(long, default_value_t = 300)]
    pub synth_val: usize,
    /// Split to validate on (`train` checks the model can fit its data).
    #[arg(long, default_value = "val")]
    pub val_split: irdistill::shared::condition::Split,
    /// Turn augmentation off (flip, HSV, scale/translate).
    #[arg(long)]
    pub no_augment: bool,
    /// Stop after this many epochs in this invocation (the schedule still
    /// spans --epochs); continue later with --resume.
    #[arg(long, hide = true)]
    pub stop_after: Option<usize>,
    /// Pass over the training pairs this many times per epoch (a run on a
    /// fifth of the labels with --repeat 5 takes the steps of a full one).
    #[arg(long, default_value_t = 1)]
    pub repeat: usize,
    /// --data synth: generate training pairs of only these conditions
    /// (e.g. `day`), validation pairs too.
    #[arg(long, value_name = "LIST")]
    pub conditions: Option<String>,
    /// Start from these weights instead of random ones: one of our
    /// checkpoints, an ultralytics YOLOv8 checkpoint converted to
    /// safetensors (its own names), or an ONNX export. Tensors whose name
    /// and shape match are loaded; the rest are listed in the log.
    #[arg(long, value_name = "WEIGHTS")]
    pub init: Option<PathBuf>,
}

pub fn run(a: Args) -> Result<()> {
    let out = a.out.clone();
    let rows = train(options(a.clone())?, &a.device, a.resume)?;
    print_summary(&rows, &out);
    Ok(())
}

/// The JSON summary line every training command ends with.
pub fn print_summary(rows: &[irdistill::trainer::train::results::EpochRow], out: &std::path::Path) {
    if let Some(last) = rows.last() {
        println!(
            "{}",
            serde_json::json!({
                "epochs": last.epoch,
                "map50": last.map50,
                "map": last.map,
                "images_per_s": last.images_per_s,
                "out": out,
            })
        );
    }
}

/// The library's options for these arguments.
pub fn options(a: Args) -> Result<TrainOptions> {
    anyhow::ensure!(
        a.fusion.is_none() || a.model.starts_with("teacher-"),
        "--fusion applies to teacher-* models only, not {}",
        a.model
    );
    let opts = TrainOptions {
        data: a.data,
        model: a.model,
        imgsz: a.imgsz,
        epochs: a.epochs,
        batch: a.batch,
        out: a.out.clone(),
        seed: a.seed,
        optimizer: a.optimizer,
        lr0: a.lr0,
        lrf: a.lrf,
        weight_decay: a.weight_decay,
        momentum: a.momentum,
        warmup_epochs: a.warmup_epochs,
        workers: a.workers,
        synth_train: a.synth_train,
        synth_val: a.synth_val,
        augment: !a.no_augment,
        val_split: a.val_split,
        stop_after: a.stop_after,
        fusion: a.fusion,
        distill: None,
        repeat: a.repeat,
        synth_conditions: a
            .conditions
            .as_deref()
            .map(irdistill::shared::condition::parse_conditions)
            .transpose()
            .context("--conditions")?,
        init: a.init,
    };
    Ok(opts)
}
