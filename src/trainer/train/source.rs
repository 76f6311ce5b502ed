//! Where training and validation pairs come from: a dataset on disk, or the
//! scene generator (`--data synth`), behind one small interface.

use crate::shared::condition::{parse_conditions, Condition, Split};
use crate::shared::data::Dataset;
use crate::shared::pair::FramePair;
use crate::shared::synth::{Generator, SynthConfig};
use anyhow::{Context, Result};
use rayon::prelude::*;
use std::path::Path;
use std::sync::Arc;

/// An indexable set of pairs.
pub trait PairSource: Send + Sync {
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    fn load(&self, index: usize) -> Result<FramePair>;
}

/// Pairs held in memory (generated ones: generating is slower than copying).
pub struct InMemory(pub Vec<FramePair>);

impl PairSource for InMemory {
    fn len(&self) -> usize {
        self.0.len()
    }
    fn load(&self, index: usize) -> Result<FramePair> {
        Ok(self.0[index].clone())
    }
}

/// One split of a dataset on disk; images decoded on demand.
pub struct DatasetSplit {
    pub dataset: Arc<Dataset>,
    pub indices: Vec<usize>,
}

impl PairSource for DatasetSplit {
    fn len(&self) -> usize {
        self.indices.len()
    }
    fn load(&self, index: usize) -> Result<FramePair> {
        self.dataset
            .load_pair(&self.dataset.samples[self.indices[index]])
    }
}

/// The first `count` generator indices whose split is `split`.
pub fn synth_indices(split: Split, count: usize) -> Vec<u64> {
    (0u64..)
        .filter(|&i| Generator::split_of(i) == split)
        .take(count)
        .collect()
}

/// Generates `count` pairs of `split` in memory, on all cores.
pub fn synth_split(gen: &Generator, split: Split, count: usize) -> InMemory {
    let pairs = synth_indices(split, count)
        .into_par_iter()
        .map(|i| gen.pair(i).pair)
        .collect();
    InMemory(pairs)
}

/// Indices of the samples of `dataset` in `split`.
fn split_indices(dataset: &Dataset, split: Split) -> Vec<usize> {
    dataset
        .samples
        .iter()
        .enumerate()
        .filter(|(_, s)| s.split == split)
        .map(|(i, _)| i)
        .collect()
}

/// Training data as named by `--data`: `synth` or a folder.
pub struct DataSpec {
    pub names: Vec<String>,
    pub train: Arc<dyn PairSource>,
    pub val: Arc<dyn PairSource>,
    /// Human-readable provenance, stored in checkpoints and exports.
    pub description: String,
}

/// Sizes of the generated sets for `--data synth`.
#[derive(Debug, Clone, Copy)]
pub struct SynthSizes {
    pub train: usize,
    pub val: usize,
    pub seed: u64,
}

/// A source whose pairs are passed over `times` times in a row: an epoch
/// of a labeled subset then has as many steps as one of the full set, so
/// every arm of an experiment gets the same number of optimizer steps.
pub struct Repeated {
    pub inner: Arc<dyn PairSource>,
    pub times: usize,
}

impl PairSource for Repeated {
    fn len(&self) -> usize {
        self.inner.len() * self.times
    }
    fn load(&self, index: usize) -> Result<FramePair> {
        self.inner.load(index % self.inner.len())
    }
}

/// Opens `--data` (`synth` or a dataset folder) for training.
/// `train_conditions`: generated training and validation pairs of only
/// these conditions (labels by day only: the validation labels a user has
/// are day labels too).
pub fn open_data(
    data: &str,
    synth: SynthSizes,
    val_split: Split,
    train_conditions: Option<&[Condition]>,
) -> Result<DataSpec> {
    if data == "synth" {
        let config = SynthConfig {
            conditions: train_conditions.map_or(Condition::ALL.to_vec(), |c| c.to_vec()),
            ..SynthConfig::default()
        };
        let gen = Generator::new(config, synth.seed)?;
        let only = train_conditions.map_or(String::new(), |c| {
            let names: Vec<&str> = c.iter().map(|c| c.as_str()).collect();
            format!(", {} only", names.join("+"))
        });
        return Ok(DataSpec {
            names: Generator::names(),
            train: Arc::new(synth_split(&gen, Split::Train, synth.train)),
            val: Arc::new(synth_split(&gen, val_split, synth.val)),
            description: format!(
                "synth seed {} ({} train pairs{only})",
                synth.seed, synth.train
            ),
        });
    }
    anyhow::ensure!(
        train_conditions.is_none(),
        "--data {data}: training conditions can only be chosen for --data synth"
    );
    let dataset =
        Arc::new(Dataset::open(Path::new(data)).with_context(|| format!("--data {data}"))?);
    let (train, val) = (
        split_indices(&dataset, Split::Train),
        split_indices(&dataset, val_split),
    );
    anyhow::ensure!(
        !train.is_empty(),
        "--data {data}: no training images (split 'train' is empty)"
    );
    anyhow::ensure!(
        !val.is_empty(),
        "--data {data}: split '{val_split}' is empty"
    );
    Ok(DataSpec {
        names: dataset.names.clone(),
        description: format!(
            "{} ({} layout, {} train pairs)",
            data,
            dataset.layout,
            train.len()
        ),
        train: Arc::new(DatasetSplit {
            dataset: dataset.clone(),
            indices: train,
        }),
        val: Arc::new(DatasetSplit {
            dataset,
            indices: val,
        }),
    })
}

/// Opens only the evaluation split of `--data` (for `trainer val`).
pub fn open_eval_split(
    data: &str,
    split: Split,
    synth: SynthSizes,
) -> Result<(Vec<String>, Arc<dyn PairSource>)> {
    if data == "synth" {
        let gen = Generator::new(SynthConfig::default(), synth.seed)?;
        return Ok((
            Generator::names(),
            Arc::new(synth_split(&gen, split, synth.val)),
        ));
    }
    let dataset =
        Arc::new(Dataset::open(Path::new(data)).with_context(|| format!("--data {data}"))?);
    let indices = split_indices(&dataset, split);
    anyhow::ensure!(
        !indices.is_empty(),
        "--data {data}: split '{split}' is empty"
    );
    Ok((
        dataset.names.clone(),
        Arc::new(DatasetSplit { dataset, indices }),
    ))
}

/// Every pair of the dataset folder `data`, whatever its split: a small
/// human-labelled evaluation set (`trainer val --all`).
pub fn open_all_pairs(data: &str) -> Result<(Vec<String>, Arc<dyn PairSource>)> {
    let dataset =
        Arc::new(Dataset::open(Path::new(data)).with_context(|| format!("--data {data}"))?);
    let indices = (0..dataset.samples.len()).collect();
    Ok((
        dataset.names.clone(),
        Arc::new(DatasetSplit { dataset, indices }),
    ))
}

impl PairSource for crate::shared::data::UnlabeledPairs {
    fn len(&self) -> usize {
        crate::shared::data::UnlabeledPairs::len(self)
    }
    fn load(&self, index: usize) -> Result<FramePair> {
        crate::shared::data::UnlabeledPairs::load(self, index)
    }
}

/// `--unlabeled`: `synth:N` (N training-split pairs of the generator with
/// `seed`, after the `labeled` ones the labeled set uses, so the two never
/// overlap), `synth:N:CONDITIONS` (N pairs of only those conditions, e.g.
/// `synth:800:night,fog`, from the generator with `seed + 1`: other scenes
/// than the labeled ones) or a folder of RGB+IR pairs. Labels are dropped
/// either way.
pub fn open_unlabeled(spec: &str, seed: u64, labeled: usize) -> Result<Arc<dyn PairSource>> {
    if let Some(rest) = spec.strip_prefix("synth:") {
        let (n, conditions) = match rest.split_once(':') {
            None => (rest, None),
            Some((n, c)) => (
                n,
                Some(parse_conditions(c).with_context(|| format!("--unlabeled {spec}"))?),
            ),
        };
        let n: usize = n.parse().ok().filter(|&n| n > 0).with_context(|| {
            format!("--unlabeled {spec}: expected synth:N or synth:N:CONDITIONS with N ≥ 1")
        })?;
        let (gen, labeled) = match conditions {
            None => (Generator::new(SynthConfig::default(), seed)?, labeled),
            Some(conditions) => {
                let config = SynthConfig {
                    conditions,
                    ..SynthConfig::default()
                };
                (Generator::new(config, seed.wrapping_add(1))?, 0)
            }
        };
        let pairs = synth_indices(Split::Train, labeled + n)
            .into_par_iter()
            .skip(labeled)
            .map(|i| {
                let mut p = gen.pair(i).pair;
                p.labels.clear();
                p
            })
            .collect();
        return Ok(Arc::new(InMemory(pairs)));
    }
    let pairs = crate::shared::data::UnlabeledPairs::open(Path::new(spec))
        .with_context(|| format!("--unlabeled {spec}"))?;
    Ok(Arc::new(pairs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_subsets_and_conditioned_pairs() {
        let day = [Condition::Day];
        let data = open_data(
            "synth",
            SynthSizes {
                train: 3,
                val: 2,
                seed: 4,
            },
            Split::Val,
            Some(&day),
        )
        .unwrap();
        assert!(
            data.description.contains("day only"),
            "{}",
            data.description
        );
        for i in 0..3 {
            assert_eq!(data.train.load(i).unwrap().condition, Some(Condition::Day));
        }
        assert_eq!(data.val.load(1).unwrap().condition, Some(Condition::Day));
        let rep = Repeated {
            inner: data.train.clone(),
            times: 4,
        };
        assert_eq!(rep.len(), 12);
        assert_eq!(rep.load(7).unwrap().name, data.train.load(1).unwrap().name);

        let u = open_unlabeled("synth:5:night,fog", 4, 3).unwrap();
        assert_eq!(u.len(), 5);
        for i in 0..5 {
            let p = u.load(i).unwrap();
            assert!(p.labels.is_empty());
            assert!(matches!(
                p.condition,
                Some(Condition::Night | Condition::Fog)
            ));
        }
        for bad in ["synth:0", "synth:x", "synth:3:dusk"] {
            assert!(open_unlabeled(bad, 0, 0).is_err(), "{bad}");
        }
    }
}
