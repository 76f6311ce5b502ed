//! Continuing a run (`--resume`) or refusing to start one over another:
//! `last.safetensors` gives back the run's own arguments, its weights, EMA,
//! distiller heads and optimizer state, and results.csv the rows so far.

use super::ema::Ema;
use super::optim::Optimizer;
use super::options::TrainOptions;
use super::results::{read_results_csv, EpochRow};
use super::vars::load_into;
use crate::trainer::checkpoint::{self, Checkpoint, Progress};
use crate::trainer::distill::Distiller;
use crate::trainer::model::ModelConfig;
use anyhow::{bail, ensure, Context, Result};
use candle_core::Device;
use candle_nn::VarMap;
use std::path::{Path, PathBuf};

/// The run folder's file a resumed run continues from.
pub(super) fn last_checkpoint(out: &Path) -> PathBuf {
    out.join("last.safetensors")
}

/// A fresh run refuses a folder that already holds one.
pub(super) fn ensure_no_run_in(out: &Path) -> Result<()> {
    for f in ["last.safetensors", "best.safetensors", "results.csv"] {
        if out.join(f).exists() {
            bail!("{} already holds a run ({f}); pass --resume to continue it or choose another --out", out.display());
        }
    }
    Ok(())
}

/// A run's last checkpoint, read for `--resume`.
pub(super) struct Resumed {
    /// `last.safetensors`, named in errors.
    path: PathBuf,
    ckpt: Checkpoint,
    progress: Progress,
}

/// Where the epoch loop starts: nothing done, or where a resumed run stopped.
pub(super) struct RunProgress {
    pub epochs_done: usize,
    pub best_fitness: f64,
    /// results.csv's rows of the epochs done.
    pub rows: Vec<EpochRow>,
}

impl RunProgress {
    pub(super) fn fresh() -> Self {
        Self {
            epochs_done: 0,
            best_fitness: f64::NEG_INFINITY,
            rows: Vec::new(),
        }
    }
}

impl Resumed {
    /// Reads `last.safetensors` of `given.out`; returns the options the run
    /// continues with: its own stored ones, except the stop point and the
    /// folder (it may have moved since), which are `given`'s.
    pub(super) fn load(given: TrainOptions, device: &Device) -> Result<(TrainOptions, Resumed)> {
        let path = last_checkpoint(&given.out);
        let ckpt = checkpoint::load(&path, device)
            .with_context(|| format!("--resume: cannot resume from {}", path.display()))?;
        let progress = ckpt
            .meta
            .progress
            .clone()
            .with_context(|| format!("{} holds no training progress", path.display()))?;
        let mut opts: TrainOptions = serde_json::from_value(progress.args.clone())
            .context("--resume: stored training arguments")?;
        opts.stop_after = given.stop_after;
        opts.out = given.out;
        Ok((
            opts,
            Resumed {
                path,
                ckpt,
                progress,
            },
        ))
    }

    /// Sets the model's weights, the EMA's averages, the distiller's heads
    /// and the optimizer's state to the checkpoint's, after checking that it
    /// holds the model `cfg` describes.
    pub(super) fn restore(
        &self,
        cfg: &ModelConfig,
        varmap: &VarMap,
        ema: &mut Ema,
        distiller: Option<&Distiller>,
        optimizer: &mut Optimizer,
    ) -> Result<()> {
        let (ckpt, progress, what) = (&self.ckpt, &self.progress, self.path.display());
        ensure!(
            ckpt.meta.config == *cfg,
            "--resume: the checkpoint's model ({:?}) differs from the data's ({:?})",
            ckpt.meta.config,
            cfg
        );
        load_into(varmap, &ckpt.group("model"), &what.to_string())?;
        let ema_tensors = ckpt.group("ema");
        for (name, _, avg) in ema.entries.iter_mut() {
            *avg = ema_tensors
                .get(name)
                .with_context(|| format!("{what} lacks ema.{name}"))?
                .clone();
        }
        ema.updates = progress.ema_updates;
        if let Some(d) = distiller {
            load_into(&d.heads, &ckpt.group("distill"), &what.to_string())?;
        }
        optimizer.load_state(&ckpt.tensors, progress.optimizer_step)?;
        Ok(())
    }

    /// The epochs done, the best fitness so far and results.csv's rows of
    /// those epochs in the run folder `out`.
    pub(super) fn progress(&self, out: &Path) -> Result<RunProgress> {
        let epochs_done = self.progress.epochs_done;
        let rows = read_results_csv(&out.join("results.csv"), epochs_done)?;
        tracing::info!("resuming {} after epoch {epochs_done}", out.display());
        Ok(RunProgress {
            epochs_done,
            best_fitness: self.progress.best_fitness,
            rows,
        })
    }
}
