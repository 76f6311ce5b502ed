//! `irdistill detect`: the daemon's frame path (image reader → convert →
//! infer → postprocess) run on still image files, one at a time, so a
//! model can be checked on pictures without a camera. Boxes come back in
//! the image's own pixels, through ultralytics' letterbox (the same model
//! gives ultralytics' detections).

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use image::RgbImage;

use crate::device::capture::images::read_image_into;
use crate::device::capture::Frame;
use crate::device::convert::Converter;
use crate::device::infer::{Detector, ModelInfo};
use crate::device::postprocess::{frame_detections, DetectFilter};
use crate::device::publish::snapshot::annotate;
use crate::device::publish::DetectionJson;
use crate::shared::nms::NmsParams;

/// The detections of one image file, in its own pixels.
pub struct ImageDetections {
    pub width_px: u32,
    pub height_px: u32,
    pub detections: Vec<DetectionJson>,
}

/// A model with the buffers it reuses from one image to the next.
pub struct FileDetector {
    detector: Detector,
    info: ModelInfo,
    nms: NmsParams,
    converter: Converter,
    /// The last image read, as the camera path would deliver it.
    frame: Frame,
    /// Model input `[3, H, W]` f32.
    tensor: Vec<f32>,
    /// Model output `[4 + nc, N]` f32.
    output: Vec<f32>,
}

impl FileDetector {
    pub fn new(detector: Detector, nms: NmsParams) -> Self {
        let info = detector.info().clone();
        Self {
            tensor: vec![0.0f32; info.input_len()],
            detector,
            info,
            nms,
            converter: Converter::new(),
            frame: Frame::empty(),
            output: Vec::new(),
        }
    }

    pub fn info(&self) -> &ModelInfo {
        &self.info
    }

    /// Reads `image` and detects in it; errors name the file.
    pub fn detect(&mut self, image: &Path) -> Result<ImageDetections> {
        read_image_into(image, &mut self.frame).map_err(|e| anyhow::anyhow!("{e}"))?;
        let info = &self.info;
        let lb = self
            .converter
            .letterbox_frame(
                &self.frame,
                info.input_w_px,
                info.input_h_px,
                &mut self.tensor,
            )
            .with_context(|| format!("{}", image.display()))?;
        let (w, h) = self.converter.source_size();
        self.detector.run(&self.tensor, &mut self.output)?;
        let filter = DetectFilter::default();
        let dets = frame_detections(&self.output, info.nc(), &self.nms, &filter, &lb, w, h);
        let detections = dets
            .iter()
            .map(|d| DetectionJson::new(d.class_id, info.label(d.class_id), d.score, &d.bbox))
            .collect();
        Ok(ImageDetections {
            width_px: w,
            height_px: h,
            detections,
        })
    }

    /// The last image read, as RGB, with `detections` drawn on it.
    pub fn annotated(&mut self, detections: &[DetectionJson]) -> Result<RgbImage> {
        let mut img = self.converter.to_rgb_image(&self.frame)?;
        annotate(&mut img, detections);
        Ok(img)
    }
}

/// Where the annotated copy of `image` goes: `dir/<name>`, made unique when
/// two inputs share a name; refuses to write over an input.
pub fn save_path(
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
