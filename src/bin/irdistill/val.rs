//! `irdistill val`: a deployed ONNX model scored on a labelled dataset
//! folder (LLVIP or the paired YOLO layout) with the COCO evaluation, on
//! the RGB images, as the device sees them: how a model is judged on a
//! user's own labelled frames, with no trainer and no Python.

use anyhow::{ensure, Context, Result};
use irdistill::device::infer::ModelOptions;
use irdistill::device::model_path::resolve_model;
use irdistill::device::val::{evaluate_onnx, EVAL_NMS};
use irdistill::shared::condition::Split;
use irdistill::shared::data::Dataset;
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
    #[arg(long, default_value_t = EVAL_NMS.conf)]
    pub conf: f32,
    #[arg(long, default_value_t = EVAL_NMS.iou)]
    pub iou: f32,
    /// Model input size when the model does not record it.
    #[arg(long)]
    pub imgsz: Option<u32>,
    /// Inference threads.
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
}

pub fn val(a: Args) -> Result<()> {
    for (name, v) in [("--conf", a.conf), ("--iou", a.iou)] {
        ensure!((0.0..=1.0).contains(&v), "{name} must be in 0..=1, got {v}");
    }
    let path = resolve_model(a.model.as_deref(), None)?;
    let dataset = Dataset::open(&a.data).with_context(|| format!("--data {}", a.data.display()))?;
    let report = evaluate_onnx(
        &path,
        &ModelOptions {
            imgsz: a.imgsz.map(|s| (s, s)),
            names: None,
            threads: a.threads.max(1),
        },
        NmsParams {
            conf: a.conf,
            iou: a.iou,
            ..EVAL_NMS
        },
        &dataset,
        a.split,
    )?;
    println!(
        "{} on {} ({} pairs, RGB):",
        path.display(),
        a.data.display(),
        report.overall.images
    );
    println!("{}", report.table());
    println!("{}", serde_json::to_string(&report.to_json())?);
    Ok(())
}
