//! Checkpoints: one safetensors file holding the model weights
//! (`model.*`), their moving average (`ema.*`, what validation and export
//! use), optionally the optimizer state (`optim.*`), and in its metadata the
//! model config and training progress as JSON, so later commands rebuild the
//! model with no flags and `--resume` continues exactly.

use crate::trainer::model::ModelConfig;
use anyhow::{bail, Context, Result};
use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

/// Key of the JSON metadata entry.
pub const META_KEY: &str = "irdistill";

/// Training progress stored beside the weights.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Progress {
    /// Epochs completed (1-based count).
    pub epochs_done: usize,
    pub optimizer_step: u64,
    pub ema_updates: u64,
    pub best_fitness: f64,
    /// The training command's arguments, for provenance and `--resume`.
    pub args: serde_json::Value,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CheckpointMeta {
    pub config: ModelConfig,
    pub progress: Option<Progress>,
    pub version: String,
}

pub struct Checkpoint {
    pub meta: CheckpointMeta,
    pub tensors: HashMap<String, Tensor>,
}

/// Writes atomically (temporary file, then rename): a run killed while
/// saving never leaves a truncated checkpoint behind.
pub fn save(path: &Path, meta: &CheckpointMeta, tensors: &BTreeMap<String, Tensor>) -> Result<()> {
    let json = serde_json::to_string(meta)?;
    let info = HashMap::from([(META_KEY.to_string(), json)]);
    let tmp = path.with_extension("safetensors.tmp");
    let cpu: BTreeMap<String, Tensor> = tensors
        .iter()
        .map(|(k, t)| Ok((k.clone(), t.to_device(&Device::Cpu)?)))
        .collect::<Result<_>>()?;
    safetensors::serialize_to_file(cpu.iter(), Some(info), &tmp)
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

pub fn load(path: &Path, device: &Device) -> Result<Checkpoint> {
    let bytes =
        std::fs::read(path).with_context(|| format!("cannot read weights {}", path.display()))?;
    let (_, header) = safetensors::SafeTensors::read_metadata(&bytes)
        .with_context(|| format!("{} is not a safetensors file", path.display()))?;
    let Some(json) = header.metadata().as_ref().and_then(|m| m.get(META_KEY)) else {
        bail!(
            "{} carries no irdistill model config (not written by `trainer train`?)",
            path.display()
        );
    };
    let meta: CheckpointMeta = serde_json::from_str(json)
        .with_context(|| format!("{}: malformed model config", path.display()))?;
    let tensors = candle_core::safetensors::load_buffer(&bytes, device)
        .with_context(|| format!("cannot read tensors of {}", path.display()))?;
    Ok(Checkpoint { meta, tensors })
}

impl Checkpoint {
    /// The tensors under `prefix.` with the prefix removed (`ema`, `model`).
    pub fn group(&self, prefix: &str) -> HashMap<String, Tensor> {
        let p = format!("{prefix}.");
        self.tensors
            .iter()
            .filter_map(|(k, t)| k.strip_prefix(&p).map(|n| (n.to_string(), t.clone())))
            .collect()
    }

    /// The weights to run: the EMA when present, else the raw model.
    pub fn inference_weights(&self) -> HashMap<String, Tensor> {
        let ema = self.group("ema");
        if ema.is_empty() {
            self.group("model")
        } else {
            ema
        }
    }
}

/// Rebuilds the RGB student stored in `path` for inference (EMA weights),
/// with no flags needed: the config travels in the file. A teacher
/// checkpoint is an error that says so.
pub fn load_model(
    path: &Path,
    device: &Device,
) -> Result<(crate::trainer::model::YoloV8, ModelConfig)> {
    load(path, device)?.model(path, device)
}

/// Rebuilds the student or teacher stored in `path` (EMA weights).
pub fn load_detector(
    path: &Path,
    device: &Device,
) -> Result<(crate::trainer::model::Detector, ModelConfig)> {
    load(path, device)?.detector(path, device)
}

impl Checkpoint {
    /// The inference model (EMA weights) of a loaded checkpoint, student or
    /// teacher; `path` only names the file in errors.
    pub fn detector(
        &self,
        path: &Path,
        device: &Device,
    ) -> Result<(crate::trainer::model::Detector, ModelConfig)> {
        let weights = self.inference_weights();
        let vb = candle_nn::VarBuilder::from_tensors(weights, candle_core::DType::F32, device);
        let model = crate::trainer::model::Detector::load(vb, &self.meta.config)
            .with_context(|| format!("{}: weights do not fit its model config", path.display()))?;
        Ok((model, self.meta.config.clone()))
    }

    /// The RGB student of a loaded checkpoint (an error for a teacher).
    pub fn model(
        &self,
        path: &Path,
        device: &Device,
    ) -> Result<(crate::trainer::model::YoloV8, ModelConfig)> {
        let (det, cfg) = self.detector(path, device)?;
        Ok((det.into_student(&path.display().to_string())?, cfg))
    }
}
