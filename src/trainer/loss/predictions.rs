//! The head's raw outputs made ready for the loss: the levels flattened and
//! concatenated over anchors, split into box-side logits and class logits,
//! and the boxes decoded (DFL expectation, then `dist2bbox`) at the anchors.

use anyhow::{ensure, Context, Result};
use candle_core::{DType, Device, Tensor};

use super::anchors::{dist2bbox_tensor, make_anchors};
use super::dfl::dfl_decode;
use super::LossConfig;

/// The head outputs flattened over levels, decoded; anchors in grid units.
#[derive(Debug, Clone)]
pub struct FlatPredictions {
    /// `[B, N, 4·reg_max]` box-side logits.
    pub pred_distri: Tensor,
    /// `[B, N, nc]` class logits.
    pub pred_scores: Tensor,
    /// `[B, N, 4]` decoded `xyxy` boxes in grid units (× stride for pixels).
    pub pred_bboxes: Tensor,
    /// `[N]` anchor centres in grid units.
    pub anchor_points: Vec<[f32; 2]>,
    /// `[N]` the stride of each anchor's level.
    pub stride_per_anchor: Vec<f32>,
}

/// Flattens `levels` (`[B, 4·reg_max + nc, H_l, W_l]`, one per stride) to
/// `[B, N, ·]`, makes the anchors and decodes the boxes. Anchors run level
/// by level, each row by row. Computes in f32.
pub(super) fn flatten(cfg: &LossConfig, levels: &[Tensor]) -> Result<FlatPredictions> {
    let (nc, rm) = (cfg.num_classes, cfg.reg_max);
    check_levels_match_config(cfg, levels)?;
    let (x, shapes) = concat_levels(cfg, levels)?; // [B, N, 4·reg_max + nc]
    let pred_distri = x.narrow(2, 0, 4 * rm)?.contiguous()?;
    let pred_scores = x.narrow(2, 4 * rm, nc)?.contiguous()?;
    let (anchor_points, stride_per_anchor) = make_anchors(&shapes, &cfg.strides, 0.5);
    let anchors_t = anchor_tensor(&anchor_points, x.device())?;
    let pred_bboxes = dist2bbox_tensor(&dfl_decode(&pred_distri, rm)?, &anchors_t)?;
    Ok(FlatPredictions {
        pred_distri,
        pred_scores,
        pred_bboxes,
        anchor_points,
        stride_per_anchor,
    })
}

/// One level per stride, and enough bins for a distribution.
fn check_levels_match_config(cfg: &LossConfig, levels: &[Tensor]) -> Result<()> {
    ensure!(!levels.is_empty(), "loss: no levels");
    ensure!(
        levels.len() == cfg.strides.len(),
        "loss: {} levels but {} strides",
        levels.len(),
        cfg.strides.len()
    );
    ensure!(cfg.reg_max >= 2, "loss: reg_max must be at least 2");
    Ok(())
}

/// Levels `[B, no, H_l, W_l]` → `[B, N, no]` f32 (`N = Σ H_l·W_l`, level by
/// level, row by row) and the grid shape `(H_l, W_l)` of each level.
fn concat_levels(cfg: &LossConfig, levels: &[Tensor]) -> Result<(Tensor, Vec<(usize, usize)>)> {
    let (nc, rm) = (cfg.num_classes, cfg.reg_max);
    let no = 4 * rm + nc;
    let b = levels[0].dim(0)?;
    let mut flat = Vec::with_capacity(levels.len());
    let mut shapes = Vec::with_capacity(levels.len());
    for (l, x) in levels.iter().enumerate() {
        let (bl, c, h, w) = x.dims4().with_context(|| format!("loss: level {l}"))?;
        ensure!(
            bl == b && c == no,
            "loss: level {l} is {:?}, expected [{b}, {no} (4·{rm} + {nc}), H, W]",
            x.dims()
        );
        flat.push(x.reshape((b, c, h * w))?); // [B, no, H·W]
        shapes.push((h, w));
    }
    let x = Tensor::cat(&flat, 2)?
        .to_dtype(DType::F32)?
        .transpose(1, 2)?
        .contiguous()?;
    Ok((x, shapes))
}

/// `[N]` anchor points as an `[N, 2]` tensor.
fn anchor_tensor(anchor_points: &[[f32; 2]], device: &Device) -> Result<Tensor> {
    let n = anchor_points.len();
    let flat: Vec<f32> = anchor_points.iter().flatten().copied().collect();
    Ok(Tensor::from_vec(flat, (n, 2), device)?)
}
