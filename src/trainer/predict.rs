//! `trainer predict`: a trained student run in candle on one image, the way
//! the exported ONNX runs on the device: ultralytics' letterbox to the
//! model's size, forward, NMS, boxes mapped back to the image's pixels.

use crate::shared::bbox::Detection;
use crate::shared::letterbox::{letterbox_into, Letterbox};
use crate::shared::nms::{detections, NmsParams};
use crate::trainer::model::{ModelConfig, YoloV8};
use anyhow::Result;
use candle_core::{Device, Tensor};
use image::RgbImage;

/// The detections of `img` by `model`, boxes in `img`'s pixels.
pub fn predict_image(
    model: &YoloV8,
    cfg: &ModelConfig,
    img: &RgbImage,
    params: &NmsParams,
    device: &Device,
) -> Result<Vec<Detection>> {
    let s = cfg.imgsz;
    let lb = Letterbox::new(img.width(), img.height(), s as u32, s as u32);
    let mut input = vec![0.0f32; 3 * s * s];
    letterbox_into(img, &lb, &mut input);
    // [1, 3, S, S] in 0..1 → [1, 4 + nc, N]
    let x = Tensor::from_vec(input, (1, 3, s, s), device)?;
    let out: Vec<f32> = model.predict(&x)?.flatten_all()?.to_vec1()?;
    let mut dets = detections(&out, cfg.nc, params);
    for d in &mut dets {
        d.bbox = lb.to_source(&d.bbox, img.width(), img.height());
    }
    Ok(dets)
}
