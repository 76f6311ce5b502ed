//! Ground truth → loss targets. Per image, the task-aligned assigner
//! ([`crate::trainer::assign`]) runs on detached predictions (sigmoid scores,
//! boxes and anchors in input pixels); its results are gathered into the
//! batch's targets: the soft target score of every anchor and class
//! (`[B, N, nc]`, background included), and for the foreground anchors only,
//! their row in the `[B·N, …]` views, target box, DFL side distances and
//! weight.
//!
//! The assigner runs on CPU `Vec`s, so the detached predictions are copied
//! out once per batch and the targets become tensors once per batch.

use anyhow::{Context, Result};
use candle_core::{Device, Tensor};

use super::anchors::bbox2dist;
use super::predictions::FlatPredictions;
use super::LossConfig;
use crate::shared::bbox::Label;
use crate::trainer::assign::Assignment;

/// The detached predictions the assigner reads, copied out once per batch.
struct AssignerInputs {
    /// `[B·N·nc]` sigmoid class scores, row-major.
    scores: Vec<f32>,
    /// `[B·N·4]` decoded `xyxy` boxes in grid units.
    boxes: Vec<f32>,
    /// `[N]` anchor centres in input pixels.
    anchors_px: Vec<[f32; 2]>,
}

impl AssignerInputs {
    fn detached(fp: &FlatPredictions) -> Result<Self> {
        let scores: Vec<f32> = candle_nn::ops::sigmoid(&fp.pred_scores.detach())?
            .flatten_all()?
            .to_vec1()?;
        let boxes: Vec<f32> = fp.pred_bboxes.detach().flatten_all()?.to_vec1()?;
        let anchors_px: Vec<[f32; 2]> = fp
            .anchor_points
            .iter()
            .zip(&fp.stride_per_anchor)
            .map(|(a, &s)| [a[0] * s, a[1] * s])
            .collect();
        Ok(Self {
            scores,
            boxes,
            anchors_px,
        })
    }

    /// Image `bi`'s predicted boxes in input pixels, written to `out` (`[N]`).
    fn image_boxes_px(&self, bi: usize, stride_per_anchor: &[f32], out: &mut [[f32; 4]]) {
        let n = out.len();
        for (i, p) in out.iter_mut().enumerate() {
            let s = stride_per_anchor[i];
            let o = (bi * n + i) * 4;
            *p = [
                self.boxes[o] * s,
                self.boxes[o + 1] * s,
                self.boxes[o + 2] * s,
                self.boxes[o + 3] * s,
            ];
        }
    }
}

/// The foreground anchors of a batch, in image order then anchor order.
#[derive(Debug, Default)]
pub(super) struct Foreground {
    /// `[F]` row `b·N + n` of the anchor in the `[B·N, …]` views.
    pub rows: Vec<u32>,
    /// `[F·4]` the assigned gt box, `xyxy` in the anchor's grid units.
    pub boxes: Vec<f32>,
    /// `[F]` DFL targets: `(l, t, r, b)` from the anchor to that box, grid
    /// units, clamped below the last bin.
    pub ltrb: Vec<[f32; 4]>,
    /// `[F]` the anchor's weight: the sum of its target scores.
    pub weight: Vec<f32>,
}

impl Foreground {
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Adds the positives of image `bi`'s assignment.
    fn push_image(&mut self, bi: usize, a: &Assignment, fp: &FlatPredictions, reg_max: usize) {
        let n = a.num_anchors();
        for i in (0..n).filter(|&i| a.fg_mask[i]) {
            let s = fp.stride_per_anchor[i];
            let t = a.target_bboxes[i];
            let t = [t[0] / s, t[1] / s, t[2] / s, t[3] / s];
            self.rows.push((bi * n + i) as u32);
            self.boxes.extend_from_slice(&t);
            self.ltrb
                .push(bbox2dist(&fp.anchor_points[i], &t, (reg_max - 1) as f32));
            self.weight.push(a.scores_of(i).iter().sum());
        }
    }

    /// `[F]` the rows, for `index_select` on a `[B·N, …]` view.
    pub fn rows_tensor(&self, device: &Device) -> Result<Tensor> {
        Ok(Tensor::from_slice(&self.rows, self.len(), device)?)
    }

    /// `[F]` the weights.
    pub fn weight_tensor(&self, device: &Device) -> Result<Tensor> {
        Ok(Tensor::from_slice(&self.weight, self.len(), device)?)
    }

    /// `[F, 4]` the target boxes.
    pub fn boxes_tensor(&self, device: &Device) -> Result<Tensor> {
        Ok(Tensor::from_slice(&self.boxes, (self.len(), 4), device)?)
    }
}

/// Everything the loss needs from the assigner, for one batch.
#[derive(Debug)]
pub(super) struct BatchTargets {
    /// `[B·N·nc]` row-major soft target scores (0 for background).
    pub target_scores: Vec<f32>,
    pub fg: Foreground,
    /// One per image, anchors in [`FlatPredictions`] order.
    pub assignments: Vec<Assignment>,
}

impl BatchTargets {
    /// `tss = max(Σ target_scores, 1)`, the normaliser of all three terms.
    pub fn target_scores_sum(&self) -> f32 {
        self.target_scores.iter().sum::<f32>().max(1.0)
    }
}

/// Runs the assigner on each image of the batch (`targets[b]`: image `b`'s
/// labels in input pixels, `weights[b]` their weights, 1 when absent) and
/// gathers the targets.
pub(super) fn assign_batch(
    cfg: &LossConfig,
    fp: &FlatPredictions,
    targets: &[Vec<Label>],
    weights: Option<&[Vec<f32>]>,
) -> Result<BatchTargets> {
    let nc = cfg.num_classes;
    let (b, n, _) = fp.pred_scores.dims3()?;
    let inputs = AssignerInputs::detached(fp)?;
    let mut out = BatchTargets {
        target_scores: Vec::with_capacity(b * n * nc),
        fg: Foreground::default(),
        assignments: Vec::with_capacity(b),
    };
    let mut pd_px = vec![[0f32; 4]; n];
    for (bi, gts) in targets.iter().enumerate() {
        inputs.image_boxes_px(bi, &fp.stride_per_anchor, &mut pd_px);
        let mut a = cfg
            .assigner
            .assign(
                &inputs.scores[bi * n * nc..(bi + 1) * n * nc],
                &pd_px,
                &inputs.anchors_px,
                gts,
            )
            .with_context(|| format!("loss: image {bi} of the batch"))?;
        if let Some(w) = weights.map(|w| &w[bi]) {
            scale_by_target_weight(&mut a, w);
        }
        out.target_scores.extend_from_slice(&a.target_scores);
        out.fg.push_image(bi, &a, fp, cfg.reg_max);
        out.assignments.push(a);
    }
    Ok(out)
}

/// Scales the target scores of each foreground anchor by the weight of the
/// target it is assigned to.
fn scale_by_target_weight(a: &mut Assignment, weights: &[f32]) {
    let nc = a.num_classes;
    for n in 0..a.fg_mask.len() {
        if a.fg_mask[n] {
            let w = weights.get(a.target_gt_idx[n]).copied().unwrap_or(1.0);
            for v in &mut a.target_scores[n * nc..(n + 1) * nc] {
                *v *= w;
            }
        }
    }
}
