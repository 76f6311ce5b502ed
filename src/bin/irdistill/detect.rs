//! `irdistill detect`: one-shot detection on image files, one JSON line per
//! image in the image's own pixels, with ultralytics' letterbox (so the
//! same model gives ultralytics' detections); `--save` writes annotated
//! copies.

use std::collections::HashSet;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use irdistill::device::detect_files::{save_path, FileDetector};
use irdistill::device::infer::{Detector, ModelOptions};
use irdistill::device::model_path::resolve_model;
use irdistill::device::publish::DetectionJson;
use irdistill::shared::nms::NmsParams;
use serde::Serialize;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The ONNX model (default: models/student-p.onnx).
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Confidence threshold.
    #[arg(long, default_value_t = 0.25)]
    pub conf: f32,
    /// NMS IoU threshold.
    #[arg(long, default_value_t = 0.45)]
    pub iou: f32,
    /// At most this many detections per image.
    #[arg(long, default_value_t = 300)]
    pub max_det: usize,
    /// Model input size when the model does not record it.
    #[arg(long)]
    pub imgsz: Option<u32>,
    /// Inference threads (default: auto, the fastest count timed at load).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Write annotated copies here (never over an input).
    #[arg(long)]
    pub save: Option<PathBuf>,
    /// Images (jpg, png, bmp, ppm).
    #[arg(required = true)]
    pub images: Vec<PathBuf>,
}

#[derive(Serialize)]
struct ImageResult<'a> {
    image: &'a str,
    width: u32,
    height: u32,
    detections: Vec<DetectionJson>,
}

pub fn detect(a: Args) -> Result<()> {
    for (name, v) in [("--conf", a.conf), ("--iou", a.iou)] {
        if !(0.0..=1.0).contains(&v) {
            bail!("{name} must be in 0..=1, got {v}");
        }
    }
    let path = resolve_model(a.model.as_deref(), None)?;
    let detector = Detector::load(
        &path,
        &ModelOptions {
            imgsz: a.imgsz.map(|s| (s, s)),
            names: None,
            // none: `auto` (the fastest count, timed at load)
            threads: a.threads.unwrap_or(0),
        },
    )?;
    let mut files = FileDetector::new(
        detector,
        NmsParams {
            conf: a.conf,
            iou: a.iou,
            max_det: a.max_det,
            multi_label: false,
        },
    );
    if let Some(dir) = &a.save {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("--save {}: cannot create the folder", dir.display()))?;
    }
    let inputs: HashSet<PathBuf> = a
        .images
        .iter()
        .filter_map(|p| p.canonicalize().ok())
        .collect();
    let mut used = HashSet::new();
    let mut failed = 0;
    for image in &a.images {
        let result = (|| -> Result<()> {
            let found = files.detect(image)?;
            if let Some(dir) = &a.save {
                let img = files.annotated(&found.detections)?;
                let dst = save_path(dir, image, &mut used, &inputs)?;
                img.save(&dst)
                    .with_context(|| format!("writing {}", dst.display()))?;
            }
            let line = ImageResult {
                image: &image.to_string_lossy(),
                width: found.width_px,
                height: found.height_px,
                detections: found.detections,
            };
            println!("{}", serde_json::to_string(&line)?);
            Ok(())
        })();
        if let Err(e) = result {
            failed += 1;
            eprintln!("error: {e:#}");
        }
    }
    if failed > 0 {
        bail!("{failed} of {} images failed", a.images.len());
    }
    Ok(())
}
