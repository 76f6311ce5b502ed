//! Batches prepared on worker threads so the model never waits for data.
//!
//! Worker `k` of `W` builds batches `k, k+W, k+2W, …` and hands them over a
//! bounded channel of its own; the consumer takes them round-robin. The
//! batch order and contents therefore depend only on (seed, epoch), never
//! on thread timing — which `--resume` relies on.

use super::augment::{prepare, AugmentParams};
use super::source::PairSource;
use crate::shared::bbox::Label;
use crate::shared::condition::Condition;
use crate::shared::synth::noise::mix64;
use anyhow::{Context, Result};
use crossbeam_channel::{bounded, Receiver};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use std::sync::Arc;
use std::thread::JoinHandle;

/// A batch of model inputs.
pub struct Batch {
    /// `[B, 3, S, S]`, 0..1.
    pub rgb: Vec<f32>,
    /// `[B, 1, S, S]` when IR was asked for.
    pub ir: Option<Vec<f32>>,
    /// Per image, in input pixels.
    pub labels: Vec<Vec<Label>>,
    pub conditions: Vec<Option<Condition>>,
    pub size: usize,
}

impl Batch {
    pub fn len(&self) -> usize {
        self.labels.len()
    }
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }
}

#[derive(Clone)]
pub struct LoaderConfig {
    pub batch_size: usize,
    pub imgsz: u32,
    pub augment: Option<AugmentParams>,
    pub with_ir: bool,
    pub shuffle: bool,
    pub workers: usize,
    pub seed: u64,
}

/// The batches of one epoch, in order.
pub struct EpochLoader {
    receivers: Vec<Receiver<Result<Batch>>>,
    next: usize,
    skip: usize,
    total: usize,
    workers: Vec<JoinHandle<()>>,
}

/// Sample order of an epoch: shuffled by (seed, epoch) when asked.
pub fn epoch_order(len: usize, seed: u64, epoch: usize, shuffle: bool) -> Vec<usize> {
    let mut order: Vec<usize> = (0..len).collect();
    if shuffle {
        let mut rng = ChaCha8Rng::seed_from_u64(mix64(seed ^ mix64(epoch as u64 + 0x51)));
        order.shuffle(&mut rng);
    }
    order
}

pub fn batches_per_epoch(len: usize, batch_size: usize) -> usize {
    len.div_ceil(batch_size)
}

impl EpochLoader {
    /// Starts the workers for `epoch`, skipping its first `skip` batches.
    pub fn start(
        source: Arc<dyn PairSource>,
        cfg: &LoaderConfig,
        epoch: usize,
        skip: usize,
    ) -> Self {
        let order = Arc::new(epoch_order(source.len(), cfg.seed, epoch, cfg.shuffle));
        let total = batches_per_epoch(source.len(), cfg.batch_size);
        let n_workers = cfg.workers.max(1);
        let mut receivers = Vec::new();
        let mut workers = Vec::new();
        for k in 0..n_workers {
            let (tx, rx) = bounded(2);
            receivers.push(rx);
            let (source, order, cfg) = (source.clone(), order.clone(), cfg.clone());
            workers.push(std::thread::spawn(move || {
                let mut b = skip + k;
                while b < total {
                    let batch = build_batch(&*source, &order, &cfg, epoch, b);
                    if tx.send(batch).is_err() {
                        return; // the consumer stopped early
                    }
                    b += n_workers;
                }
            }));
        }
        Self {
            receivers,
            next: skip,
            skip,
            total,
            workers,
        }
    }
}

impl Iterator for EpochLoader {
    type Item = Result<Batch>;
    fn next(&mut self) -> Option<Result<Batch>> {
        if self.next >= self.total {
            return None;
        }
        let rx = &self.receivers[(self.next - self.skip) % self.receivers.len()];
        self.next += 1;
        Some(
            rx.recv()
                .context("data worker stopped unexpectedly")
                .and_then(|r| r),
        )
    }
}

impl Drop for EpochLoader {
    fn drop(&mut self) {
        self.receivers.clear(); // unblocks workers waiting to send
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

fn build_batch(
    source: &dyn PairSource,
    order: &[usize],
    cfg: &LoaderConfig,
    epoch: usize,
    b: usize,
) -> Result<Batch> {
    let s = cfg.imgsz as usize;
    let members = &order[b * cfg.batch_size..((b + 1) * cfg.batch_size).min(order.len())];
    let mut batch = Batch {
        rgb: Vec::with_capacity(members.len() * 3 * s * s),
        ir: cfg
            .with_ir
            .then(|| Vec::with_capacity(members.len() * s * s)),
        labels: Vec::new(),
        conditions: Vec::new(),
        size: s,
    };
    for &i in members {
        let pair = source.load(i)?;
        // per-sample RNG: the same augmentation whatever worker runs it
        let mut rng =
            ChaCha8Rng::seed_from_u64(mix64(cfg.seed ^ mix64((epoch as u64) << 32 | i as u64)));
        let sample = prepare(
            &pair,
            cfg.imgsz,
            cfg.augment.as_ref(),
            cfg.with_ir,
            &mut rng,
        );
        batch.rgb.extend_from_slice(&sample.rgb);
        if let (Some(dst), Some(ir)) = (batch.ir.as_mut(), sample.ir) {
            dst.extend_from_slice(&ir);
        }
        batch.labels.push(sample.labels);
        batch.conditions.push(sample.condition);
    }
    Ok(batch)
}

#[cfg(test)]
mod tests {
    use super::super::source::InMemory;
    use super::*;
    use crate::shared::synth::{Generator, SynthConfig};

    fn source(n: u64) -> Arc<dyn PairSource> {
        let mut config = SynthConfig::default();
        config.scene.width_px = 64;
        config.scene.height_px = 48;
        let gen = Generator::new(config, 1).unwrap();
        Arc::new(InMemory((0..n).map(|i| gen.pair(i).pair).collect()))
    }

    #[test]
    fn batches_are_deterministic_whatever_the_worker_count() {
        let src = source(10);
        let cfg = |workers| LoaderConfig {
            batch_size: 3,
            imgsz: 32,
            augment: Some(AugmentParams::default()),
            with_ir: true,
            shuffle: true,
            workers,
            seed: 4,
        };
        let a: Vec<Batch> = EpochLoader::start(src.clone(), &cfg(1), 2, 0)
            .map(|b| b.unwrap())
            .collect();
        let b: Vec<Batch> = EpochLoader::start(src.clone(), &cfg(3), 2, 0)
            .map(|b| b.unwrap())
            .collect();
        assert_eq!(a.len(), 4);
        assert_eq!(a.last().unwrap().len(), 1);
        for (x, y) in a.iter().zip(&b) {
            assert_eq!(x.rgb, y.rgb);
            assert_eq!(x.ir, y.ir);
            assert_eq!(x.labels, y.labels);
        }
        // skipping resumes mid-epoch with the same batches, in order
        let c: Vec<Batch> = EpochLoader::start(src.clone(), &cfg(2), 2, 1)
            .map(|b| b.unwrap())
            .collect();
        assert_eq!(c.len(), 3);
        for (k, batch) in c.iter().enumerate() {
            assert_eq!(batch.rgb, a[k + 1].rgb);
        }
        // another epoch is another order
        let d: Vec<Batch> = EpochLoader::start(src, &cfg(2), 3, 0)
            .map(|b| b.unwrap())
            .collect();
        assert_ne!(d[0].rgb, a[0].rgb);
    }

    #[test]
    fn dropping_early_stops_the_workers() {
        let cfg = LoaderConfig {
            batch_size: 1,
            imgsz: 16,
            augment: None,
            with_ir: false,
            shuffle: false,
            workers: 2,
            seed: 0,
        };
        let mut loader = EpochLoader::start(source(8), &cfg, 0, 0);
        assert!(loader.next().is_some());
        drop(loader); // must not hang
    }
}
