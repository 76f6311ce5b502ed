//! `irdistill detect`: one-shot detection on image files, one JSON line per
//! image in the image's own pixels, with ultralytics' letterbox (so the
//! same model gives ultralytics' detections); `--save` writes annotated
//! copies.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use irdistill::device::capture::images::read_image_into;
use irdistill::device::capture::Frame;
use irdistill::device::convert::Converter;
use irdistill::device::infer::{Detector, ModelOptions};
use irdistill::device::model_path::resolve_model;
use irdistill::device::postprocess::{frame_detections, DetectFilter};
use irdistill::device::publish::snapshot::annotate;
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
    /// Inference threads (default: all cores).
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

/// Where the annotated copy of `image` goes: `dir/<name>`, made unique when
/// two inputs share a name; refuses to write over an input.
fn save_path(
    dir: &Path,
    image: &Path,
    used: &mut HashSet<PathBuf>,
    inputs: &HashSet<PathBuf>,
) -> Result<PathBuf> {
    let stem = image
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("image");
    let ext = image.extension().and_then(|s| s.to_str()).unwrap_or("jpg");
    let ext = match ext.to_ascii_lowercase().as_str() {
        "jpg" | "jpeg" | "png" | "bmp" => ext.to_string(),
        _ => "png".to_string(),
    };
    let mut k = 0;
    loop {
        let name = if k == 0 {
            format!("{stem}.{ext}")
        } else {
            format!("{stem}_{k}.{ext}")
        };
        let p = dir.join(name);
        let canonical = p.canonicalize().unwrap_or_else(|_| p.clone());
        if inputs.contains(&canonical) {
            bail!(
                "--save {}: would overwrite the input {}; choose another folder",
                dir.display(),
                image.display()
            );
        }
        if used.insert(p.clone()) {
            return Ok(p);
        }
        k += 1;
    }
}

pub fn detect(a: Args) -> Result<()> {
    for (name, v) in [("--conf", a.conf), ("--iou", a.iou)] {
        if !(0.0..=1.0).contains(&v) {
            bail!("{name} must be in 0..=1, got {v}");
        }
    }
    let path = resolve_model(a.model.as_deref(), None)?;
    let mut detector = Detector::load(
        &path,
        &ModelOptions {
            imgsz: a.imgsz.map(|s| (s, s)),
            names: None,
            threads: a
                .threads
                .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get())),
        },
    )?;
    let info = detector.info().clone();
    if let Some(dir) = &a.save {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("--save {}: cannot create the folder", dir.display()))?;
    }
    let inputs: HashSet<PathBuf> = a
        .images
        .iter()
        .filter_map(|p| p.canonicalize().ok())
        .collect();
    let nms = NmsParams {
        conf: a.conf,
        iou: a.iou,
        max_det: a.max_det,
        multi_label: false,
    };
    let filter = DetectFilter::default();
    let mut converter = Converter::new();
    let mut frame = Frame::empty();
    let mut tensor = vec![0.0f32; info.input_len()];
    let mut output = Vec::new();
    let mut used = HashSet::new();
    let mut failed = 0;
    for image in &a.images {
        let result = (|| -> Result<()> {
            read_image_into(image, &mut frame).map_err(|e| anyhow::anyhow!("{e}"))?;
            let lb = converter
                .letterbox_frame(&frame, info.input_w_px, info.input_h_px, &mut tensor)
                .with_context(|| format!("{}", image.display()))?;
            let (w, h) = converter.source_size();
            detector.run(&tensor, &mut output)?;
            let dets = frame_detections(&output, info.nc(), &nms, &filter, &lb, w, h);
            let detections: Vec<DetectionJson> = dets
                .iter()
                .map(|d| DetectionJson::new(d.class_id, info.label(d.class_id), d.score, &d.bbox))
                .collect();
            if let Some(dir) = &a.save {
                let mut img = converter.to_rgb_image(&frame)?;
                annotate(&mut img, &detections);
                let dst = save_path(dir, image, &mut used, &inputs)?;
                img.save(&dst)
                    .with_context(|| format!("writing {}", dst.display()))?;
            }
            let line = ImageResult {
                image: &image.to_string_lossy(),
                width: w,
                height: h,
                detections,
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
