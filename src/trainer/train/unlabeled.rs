//! The unlabeled RGB+IR pairs of a distillation run as a stream of batches,
//! one per optimizer step, so that `L_distill` also learns from pairs that
//! have no labels.

use super::loader::{batches_per_epoch, Batch, EpochLoader, LoaderConfig};
use super::options::TrainOptions;
use super::source::PairSource;
use anyhow::{Context, Result};
use std::sync::Arc;

/// The unlabeled pairs' batches, one per optimizer step, cycling through
/// epochs of their own. Batch k of the stream goes with optimizer step k,
/// so a resumed run continues where it stopped.
pub(super) struct UnlabeledStream {
    source: Arc<dyn PairSource>,
    cfg: LoaderConfig,
    per_epoch: u64,
    loader: Option<(u64, EpochLoader)>,
}

impl UnlabeledStream {
    pub(super) fn new(source: Arc<dyn PairSource>, opts: &TrainOptions) -> Self {
        let cfg = LoaderConfig {
            // a stream of its own, not the labeled pairs' order
            seed: opts.seed ^ 0x0a1b,
            ..opts.training_loader(true, true)
        };
        let per_epoch = batches_per_epoch(source.len(), opts.batch).max(1) as u64;
        Self {
            source,
            cfg,
            per_epoch,
            loader: None,
        }
    }

    /// The batch for optimizer step `step`.
    pub(super) fn next(&mut self, step: u64) -> Result<Batch> {
        let epoch = step / self.per_epoch;
        if self.loader.as_ref().map(|(e, _)| *e) != Some(epoch) {
            let skip = (step % self.per_epoch) as usize;
            let loader = EpochLoader::start(self.source.clone(), &self.cfg, epoch as usize, skip);
            self.loader = Some((epoch, loader));
        }
        let (_, loader) = self.loader.as_mut().expect("started above");
        match loader.next() {
            Some(b) => b.context("loading unlabeled pairs"),
            None => {
                // the epoch ran out early (a step skipped): start the next one
                self.loader = None;
                self.next((epoch + 1) * self.per_epoch)
            }
        }
    }
}
