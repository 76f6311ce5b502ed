//! A classical thermal hot-spot detector: a yardstick that needs no
//! training. Pixels clearly warmer than their neighbourhood are grouped into
//! connected blobs; tall blobs are called persons, wide ones cars. It shows
//! how much the thermal image alone gives away, per condition, and exercises
//! the data → evaluation path before any model exists.

use crate::shared::bbox::{BBox, Detection};
use crate::shared::data::Dataset;
use crate::shared::eval::{evaluate_dataset, EvalImage, EvalReport};
use anyhow::Result;
use image::GrayImage;
use rayon::prelude::*;

/// Tunables of [`detect_hot_spots`].
#[derive(Debug, Clone, Copy)]
pub struct HotSpotParams {
    /// How much warmer than the local mean a pixel must be, in grey levels.
    pub excess_levels: f32,
    /// Half-size of the local-mean window, pixels.
    pub window_radius_px: usize,
    /// Smallest blob kept, pixels.
    pub min_area_px: usize,
    /// Height/width above which a blob is a person (class 0), else a car (1).
    pub person_aspect: f32,
}

impl Default for HotSpotParams {
    fn default() -> Self {
        Self {
            excess_levels: 22.0,
            window_radius_px: 16,
            min_area_px: 10,
            person_aspect: 1.3,
        }
    }
}

/// Local mean over a `(2r+1)²` window, via an integral image.
fn local_mean(ir: &GrayImage, r: usize) -> Vec<f32> {
    let (w, h) = (ir.width() as usize, ir.height() as usize);
    let mut integral = vec![0u64; (w + 1) * (h + 1)];
    for y in 0..h {
        let mut row = 0u64;
        for x in 0..w {
            row += ir.as_raw()[y * w + x] as u64;
            integral[(y + 1) * (w + 1) + x + 1] = integral[y * (w + 1) + x + 1] + row;
        }
    }
    let mut out = vec![0.0; w * h];
    for y in 0..h {
        let (y0, y1) = (y.saturating_sub(r), (y + r + 1).min(h));
        for x in 0..w {
            let (x0, x1) = (x.saturating_sub(r), (x + r + 1).min(w));
            let sum = integral[y1 * (w + 1) + x1] + integral[y0 * (w + 1) + x0]
                - integral[y0 * (w + 1) + x1]
                - integral[y1 * (w + 1) + x0];
            out[y * w + x] = sum as f32 / ((y1 - y0) * (x1 - x0)) as f32;
        }
    }
    out
}

/// Detects warm objects in a thermal frame.
pub fn detect_hot_spots(ir: &GrayImage, params: &HotSpotParams) -> Vec<Detection> {
    let (w, h) = (ir.width() as usize, ir.height() as usize);
    let mean = local_mean(ir, params.window_radius_px);
    let excess: Vec<f32> = ir
        .as_raw()
        .iter()
        .zip(&mean)
        .map(|(&v, &m)| v as f32 - m)
        .collect();
    let hot: Vec<bool> = excess.iter().map(|&e| e > params.excess_levels).collect();
    let mut seen = vec![false; w * h];
    let mut detections = Vec::new();
    let mut stack = Vec::new();
    for start in 0..w * h {
        if !hot[start] || seen[start] {
            continue;
        }
        // flood fill one 8-connected blob
        let (mut x0, mut y0, mut x1, mut y1) = (w, h, 0, 0);
        let (mut area, mut heat) = (0usize, 0.0f32);
        seen[start] = true;
        stack.push(start);
        while let Some(i) = stack.pop() {
            let (x, y) = (i % w, i / w);
            (x0, y0, x1, y1) = (x0.min(x), y0.min(y), x1.max(x), y1.max(y));
            area += 1;
            heat += excess[i];
            for (dx, dy) in [
                (-1i64, -1i64),
                (0, -1),
                (1, -1),
                (-1, 0),
                (1, 0),
                (-1, 1),
                (0, 1),
                (1, 1),
            ] {
                let (nx, ny) = (x as i64 + dx, y as i64 + dy);
                if nx < 0 || ny < 0 || nx >= w as i64 || ny >= h as i64 {
                    continue;
                }
                let j = ny as usize * w + nx as usize;
                if hot[j] && !seen[j] {
                    seen[j] = true;
                    stack.push(j);
                }
            }
        }
        if area < params.min_area_px {
            continue;
        }
        let bbox = BBox::new(x0 as f32, y0 as f32, x1 as f32 + 1.0, y1 as f32 + 1.0);
        let class_id = if bbox.height() > params.person_aspect * bbox.width() {
            0
        } else {
            1
        };
        // warmer and larger blobs are likelier objects
        let mean_excess = heat / area as f32;
        let score = (mean_excess / 80.0).min(1.0) * (1.0 - (-(area as f32) / 60.0).exp());
        detections.push(Detection {
            class_id,
            score,
            bbox,
        });
    }
    detections
}

/// Runs [`detect_hot_spots`] on every pair of `dataset` (IR only) and
/// scores it against the labels, overall and per condition. The first
/// pair that fails to load is the error.
pub fn evaluate_on_dataset(dataset: &Dataset, params: &HotSpotParams) -> Result<EvalReport> {
    let images: Vec<EvalImage> = dataset
        .samples
        .par_iter()
        .map(|s| {
            let pair = dataset.load_pair(s)?;
            Ok(EvalImage {
                labels: pair.labels,
                detections: detect_hot_spots(&pair.ir, params),
                condition: pair.condition,
            })
        })
        .collect::<Result<_>>()?;
    Ok(evaluate_dataset(&dataset.names, &images))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_a_warm_upright_blob_as_a_person() {
        let mut ir = GrayImage::from_pixel(64, 64, image::Luma([60]));
        for y in 20..44 {
            for x in 30..38 {
                ir.put_pixel(x, y, image::Luma([200]));
            }
        }
        let d = detect_hot_spots(&ir, &HotSpotParams::default());
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].class_id, 0);
        assert_eq!(d[0].bbox, BBox::new(30.0, 20.0, 38.0, 44.0));
        assert!(d[0].score > 0.5);
        let flat = GrayImage::from_pixel(64, 64, image::Luma([60]));
        assert!(detect_hot_spots(&flat, &HotSpotParams::default()).is_empty());
    }
}
