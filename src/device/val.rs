//! A deployed ONNX model scored on a labelled dataset folder, on the RGB
//! images as the device reads them (`irdistill val`, and the `bundled` arm
//! of `trainer experiment --preset real`).

use crate::device::detect_files::FileDetector;
use crate::device::infer::{Detector, ModelOptions};
use crate::shared::bbox::{BBox, Detection};
use crate::shared::condition::Split;
use crate::shared::data::Dataset;
use crate::shared::eval::{evaluate_dataset, EvalImage, EvalReport};
use crate::shared::nms::NmsParams;
use anyhow::{bail, ensure, Result};
use std::path::Path;

/// NMS for mAP evaluation: ultralytics' val settings.
pub const EVAL_NMS: NmsParams = NmsParams::VAL;

/// COCO-evaluates the model at `model` on the labelled pairs of `dataset`
/// (those of `split`, or all); the model's classes are matched to the
/// dataset's by name, and classes the dataset lacks are left out.
pub fn evaluate_onnx(
    model: &Path,
    opts: &ModelOptions,
    nms: NmsParams,
    dataset: &Dataset,
    split: Option<Split>,
) -> Result<EvalReport> {
    let detector = Detector::load(model, opts)?;
    let model_names: Vec<String> = (0..detector.info().nc())
        .map(|i| detector.info().label(i).to_owned())
        .collect();
    let to_dataset: Vec<Option<usize>> = model_names
        .iter()
        .map(|n| dataset.names.iter().position(|d| d == n))
        .collect();
    if to_dataset.iter().all(Option::is_none) {
        bail!(
            "{}: none of the model's classes {model_names:?} is a class of {} ({:?})",
            model.display(),
            dataset.root.display(),
            dataset.names
        );
    }
    let samples: Vec<_> = dataset
        .samples
        .iter()
        .filter(|s| split.map_or(true, |split| s.split == split))
        .collect();
    ensure!(
        !samples.is_empty(),
        "{}: no labelled pairs{}",
        dataset.root.display(),
        split
            .map(|s| format!(" in split '{s}'"))
            .unwrap_or_default()
    );
    let mut files = FileDetector::new(detector, nms);
    let mut images = Vec::with_capacity(samples.len());
    for s in samples {
        let found = files.detect(&s.rgb_path)?;
        let detections = found
            .detections
            .iter()
            .filter_map(|d| {
                Some(Detection {
                    class_id: to_dataset[d.class_id]?,
                    score: d.score,
                    bbox: BBox::new(d.bbox[0], d.bbox[1], d.bbox[2], d.bbox[3]),
                })
            })
            .collect();
        images.push(EvalImage {
            labels: s.labels.clone(),
            detections,
            condition: s.condition,
        });
    }
    Ok(evaluate_dataset(&dataset.names, &images))
}
