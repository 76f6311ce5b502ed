//! Anchor points and the inference decode of YOLOv8's head.
//!
//! YOLOv8 is anchor-free: every output cell (x, y) of a level with stride s
//! has one *anchor point* at the cell centre (x + 0.5, y + 0.5) in grid
//! units. The box branch predicts, per side (left, top, right, bottom), a
//! distribution over `reg_max` bins 0, 1, …, reg_max-1; its expectation is
//! the distance from the anchor point to that side, in grid cells (DFL).
//! Multiplying by s gives input pixels.
//!
//! Layout convention here: channels first, `[B, C, N]` with N the anchors
//! of all levels concatenated (P3 row-major, then P4, then P5), exactly like
//! ultralytics' ONNX output.

use anyhow::{ensure, Result};
use candle_core::{Device, Tensor};

use super::head::STRIDES;

/// Anchor points and strides for levels of the given `(H, W)` grid sizes.
///
/// Returns `anchor_points` `[N, 2]` as (x, y) in grid units (cell index +
/// `offset`, 0.5 in YOLOv8) and `stride_tensor` `[N, 1]`, N = Σ H·W.
pub fn make_anchors(
    level_shapes: &[(usize, usize)],
    strides: &[usize],
    offset: f64,
    device: &Device,
) -> Result<(Tensor, Tensor)> {
    ensure!(
        level_shapes.len() == strides.len(),
        "make_anchors: {} level shapes but {} strides",
        level_shapes.len(),
        strides.len()
    );
    let n: usize = level_shapes.iter().map(|(h, w)| h * w).sum();
    let mut points = Vec::with_capacity(2 * n);
    let mut stride_values = Vec::with_capacity(n);
    for (&(h, w), &s) in level_shapes.iter().zip(strides) {
        for y in 0..h {
            for x in 0..w {
                points.push((x as f64 + offset) as f32);
                points.push((y as f64 + offset) as f32);
                stride_values.push(s as f32);
            }
        }
    }
    let points = Tensor::from_vec(points, (n, 2), device)?;
    let stride_values = Tensor::from_vec(stride_values, (n, 1), device)?;
    Ok((points, stride_values))
}

/// Concatenates per-level head outputs `[B, C, H_l, W_l]` into `[B, C, N]`.
pub fn flatten_levels(levels: &[Tensor]) -> Result<Tensor> {
    let flat = levels
        .iter()
        .map(|t| Ok(t.flatten_from(2)?)) // [B, C, H_l·W_l]
        .collect::<Result<Vec<_>>>()?;
    Ok(Tensor::cat(&flat, 2)?)
}

/// DFL expectation: box logits `[B, 4·reg_max, N]` → distances `[B, 4, N]`
/// (left, top, right, bottom) in grid cells, each Σ_i softmax(logits)_i · i.
pub fn dfl_expectation(box_logits: &Tensor, reg_max: usize) -> Result<Tensor> {
    let (b, c, n) = box_logits.dims3()?;
    ensure!(
        c == 4 * reg_max,
        "dfl: expected {} box channels (4·reg_max), got {c}",
        4 * reg_max
    );
    // The bins go on axis 2 (not last): the same layout the ONNX export
    // uses, where it keeps tract's softmax on a fast path.
    let logits = box_logits.reshape((b, 4, reg_max, n))?;
    let probs = candle_nn::ops::softmax(&logits, 2)?; // [B, 4, reg_max, N]
    let bins = Tensor::arange(0u32, reg_max as u32, box_logits.device())?
        .to_dtype(box_logits.dtype())?
        .reshape((1, 1, reg_max, 1))?;
    Ok(probs.broadcast_mul(&bins)?.sum(2)?) // [B, 4, N]
}

/// Distances `[B, 4, N]` (l, t, r, b) from `anchor_points` `[N, 2]` → boxes
/// `[B, 4, N]`, as (cx, cy, w, h) when `xywh` else (x1, y1, x2, y2), in the
/// same units as the inputs (ultralytics' `dist2bbox` with dim = 1).
pub fn dist2bbox(distance: &Tensor, anchor_points: &Tensor, xywh: bool) -> Result<Tensor> {
    let anchors = anchor_points.t()?.unsqueeze(0)?; // [1, 2, N]
    let lt = distance.narrow(1, 0, 2)?; // [B, 2, N]
    let rb = distance.narrow(1, 2, 2)?;
    let x1y1 = anchors.broadcast_sub(&lt)?;
    let x2y2 = anchors.broadcast_add(&rb)?;
    if xywh {
        let c_xy = ((&x1y1 + &x2y2)? / 2.0)?;
        let wh = (&x2y2 - &x1y1)?;
        Ok(Tensor::cat(&[c_xy, wh], 1)?)
    } else {
        Ok(Tensor::cat(&[x1y1, x2y2], 1)?)
    }
}

/// Inference decode, as ultralytics' `Detect` in eval mode: per-level head
/// outputs `[B, 4·reg_max + nc, H/s, W/s]` (strides 8, 16, 32) →
/// `[B, 4 + nc, N]` with rows cx, cy, w, h in input pixels followed by the
/// nc sigmoid class scores. No NMS.
pub fn decode(levels: &[Tensor], reg_max: usize) -> Result<Tensor> {
    ensure!(
        levels.len() == STRIDES.len(),
        "decode: expected {} levels (strides {:?}), got {}",
        STRIDES.len(),
        STRIDES,
        levels.len()
    );
    let mut shapes = Vec::with_capacity(levels.len());
    for t in levels {
        let (_, _, h, w) = t.dims4()?;
        shapes.push((h, w));
    }
    let x = flatten_levels(levels)?; // [B, 4·reg_max + nc, N]
    let (_, c, n) = x.dims3()?;
    ensure!(
        c > 4 * reg_max,
        "decode: head output has {c} channels, expected 4·reg_max ({}) + nc with nc ≥ 1",
        4 * reg_max
    );
    let nc = c - 4 * reg_max;
    let (anchor_points, strides) = make_anchors(&shapes, &STRIDES, 0.5, x.device())?;
    let anchor_points = anchor_points.to_dtype(x.dtype())?;
    let strides = strides.to_dtype(x.dtype())?.reshape((1, 1, n))?;
    let dist = dfl_expectation(&x.narrow(1, 0, 4 * reg_max)?, reg_max)?; // [B, 4, N]
    let boxes = dist2bbox(&dist, &anchor_points, true)?.broadcast_mul(&strides)?; // [B, 4, N] pixels
    let scores = candle_nn::ops::sigmoid(&x.narrow(1, 4 * reg_max, nc)?)?; // [B, nc, N]
    Ok(Tensor::cat(&[boxes, scores], 1)?)
}
