//! The YOLOv8 detection loss (ultralytics `utils/loss.py::v8DetectionLoss`
//! with `BboxLoss` and `DFLoss`) on candle tensors:
//! `L_det = box + cls + dfl`.
//!
//! Input: the raw head outputs per level, `[B, 4·reg_max + nc, H, W]`
//! (channels `0..4·reg_max` are the box-side distributions, side-major
//! `l, t, r, b` with `reg_max` bins each; the last `nc` are class logits), and
//! the ground truths per image in input pixels. Steps, as ultralytics, and
//! the file that holds each:
//!
//! 1. flatten and concatenate the levels to `[B, N, 4·reg_max + nc]`
//!    (`predictions.rs`);
//! 2. anchors at the grid-cell centres (`+0.5`, grid units) with a stride per
//!    anchor ([`make_anchors`], `anchors.rs`);
//! 3. decode boxes: softmax over the bins · `0..reg_max` gives the four side
//!    distances ([`dfl_decode`], `dfl.rs`), [`dist2bbox`] makes `xyxy` in
//!    grid units;
//! 4. the task-aligned assigner ([`crate::trainer::assign`]) per image on detached
//!    values: sigmoid scores, boxes × stride (pixels), anchors × stride
//!    (`targets.rs`);
//! 5. `cls = BCEWithLogits(scores, target_scores).sum() / tss` with
//!    `tss = max(target_scores.sum(), 1)` (`class.rs`);
//!    `box = Σ_fg (1 − CIoU(pred, target / stride)) · w / tss` with `w` the
//!    anchor's target-score sum (`box_iou.rs`); `dfl = Σ_fg DFL(dist,
//!    bbox2dist(target / stride)) · w / tss` (`dfl.rs`);
//! 6. gains box 7.5, cls 0.5, dfl 1.5; the total is
//!    `(box + cls + dfl) · B` (what ultralytics back-propagates), the parts are
//!    reported with gains but without the batch factor (its `loss_items`).
//!    This file: [`DetectionLoss::compute`] runs the steps in order.
//!
//! The assigner runs on CPU `Vec`s; the targets become tensors once per batch
//! and foreground rows are gathered with one `index_select` on the
//! `[B·N, …]` view, so the tensor work does not grow with the number of
//! objects beyond those rows.
//!
//! Candle has no `atan`, which CIoU's aspect term needs; [`atan`] builds it
//! from differentiable ops (three half-angle reductions and an odd Taylor
//! polynomial, error below 1e-9 before f32 rounding).

mod anchors;
mod box_iou;
mod class;
mod dfl;
mod predictions;
mod targets;
#[cfg(test)]
mod tests;

use anyhow::{ensure, Result};
use candle_core::{DType, Tensor};

use crate::shared::bbox::Label;
use targets::{BatchTargets, Foreground};

pub use crate::trainer::assign::{bbox_iou, ciou, Assignment, Stal, TaskAlignedAssigner, IOU_EPS};
pub use anchors::{bbox2dist, dist2bbox, dist2bbox_tensor, make_anchors};
pub use box_iou::{atan, ciou_tensor};
pub use class::bce_with_logits;
pub use dfl::{dfl_decode, dfl_loss};
pub use predictions::FlatPredictions;

/// Ultralytics' default box-side bins.
pub const REG_MAX: usize = 16;

/// Loss settings; [`LossConfig::new`] gives ultralytics' v8 defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct LossConfig {
    pub num_classes: usize,
    /// Bins per box side (16).
    pub reg_max: usize,
    /// Stride of each level in input pixels (`[8, 16, 32]`).
    pub strides: Vec<f32>,
    /// Box (CIoU) gain, ultralytics `hyp.box` (7.5).
    pub box_gain: f32,
    /// Classification gain, `hyp.cls` (0.5).
    pub cls_gain: f32,
    /// DFL gain, `hyp.dfl` (1.5).
    pub dfl_gain: f32,
    pub assigner: TaskAlignedAssigner,
}

impl LossConfig {
    pub fn new(num_classes: usize) -> Self {
        Self {
            num_classes,
            reg_max: REG_MAX,
            strides: vec![8.0, 16.0, 32.0],
            box_gain: 7.5,
            cls_gain: 0.5,
            dfl_gain: 1.5,
            assigner: TaskAlignedAssigner::new(num_classes),
        }
    }
}

/// What [`DetectionLoss::compute`] returns.
#[derive(Debug, Clone)]
pub struct LossOutput {
    /// Scalar `(box + cls + dfl) · B` (gains applied): call `backward` on it.
    pub total: Tensor,
    /// CIoU loss × box gain (ultralytics' `loss_items[0]`, no batch factor).
    pub box_loss: f32,
    /// BCE loss × cls gain (`loss_items[1]`).
    pub cls_loss: f32,
    /// DFL loss × dfl gain (`loss_items[2]`).
    pub dfl_loss: f32,
    /// Foreground anchors in the batch.
    pub num_fg: usize,
    /// `max(Σ target_scores, 1)`, the normaliser of all three parts.
    pub target_scores_sum: f32,
    /// The assignment of each image (anchors in [`FlatPredictions`] order).
    pub assignments: Vec<Assignment>,
}

/// The three terms of one batch, each a scalar normalised by `tss`, before
/// the gains.
struct LossTerms {
    box_iou: Tensor,
    class: Tensor,
    dfl: Tensor,
}

/// The v8 detection loss.
#[derive(Debug, Clone)]
pub struct DetectionLoss {
    pub cfg: LossConfig,
}

impl DetectionLoss {
    /// Ultralytics' v8 settings ([`LossConfig::new`]) for `num_classes`.
    pub fn new(num_classes: usize) -> Self {
        Self::with_config(LossConfig::new(num_classes))
    }

    pub fn with_config(cfg: LossConfig) -> Self {
        Self { cfg }
    }

    /// Flattens `levels` (`[B, 4·reg_max + nc, H_l, W_l]`, one per stride)
    /// to `[B, N, ·]`, makes the anchors and decodes the boxes. Anchors run
    /// level by level, each row by row. Computes in f32.
    pub fn flatten(&self, levels: &[Tensor]) -> Result<FlatPredictions> {
        predictions::flatten(&self.cfg, levels)
    }

    /// The loss of one batch: `levels` as in [`Self::flatten`], `targets[b]`
    /// the labels of image `b` (boxes in input pixels, class ids below
    /// `num_classes`). Images and whole batches without objects are fine.
    pub fn compute(&self, levels: &[Tensor], targets: &[Vec<Label>]) -> Result<LossOutput> {
        self.compute_weighted(levels, targets, None)
    }

    /// [`Self::compute`] with a weight per target (`weights[b][i]` for
    /// `targets[b][i]`, e.g. a pseudo-label's score): the assigner's soft
    /// target scores of a target's anchors are scaled by it, and with them
    /// its share of all three terms.
    pub fn compute_weighted(
        &self,
        levels: &[Tensor],
        targets: &[Vec<Label>],
        weights: Option<&[Vec<f32>]>,
    ) -> Result<LossOutput> {
        self.check_assigner()?;
        let fp = self.flatten(levels)?;
        let (b, _, _) = fp.pred_scores.dims3()?;
        ensure!(
            targets.len() == b,
            "loss: {} target lists for a batch of {b}",
            targets.len()
        );
        let bt = targets::assign_batch(&self.cfg, &fp, targets, weights)?;
        let tss = bt.target_scores_sum();
        let class = class_term(&fp, &bt.target_scores, tss)?;
        let (box_iou, dfl) = self.foreground_terms(&fp, &bt.fg, tss)?;
        let terms = LossTerms {
            box_iou,
            class,
            dfl,
        };
        self.output(terms, b, tss, bt)
    }

    /// The assigner must score the loss's classes.
    fn check_assigner(&self) -> Result<()> {
        let nc = self.cfg.num_classes;
        ensure!(
            self.cfg.assigner.num_classes == nc,
            "loss: assigner has {} classes, loss {nc}",
            self.cfg.assigner.num_classes
        );
        Ok(())
    }

    /// The `(box, dfl)` terms over the foreground anchors (both 0 without
    /// any).
    fn foreground_terms(
        &self,
        fp: &FlatPredictions,
        fg: &Foreground,
        tss: f32,
    ) -> Result<(Tensor, Tensor)> {
        let device = fp.pred_scores.device();
        if fg.is_empty() {
            let zero = || Tensor::zeros((), DType::F32, device);
            return Ok((zero()?, zero()?));
        }
        let rows = fg.rows_tensor(device)?; // [F]
        let weight = fg.weight_tensor(device)?; // [F]
        let pred_boxes = gather_rows(&fp.pred_bboxes, &rows)?; // [F, 4]
        let target_boxes = fg.boxes_tensor(device)?; // [F, 4]
        let box_iou = box_iou::box_term(&pred_boxes, &target_boxes, &weight, tss)?;
        let pred_dist = gather_rows(&fp.pred_distri, &rows)?; // [F, 4·reg_max]
        let dfl = dfl::dfl_term(&pred_dist, &fg.ltrb, self.cfg.reg_max, &weight, tss)?;
        Ok((box_iou, dfl))
    }

    /// Step 6: the gains, the batch factor of the total and the reported
    /// parts.
    fn output(
        &self,
        terms: LossTerms,
        batch: usize,
        tss: f32,
        bt: BatchTargets,
    ) -> Result<LossOutput> {
        let cfg = &self.cfg;
        let parts = Tensor::stack(
            &[
                (terms.box_iou * cfg.box_gain as f64)?,
                (terms.class * cfg.cls_gain as f64)?,
                (terms.dfl * cfg.dfl_gain as f64)?,
            ],
            0,
        )?; // [3]: box, cls, dfl
        let items: Vec<f32> = parts.detach().to_vec1()?;
        let total = (parts.sum_all()? * batch as f64)?;
        Ok(LossOutput {
            total,
            box_loss: items[0],
            cls_loss: items[1],
            dfl_loss: items[2],
            num_fg: bt.fg.len(),
            target_scores_sum: tss,
            assignments: bt.assignments,
        })
    }
}

/// The class term on the batch's `[B·N·nc]` target scores.
fn class_term(fp: &FlatPredictions, target_scores: &[f32], tss: f32) -> Result<Tensor> {
    let (b, n, nc) = fp.pred_scores.dims3()?;
    let ts = Tensor::from_slice(target_scores, (b, n, nc), fp.pred_scores.device())?;
    class::class_term(&fp.pred_scores, &ts, tss)
}

/// Rows `rows [F]` of `x [B, N, C]` viewed as `[B·N, C]`: `[F, C]`.
fn gather_rows(x: &Tensor, rows: &Tensor) -> Result<Tensor> {
    let (b, n, c) = x.dims3()?;
    Ok(x.reshape((b * n, c))?.index_select(rows, 0)?)
}

/// Convenience: the loss on a fresh [`DetectionLoss`].
pub fn detection_loss(
    levels: &[Tensor],
    targets: &[Vec<Label>],
    cfg: &LossConfig,
) -> Result<LossOutput> {
    DetectionLoss::with_config(cfg.clone()).compute(levels, targets)
}
