//! What a training run is configured with: [`TrainOptions`] (the arguments
//! of `trainer train` / `distill`, stored in every checkpoint so that
//! `--resume` continues with them) and the checks they must pass.

use super::augment::AugmentParams;
use super::loader::LoaderConfig;
use super::optim::OptimizerKind;
use crate::shared::condition::{Condition, Split};
use crate::trainer::distill::DistillOptions;
use crate::trainer::model::Fusion;
use anyhow::{ensure, Context, Result};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// Everything `trainer train` takes (also stored in checkpoints).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrainOptions {
    pub data: String,
    pub model: String,
    pub imgsz: usize,
    pub epochs: usize,
    pub batch: usize,
    pub out: PathBuf,
    pub seed: u64,
    pub optimizer: OptimizerKind,
    pub lr0: f64,
    pub lrf: f64,
    pub weight_decay: f64,
    pub momentum: f64,
    pub warmup_epochs: f64,
    pub workers: usize,
    pub synth_train: usize,
    pub synth_val: usize,
    pub augment: bool,
    /// Split validated on: `val`; `train` checks that the model can fit
    /// its training data (a sanity check when something does not learn).
    #[serde(default = "default_val_split")]
    pub val_split: Split,
    /// Stop after this many epochs in this invocation (the schedule still
    /// spans `epochs`); for tests of `--resume`.
    #[serde(skip)]
    pub stop_after: Option<usize>,
    /// Teachers: how RGB and IR are fused (CCAFusion when absent).
    #[serde(default)]
    pub fusion: Option<Fusion>,
    /// Distill from a frozen teacher (`trainer distill`).
    #[serde(default)]
    pub distill: Option<DistillOptions>,
    /// Each epoch passes over the training pairs this many times (`--repeat`):
    /// a run on a fraction 1/k of the labels with `repeat` k takes as many
    /// optimizer steps, with the same schedule, as one on all of them.
    #[serde(default = "one")]
    pub repeat: usize,
    /// `--data synth`: generate training pairs of only these conditions,
    /// and validation (`--conditions day`: labels by day only, so the
    /// validation labels are day labels too).
    #[serde(default)]
    pub synth_conditions: Option<Vec<Condition>>,
    /// Start from these weights (`--init`: our checkpoint, ultralytics
    /// safetensors or an ONNX export; see `train::pretrained`).
    #[serde(default)]
    pub init: Option<PathBuf>,
}

fn one() -> usize {
    1
}

impl TrainOptions {
    /// How the run's training batches are loaded (size, augmentation,
    /// workers, seed); `with_ir` when a teacher will see the IR image.
    pub(super) fn training_loader(&self, with_ir: bool, shuffle: bool) -> LoaderConfig {
        LoaderConfig {
            batch_size: self.batch,
            imgsz: self.imgsz as u32,
            augment: self.augment.then(AugmentParams::default),
            with_ir,
            shuffle,
            workers: self.workers,
            seed: self.seed,
        }
    }
}

/// Checkpoints written before `val_split` existed validated on `val`.
fn default_val_split() -> Split {
    Split::Val
}

/// Refuses options no run can start with, naming the flag.
pub(super) fn check_options(o: &TrainOptions) -> Result<()> {
    ensure!(
        o.imgsz >= 32 && o.imgsz % 32 == 0,
        "--imgsz {} must be a positive multiple of 32",
        o.imgsz
    );
    ensure!(o.epochs >= 1, "--epochs must be at least 1");
    ensure!(o.batch >= 1, "--batch must be at least 1");
    ensure!(o.lr0 > 0.0 && o.lr0.is_finite(), "--lr0 must be positive");
    ensure!(o.workers >= 1, "--workers must be at least 1");
    ensure!(o.repeat >= 1, "--repeat must be at least 1");
    ensure!(
        o.synth_conditions.is_none() || o.data == "synth",
        "--conditions applies to --data synth only (a dataset's pairs are what they are)"
    );
    if o.data == "synth" {
        ensure!(
            o.synth_train >= 1 && o.synth_val >= 1,
            "--synth-train and --synth-val must be at least 1"
        );
    }
    crate::trainer::model::Scale::by_name(&o.model).context("--model")?;
    Ok(())
}
