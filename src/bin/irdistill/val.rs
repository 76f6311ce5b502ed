//! `irdistill val`: a deployed ONNX model scored on a labelled dataset
//! folder (LLVIP or the paired YOLO layout) with the COCO evaluation, on
//! the RGB images, as the device sees them. This is how a model is judged
//! on a user's own labelled frames, with no trainer and no Python.

use anyhow::{bail, ensure, Context, Result};
use irdistill::device::detect_files::FileDetector;
use irdistill::device::infer::{Detector, ModelOptions};
use irdistill::device::model_path::resolve_model;
use irdistill::shared::bbox::{BBox, Detection};
use irdistill::shared::condition::Split;
use irdistill::shared::data::Dataset;
use irdistill::shared::eval::{evaluate_dataset, EvalImage};
use irdistill::shared::nms::NmsParams;
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The ONNX model (default: models/student-p.onnx).
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// A labelled dataset folder (LLVIP layout or images/rgb + labels).
    #[arg(long)]
    pub data: PathBuf,
    /// Only this split (train, val, test); default: every labelled pair.
    #[arg(long)]
    pub split: Option<Split>,
    /// Confidence threshold (low, as for any mAP evaluation).
    #[arg(long, default_value_t = 0.001)]
    pub conf: f32,
    #[arg(long, default_value_t = 0.7)]
    pub iou: f32,
    /// Model input size when the model does not record it.
    #[arg(long)]
    pub imgsz: Option<u32>,
    /// Inference threads (default: 1).
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
}

pub fn val(a: Args) -> Result<()> {
    for (name, v) in [("--conf", a.conf), ("--iou", a.iou)] {
        ensure!((0.0..=1.0).contains(&v), "{name} must be in 0..=1, got {v}");
    }
    let path = resolve_model(a.model.as_deref(), None)?;
    let dataset = Dataset::open(&a.data).with_context(|| format!("--data {}", a.data.display()))?;
    let detector = Detector::load(
        &path,
        &ModelOptions {
            imgsz: a.imgsz.map(|s| (s, s)),
            names: None,
            threads: a.threads.max(1),
        },
    )?;
    // the model's class ids → the dataset's, by name
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
            path.display(),
            a.data.display(),
            dataset.names
        );
    }
    let mut files = FileDetector::new(
        detector,
        NmsParams {
            conf: a.conf,
            iou: a.iou,
            max_det: 300,
            multi_label: false,
        },
    );
    let samples: Vec<_> = dataset
        .samples
        .iter()
        .filter(|s| a.split.is_none_or(|split| s.split == split))
        .collect();
    ensure!(
        !samples.is_empty(),
        "{}: no labelled pairs{}",
        a.data.display(),
        a.split
            .map(|s| format!(" in split '{s}'"))
            .unwrap_or_default()
    );
    let mut images = Vec::with_capacity(samples.len());
    for s in &samples {
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
    let report = evaluate_dataset(&dataset.names, &images);
    println!(
        "{} on {} ({} pairs, RGB):",
        path.display(),
        a.data.display(),
        images.len()
    );
    println!("{}", report.table());
    println!("{}", serde_json::to_string(&report.to_json())?);
    Ok(())
}
