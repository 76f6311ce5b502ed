//! Validation of an epoch: the EMA weights copied into an evaluation model,
//! run over the validation pairs and COCO-evaluated per condition, and the
//! fitness that picks `best.safetensors`. `trainer val` and `experiment`
//! score checkpoints with the same [`validate`].

use super::ema::Ema;
use super::inputs::batch_inputs;
use super::loader::{EpochLoader, LoaderConfig};
use super::source::PairSource;
use super::vars::load_into;
use crate::shared::eval::{evaluate_dataset, EvalImage, EvalReport};
use crate::shared::nms::{self, NmsParams};
use crate::trainer::model::Detector;
use anyhow::Result;
use candle_core::{DType, Device, Tensor};
use candle_nn::VarMap;
use std::collections::HashMap;
use std::sync::Arc;

/// Runs `model` over `source` and COCO-evaluates its detections, in
/// model-input pixels (letterboxed), per condition. A teacher gets the IR
/// image of each pair too.
pub fn validate(
    model: &Detector,
    source: Arc<dyn PairSource>,
    names: &[String],
    imgsz: usize,
    batch: usize,
    workers: usize,
    device: &Device,
) -> Result<EvalReport> {
    let images = predict_images(model, source, names.len(), imgsz, batch, workers, device)?;
    Ok(evaluate_dataset(names, &images))
}

/// Runs `model` over `source`: each pair's labels, condition and the
/// model's detections (validation NMS: conf 0.001, up to 300), in
/// model-input pixels. A teacher gets the IR image of each pair too.
pub fn predict_images(
    model: &Detector,
    source: Arc<dyn PairSource>,
    nc: usize,
    imgsz: usize,
    batch: usize,
    workers: usize,
    device: &Device,
) -> Result<Vec<EvalImage>> {
    let cfg = LoaderConfig {
        batch_size: batch,
        imgsz: imgsz as u32,
        augment: None,
        with_ir: model.needs_ir(),
        shuffle: false,
        workers,
        seed: 0,
    };
    let mut images = Vec::new();
    for b in EpochLoader::start(source, &cfg, 0, 0) {
        let b = b?;
        let (x, ir) = batch_inputs(&b, imgsz, device)?;
        let out = model
            .predict(&x, ir.as_ref())?
            .to_device(&Device::Cpu)?
            .to_dtype(DType::F32)?; // [B, 4+nc, N]
        for (i, labels) in b.labels.into_iter().enumerate() {
            let row: Vec<f32> = out.get(i)?.flatten_all()?.to_vec1()?;
            images.push(EvalImage {
                labels,
                detections: nms::detections(&row, nc, &NmsParams::VAL),
                condition: b.conditions[i],
            });
        }
    }
    Ok(images)
}

/// Fitness used to pick `best.safetensors` (ultralytics: 0.1·mAP50 + 0.9·mAP50-95).
pub fn fitness(r: &EvalReport) -> f64 {
    0.1 * r.overall.stats.map50 + 0.9 * r.overall.stats.map
}

/// Copies the EMA's averages into the evaluation model's vars.
pub(super) fn load_ema(varmap: &VarMap, ema: &Ema) -> Result<()> {
    let map: HashMap<String, Tensor> = ema
        .tensors()
        .map(|(n, t)| (n.to_string(), t.clone()))
        .collect();
    load_into(varmap, &map, "EMA")
}
