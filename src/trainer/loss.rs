//! The YOLOv8 detection loss (ultralytics `utils/loss.py::v8DetectionLoss`
//! with `BboxLoss` and `DFLoss`) on candle tensors.
//!
//! Input: the raw head outputs per level, `[B, 4·reg_max + nc, H, W]`
//! (channels `0..4·reg_max` are the box-side distributions, side-major
//! `l, t, r, b` with `reg_max` bins each; the last `nc` are class logits), and
//! the ground truths per image in input pixels. Steps, as ultralytics:
//!
//! 1. flatten and concatenate the levels to `[B, N, 4·reg_max + nc]`;
//! 2. anchors at the grid-cell centres (`+0.5`, grid units) with a stride per
//!    anchor ([`make_anchors`]);
//! 3. decode boxes: softmax over the bins · `0..reg_max` gives the four side
//!    distances, [`dist2bbox`] makes `xyxy` in grid units;
//! 4. the task-aligned assigner ([`crate::trainer::assign`]) per image on detached
//!    values: sigmoid scores, boxes × stride (pixels), anchors × stride;
//! 5. `cls = BCEWithLogits(scores, target_scores).sum() / tss` with
//!    `tss = max(target_scores.sum(), 1)`;
//!    `box = Σ_fg (1 − CIoU(pred, target / stride)) · w / tss` with `w` the
//!    anchor's target-score sum; `dfl = Σ_fg DFL(dist, bbox2dist(target /
//!    stride)) · w / tss`;
//! 6. gains box 7.5, cls 0.5, dfl 1.5; the total is
//!    `(box + cls + dfl) · B` (what ultralytics back-propagates), the parts are
//!    reported with gains but without the batch factor (its `loss_items`).
//!
//! The assigner runs on CPU `Vec`s; the targets become tensors once per batch
//! and foreground rows are gathered with one `index_select` on the
//! `[B·N, …]` view, so the tensor work does not grow with the number of
//! objects beyond those rows.
//!
//! Candle has no `atan`, which CIoU's aspect term needs; [`atan`] builds it
//! from differentiable ops (three half-angle reductions and an odd Taylor
//! polynomial, error below 1e-9 before f32 rounding).

use anyhow::{ensure, Context, Result};
use candle_core::{DType, Tensor, D};

use crate::shared::bbox::Label;
pub use crate::trainer::assign::{bbox_iou, ciou, Assignment, Stal, TaskAlignedAssigner, IOU_EPS};

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

/// Ultralytics' `make_anchors`: for each level of grid `(h, w)`, points
/// `(x + offset, y + offset)` row by row (y outer), in that level's grid
/// units, and the level's stride per point. The training loss uses
/// `offset = 0.5`.
pub fn make_anchors(
    shapes: &[(usize, usize)],
    strides: &[f32],
    offset: f32,
) -> (Vec<[f32; 2]>, Vec<f32>) {
    let mut points = Vec::new();
    let mut stride = Vec::new();
    for (&(h, w), &s) in shapes.iter().zip(strides) {
        for y in 0..h {
            for x in 0..w {
                points.push([x as f32 + offset, y as f32 + offset]);
                stride.push(s);
            }
        }
    }
    (points, stride)
}

/// Ultralytics' `dist2bbox(xywh=False)`: side distances `(l, t, r, b)` from
/// an anchor point to an `xyxy` box.
pub fn dist2bbox(dist: &[f32; 4], anchor: &[f32; 2]) -> [f32; 4] {
    [
        anchor[0] - dist[0],
        anchor[1] - dist[1],
        anchor[0] + dist[2],
        anchor[1] + dist[3],
    ]
}

/// Ultralytics' `bbox2dist`: `(l, t, r, b)` distances from the anchor to the
/// sides of an `xyxy` box, clamped to `[0, reg_max − 0.01]`. The loss passes
/// `reg_max − 1` (15 for 16 bins), so targets stay below the last bin.
pub fn bbox2dist(anchor: &[f32; 2], bbox: &[f32; 4], reg_max: f32) -> [f32; 4] {
    let hi = reg_max - 0.01;
    [
        (anchor[0] - bbox[0]).clamp(0.0, hi),
        (anchor[1] - bbox[1]).clamp(0.0, hi),
        (bbox[2] - anchor[0]).clamp(0.0, hi),
        (bbox[3] - anchor[1]).clamp(0.0, hi),
    ]
}

/// Tensor `dist2bbox(xywh=False)`: `distance [..., N, 4]` (l, t, r, b) and
/// `anchor_points [N, 2]` to `xyxy [..., N, 4]`.
pub fn dist2bbox_tensor(distance: &Tensor, anchor_points: &Tensor) -> Result<Tensor> {
    let lt = distance.narrow(D::Minus1, 0, 2)?;
    let rb = distance.narrow(D::Minus1, 2, 2)?;
    let x1y1 = anchor_points.broadcast_sub(&lt)?;
    let x2y2 = anchor_points.broadcast_add(&rb)?;
    Ok(Tensor::cat(&[&x1y1, &x2y2], D::Minus1)?)
}

/// Softmax over the last dimension; the max is detached (it cancels).
fn softmax_last(x: &Tensor) -> Result<Tensor> {
    let max = x.max_keepdim(D::Minus1)?.detach();
    let e = x.broadcast_sub(&max)?.exp()?;
    Ok(e.broadcast_div(&e.sum_keepdim(D::Minus1)?)?)
}

/// Log-softmax over the last dimension; the max is detached (it cancels).
fn log_softmax_last(x: &Tensor) -> Result<Tensor> {
    let max = x.max_keepdim(D::Minus1)?.detach();
    let d = x.broadcast_sub(&max)?;
    let lse = d.exp()?.sum_keepdim(D::Minus1)?.log()?;
    Ok(d.broadcast_sub(&lse)?)
}

/// The DFL expectation: `[..., 4·reg_max]` logits to `[..., 4]` distances,
/// `Σ_i softmax(bins)_i · i` per side.
pub fn dfl_decode(pred_distri: &Tensor, reg_max: usize) -> Result<Tensor> {
    let dims = pred_distri.dims().to_vec();
    let c = *dims.last().context("dfl_decode: scalar input")?;
    ensure!(
        c == 4 * reg_max,
        "dfl_decode: last dim {c} is not 4 × {reg_max}"
    );
    let rows = pred_distri.elem_count() / reg_max;
    let p = softmax_last(&pred_distri.reshape((rows, reg_max))?)?;
    let proj = Tensor::arange(0u32, reg_max as u32, pred_distri.device())?
        .to_dtype(pred_distri.dtype())?
        .reshape((reg_max, 1))?;
    let mut out_dims = dims;
    *out_dims.last_mut().unwrap() = 4;
    Ok(p.matmul(&proj)?.reshape(out_dims)?)
}

/// `atan` from differentiable candle ops, on any device: three half-angle
/// steps `y ← y / (1 + √(1 + y²))` bring `|y| ≤ tan(π/16) ≈ 0.199`, then
/// `atan(x) = 8 · (y − y³/3 + … − y¹¹/11)` (next term < 6e-11).
pub fn atan(x: &Tensor) -> Result<Tensor> {
    let mut y = x.clone();
    for _ in 0..3 {
        let den = ((y.sqr()? + 1.0)?.sqrt()? + 1.0)?;
        y = (y / den)?;
    }
    let y2 = y.sqr()?;
    let mut p = Tensor::full(1.0f32 / 11.0, y.shape(), y.device())?.to_dtype(y.dtype())?;
    for c in [1.0 / 9.0, 1.0 / 7.0, 1.0 / 5.0, 1.0 / 3.0, 1.0] {
        // p ← c − y² · p
        p = (&y2 * &p)?.affine(-1.0, c)?;
    }
    Ok(((y * p)? * 8.0)?)
}

/// Tensor CIoU of `xyxy` boxes `box1 [..., 4]` and `box2 [..., 4]` (same
/// shape), giving `[...]`. Ultralytics' `bbox_iou(xywh=False, CIoU=True)`
/// including its eps placement and its detached `alpha`; gradients flow into
/// both boxes.
pub fn ciou_tensor(box1: &Tensor, box2: &Tensor) -> Result<Tensor> {
    let eps = IOU_EPS as f64;
    let parts = |b: &Tensor| -> Result<[Tensor; 4]> {
        let c = |i| -> Result<Tensor> { Ok(b.narrow(D::Minus1, i, 1)?.squeeze(D::Minus1)?) };
        Ok([c(0)?, c(1)?, c(2)?, c(3)?])
    };
    let [b1x1, b1y1, b1x2, b1y2] = parts(box1)?;
    let [b2x1, b2y1, b2x2, b2y2] = parts(box2)?;
    let w1 = (&b1x2 - &b1x1)?;
    let h1 = ((&b1y2 - &b1y1)? + eps)?;
    let w2 = (&b2x2 - &b2x1)?;
    let h2 = ((&b2y2 - &b2y1)? + eps)?;
    let iw = (b1x2.minimum(&b2x2)? - b1x1.maximum(&b2x1)?)?.relu()?;
    let ih = (b1y2.minimum(&b2y2)? - b1y1.maximum(&b2y1)?)?.relu()?;
    let inter = (iw * ih)?;
    let union = ((((&w1 * &h1)? + (&w2 * &h2)?)? - &inter)? + eps)?;
    let iou = (inter / union)?;
    let cw = (b1x2.maximum(&b2x2)? - b1x1.minimum(&b2x1)?)?;
    let ch = (b1y2.maximum(&b2y2)? - b1y1.minimum(&b2y1)?)?;
    let c2 = ((cw.sqr()? + ch.sqr()?)? + eps)?;
    let dx = (((&b2x1 + &b2x2)? - &b1x1)? - &b1x2)?;
    let dy = (((&b2y1 + &b2y2)? - &b1y1)? - &b1y2)?;
    let rho2 = ((dx.sqr()? + dy.sqr()?)? / 4.0)?;
    let d = (atan(&(w2 / h2)?)? - atan(&(w1 / h1)?)?)?;
    let v = (d.sqr()? * (4.0 / (std::f64::consts::PI * std::f64::consts::PI)))?;
    let alpha = (&v / ((&v - &iou)? + (1.0 + eps))?)?.detach();
    Ok((iou - ((rho2 / c2)? + (v * alpha)?)?)?)
}

/// Elementwise `BCEWithLogits(x, t)` in the stable form
/// `max(x, 0) − x·t + ln(1 + e^{−|x|})` (gradient `σ(x) − t`, also at 0).
pub fn bce_with_logits(x: &Tensor, t: &Tensor) -> Result<Tensor> {
    let soft = (x.abs()?.neg()?.exp()? + 1.0)?.log()?;
    Ok(((x.relu()? - (x * t)?)? + soft)?)
}

/// Ultralytics' `DFLoss` per anchor: `pred_dist [F, 4·reg_max]` logits and
/// `target_ltrb [F]` side distances (grid units; clamped to
/// `[0, reg_max − 1 − 0.01]`). A target `d` between bins `l = ⌊d⌋` and
/// `l + 1` gives `(l + 1 − d) · CE(l) + (d − l) · CE(l + 1)` per side; the
/// four sides are averaged. Returns `[F]`.
pub fn dfl_loss(pred_dist: &Tensor, target_ltrb: &[[f32; 4]], reg_max: usize) -> Result<Tensor> {
    let f = target_ltrb.len();
    ensure!(
        pred_dist.dims() == [f, 4 * reg_max],
        "dfl_loss: pred_dist {:?} for {f} targets of 4 × {reg_max} bins",
        pred_dist.dims()
    );
    ensure!(reg_max >= 2, "dfl_loss: reg_max must be at least 2");
    // Weights of the two bins, a quarter each for the mean over the sides.
    let mut w = vec![0f32; f * 4 * reg_max];
    let hi = reg_max as f32 - 1.0 - 0.01;
    for (i, t) in target_ltrb.iter().flatten().enumerate() {
        let t = t.clamp(0.0, hi);
        let tl = t as usize; // t ≥ 0: truncation is floor, as `.long()`
        let wl = (tl + 1) as f32 - t;
        w[i * reg_max + tl] = wl / 4.0;
        w[i * reg_max + tl + 1] = (1.0 - wl) / 4.0;
    }
    let w =
        Tensor::from_vec(w, (f, 4 * reg_max), pred_dist.device())?.to_dtype(pred_dist.dtype())?;
    let logp =
        log_softmax_last(&pred_dist.reshape((f * 4, reg_max))?)?.reshape((f, 4 * reg_max))?;
    Ok((logp * w)?.sum(1)?.neg()?)
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
        let cfg = &self.cfg;
        let (nc, rm) = (cfg.num_classes, cfg.reg_max);
        let no = 4 * rm + nc;
        ensure!(!levels.is_empty(), "loss: no levels");
        ensure!(
            levels.len() == cfg.strides.len(),
            "loss: {} levels but {} strides",
            levels.len(),
            cfg.strides.len()
        );
        ensure!(rm >= 2, "loss: reg_max must be at least 2");
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
            flat.push(x.reshape((b, c, h * w))?);
            shapes.push((h, w));
        }
        let x = Tensor::cat(&flat, 2)?
            .to_dtype(DType::F32)?
            .transpose(1, 2)?
            .contiguous()?;
        let pred_distri = x.narrow(2, 0, 4 * rm)?.contiguous()?;
        let pred_scores = x.narrow(2, 4 * rm, nc)?.contiguous()?;
        let (anchor_points, stride_per_anchor) = make_anchors(&shapes, &cfg.strides, 0.5);
        let n = anchor_points.len();
        let anchors_t = Tensor::from_vec(
            anchor_points
                .iter()
                .flatten()
                .copied()
                .collect::<Vec<f32>>(),
            (n, 2),
            x.device(),
        )?;
        let pred_bboxes = dist2bbox_tensor(&dfl_decode(&pred_distri, rm)?, &anchors_t)?;
        Ok(FlatPredictions {
            pred_distri,
            pred_scores,
            pred_bboxes,
            anchor_points,
            stride_per_anchor,
        })
    }

    /// The loss of one batch: `levels` as in [`Self::flatten`], `targets[b]`
    /// the labels of image `b` (boxes in input pixels, class ids below
    /// `num_classes`). Images and whole batches without objects are fine.
    pub fn compute(&self, levels: &[Tensor], targets: &[Vec<Label>]) -> Result<LossOutput> {
        let cfg = &self.cfg;
        let (nc, rm) = (cfg.num_classes, cfg.reg_max);
        ensure!(
            cfg.assigner.num_classes == nc,
            "loss: assigner has {} classes, loss {nc}",
            cfg.assigner.num_classes
        );
        let fp = self.flatten(levels)?;
        let (b, n, _) = fp.pred_scores.dims3()?;
        ensure!(
            targets.len() == b,
            "loss: {} target lists for a batch of {b}",
            targets.len()
        );
        let device = fp.pred_scores.device().clone();

        // Detached copies for the assigner.
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

        let mut target_scores = Vec::with_capacity(b * n * nc);
        let mut fg_idx: Vec<u32> = Vec::new();
        let mut fg_boxes: Vec<f32> = Vec::new();
        let mut fg_ltrb: Vec<[f32; 4]> = Vec::new();
        let mut fg_weight: Vec<f32> = Vec::new();
        let mut assignments = Vec::with_capacity(b);
        let mut pd_px = vec![[0f32; 4]; n];
        for (bi, gts) in targets.iter().enumerate() {
            for (i, p) in pd_px.iter_mut().enumerate() {
                let s = fp.stride_per_anchor[i];
                let o = (bi * n + i) * 4;
                *p = [
                    boxes[o] * s,
                    boxes[o + 1] * s,
                    boxes[o + 2] * s,
                    boxes[o + 3] * s,
                ];
            }
            let a = cfg
                .assigner
                .assign(
                    &scores[bi * n * nc..(bi + 1) * n * nc],
                    &pd_px,
                    &anchors_px,
                    gts,
                )
                .with_context(|| format!("loss: image {bi} of the batch"))?;
            target_scores.extend_from_slice(&a.target_scores);
            for i in (0..n).filter(|&i| a.fg_mask[i]) {
                let s = fp.stride_per_anchor[i];
                let t = a.target_bboxes[i];
                let t = [t[0] / s, t[1] / s, t[2] / s, t[3] / s];
                fg_idx.push((bi * n + i) as u32);
                fg_boxes.extend_from_slice(&t);
                fg_ltrb.push(bbox2dist(&fp.anchor_points[i], &t, (rm - 1) as f32));
                fg_weight.push(a.scores_of(i).iter().sum());
            }
            assignments.push(a);
        }
        let tss = target_scores.iter().sum::<f32>().max(1.0);

        let ts = Tensor::from_vec(target_scores, (b, n, nc), &device)?;
        let cls = (bce_with_logits(&fp.pred_scores, &ts)?.sum_all()? / tss as f64)?;

        let num_fg = fg_idx.len();
        let zero = || Tensor::zeros((), DType::F32, &device);
        let (box_l, dfl_l) = if num_fg == 0 {
            (zero()?, zero()?)
        } else {
            let idx = Tensor::from_vec(fg_idx, num_fg, &device)?;
            let w = Tensor::from_vec(fg_weight, num_fg, &device)?;
            let pb = fp.pred_bboxes.reshape((b * n, 4))?.index_select(&idx, 0)?;
            let tb = Tensor::from_vec(fg_boxes, (num_fg, 4), &device)?;
            let iou = ciou_tensor(&pb, &tb)?;
            let box_l = ((iou.affine(-1.0, 1.0)? * &w)?.sum_all()? / tss as f64)?;
            let pd = fp
                .pred_distri
                .reshape((b * n, 4 * rm))?
                .index_select(&idx, 0)?;
            let dfl_l = ((dfl_loss(&pd, &fg_ltrb, rm)? * &w)?.sum_all()? / tss as f64)?;
            (box_l, dfl_l)
        };
        let parts = Tensor::stack(
            &[
                (box_l * cfg.box_gain as f64)?,
                (cls * cfg.cls_gain as f64)?,
                (dfl_l * cfg.dfl_gain as f64)?,
            ],
            0,
        )?;
        let items: Vec<f32> = parts.detach().to_vec1()?;
        let total = (parts.sum_all()? * b as f64)?;
        Ok(LossOutput {
            total,
            box_loss: items[0],
            cls_loss: items[1],
            dfl_loss: items[2],
            num_fg,
            target_scores_sum: tss,
            assignments,
        })
    }
}

/// Convenience: the loss on a fresh [`DetectionLoss`].
pub fn detection_loss(
    levels: &[Tensor],
    targets: &[Vec<Label>],
    cfg: &LossConfig,
) -> Result<LossOutput> {
    DetectionLoss::with_config(cfg.clone()).compute(levels, targets)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shared::bbox::BBox;
    use candle_core::{Device, Var};
    use rand::{Rng, SeedableRng};

    fn label(class_id: usize, b: [f32; 4]) -> Label {
        Label {
            class_id,
            bbox: BBox::new(b[0], b[1], b[2], b[3]),
        }
    }

    fn rel_close(a: f32, b: f64, rel: f64) -> bool {
        ((a as f64) - b).abs() <= rel * b.abs().max(1e-6)
    }

    /// Uniform random logits in `[-lo, lo)`.
    fn random_levels(
        seed: u64,
        b: usize,
        no: usize,
        shapes: &[(usize, usize)],
        lo: f32,
    ) -> Vec<Tensor> {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        shapes
            .iter()
            .map(|&(h, w)| {
                let v: Vec<f32> = (0..b * no * h * w)
                    .map(|_| rng.random_range(-lo..lo))
                    .collect();
                Tensor::from_vec(v, (b, no, h, w), &Device::Cpu).unwrap()
            })
            .collect()
    }

    #[test]
    fn tensor_ciou_matches_plain_and_atan_is_accurate() {
        let pairs = [
            ([0.0f32, 0.0, 4.0, 2.0], [0.0f32, 0.0, 4.0, 2.0]),
            ([0.0, 0.0, 2.0, 2.0], [4.0, 0.0, 6.0, 2.0]),
            ([0.0, 0.0, 4.0, 4.0], [0.0, 0.0, 2.0, 2.0]),
            ([1.0, 0.0, 3.0, 2.0], [0.0, 0.0, 4.0, 2.0]),
            ([0.3, 1.2, 9.5, 2.0], [-3.0, 0.5, 4.0, 12.0]),
        ];
        let a: Vec<f32> = pairs.iter().flat_map(|p| p.0).collect();
        let b: Vec<f32> = pairs.iter().flat_map(|p| p.1).collect();
        let ta = Tensor::from_vec(a, (pairs.len(), 4), &Device::Cpu).unwrap();
        let tb = Tensor::from_vec(b, (pairs.len(), 4), &Device::Cpu).unwrap();
        let got: Vec<f32> = ciou_tensor(&ta, &tb).unwrap().to_vec1().unwrap();
        for (g, (p, q)) in got.iter().zip(&pairs) {
            assert!((g - ciou(p, q)).abs() < 1e-6, "{g} vs {}", ciou(p, q));
        }
        // Hand values (see assign::tests::iou_and_ciou_by_hand).
        assert!((got[0] - 1.0).abs() < 1e-6);
        assert!((got[1] + 0.4).abs() < 1e-6);
        assert!((got[2] - 0.1875).abs() < 1e-6);
        assert!((got[3] - 0.4967518).abs() < 2e-6);

        let xs: Vec<f32> = (-400..=400).map(|i| (i as f32 * 0.05).powi(3)).collect();
        let t = Tensor::from_vec(xs.clone(), xs.len(), &Device::Cpu).unwrap();
        let at: Vec<f32> = atan(&t).unwrap().to_vec1().unwrap();
        for (x, y) in xs.iter().zip(at) {
            assert!(
                (y as f64 - (*x as f64).atan()).abs() < 1e-6,
                "atan({x}) = {y}"
            );
        }
    }

    #[test]
    fn dist2bbox_bbox2dist_by_hand_and_round_trip() {
        // Anchor (2.5, 3.5), distances l 1, t 2, r 3, b 4:
        // box (2.5 − 1, 3.5 − 2, 2.5 + 3, 3.5 + 4) = (1.5, 1.5, 5.5, 7.5).
        let b = dist2bbox(&[1.0, 2.0, 3.0, 4.0], &[2.5, 3.5]);
        assert_eq!(b, [1.5, 1.5, 5.5, 7.5]);
        assert_eq!(bbox2dist(&[2.5, 3.5], &b, 15.0), [1.0, 2.0, 3.0, 4.0]);
        // Clamped to [0, 15 − 0.01]: far sides to 14.99, a side behind the
        // anchor to 0.
        assert_eq!(
            bbox2dist(&[0.5, 0.5], &[-20.0, 0.0, 0.25, 30.0], 15.0),
            [14.99, 0.5, 0.0, 14.99]
        );
        // Tensor version, anchors [N, 2] against [B, N, 4].
        let d = Tensor::from_vec(
            vec![1.0f32, 2.0, 3.0, 4.0, 0.0, 0.0, 0.0, 0.0],
            (1, 2, 4),
            &Device::Cpu,
        )
        .unwrap();
        let a = Tensor::from_vec(vec![2.5f32, 3.5, 0.5, 0.5], (2, 2), &Device::Cpu).unwrap();
        let got: Vec<Vec<Vec<f32>>> = dist2bbox_tensor(&d, &a).unwrap().to_vec3().unwrap();
        assert_eq!(
            got[0],
            vec![vec![1.5, 1.5, 5.5, 7.5], vec![0.5, 0.5, 0.5, 0.5]]
        );
    }

    #[test]
    fn anchors_run_level_by_level_row_by_row() {
        let (p, s) = make_anchors(&[(2, 3), (1, 1)], &[8.0, 16.0], 0.5);
        let expect = [
            [0.5, 0.5],
            [1.5, 0.5],
            [2.5, 0.5],
            [0.5, 1.5],
            [1.5, 1.5],
            [2.5, 1.5],
            [0.5, 0.5],
        ];
        assert_eq!(p, expect);
        assert_eq!(s, vec![8.0, 8.0, 8.0, 8.0, 8.0, 8.0, 16.0]);
    }

    /// Logits of one side: 0 except ln 4 at bin 3 and ln 2 at bin 4, so
    /// e^logit sums to 14 + 4 + 2 = 20 and p = 1/20, 4/20 (bin 3), 2/20 (bin 4).
    fn crafted_side() -> Vec<f32> {
        let mut v = vec![0f32; 16];
        v[3] = 4f32.ln();
        v[4] = 2f32.ln();
        v
    }

    #[test]
    fn dfl_by_hand() {
        let row: Vec<f32> = (0..4).flat_map(|_| crafted_side()).collect();
        let uniform = vec![0f32; 64];
        let x = Tensor::from_vec([row.clone(), uniform].concat(), (2, 64), &Device::Cpu).unwrap();
        // Target 3.3: bins 3 and 4 with weights 0.7 and 0.3.
        // Crafted: CE(3) = ln 20 − ln 4 = ln 5, CE(4) = ln 20 − ln 2 = ln 10:
        // 0.7 ln 5 + 0.3 ln 10 = 1.1266065 + 0.6907755 = 1.8173821 per side.
        // Uniform logits: CE = ln 16 for every bin: 2.7725887.
        let got: Vec<f32> = dfl_loss(&x, &[[3.3; 4], [3.3; 4]], 16)
            .unwrap()
            .to_vec1()
            .unwrap();
        assert!((got[0] - 1.8173821).abs() < 1e-5, "{got:?}");
        assert!((got[1] - 2.7725887).abs() < 1e-5, "{got:?}");
        // Sides averaged: targets 3 (CE ln 5 = 1.6094379), 4 (ln 10 =
        // 2.3025851), 0 (ln 20 = 2.9957323), 3.3 (1.8173821): mean 2.1812844.
        let x0 = x.narrow(0, 0, 1).unwrap();
        let got: Vec<f32> = dfl_loss(&x0, &[[3.0, 4.0, 0.0, 3.3]], 16)
            .unwrap()
            .to_vec1()
            .unwrap();
        assert!((got[0] - 2.1812844).abs() < 1e-5, "{got:?}");
        // Expectation of the crafted side: (3·4 + 4·2 + (120 − 3 − 4)·1)/20 =
        // 133/20 = 6.65; uniform: 7.5.
        let d: Vec<Vec<f32>> = dfl_decode(&x, 16).unwrap().to_vec2().unwrap();
        for v in &d[0] {
            assert!((v - 6.65).abs() < 1e-5, "{d:?}");
        }
        for v in &d[1] {
            assert!((v - 7.5).abs() < 1e-5, "{d:?}");
        }
    }

    #[test]
    fn bce_value_and_gradient() {
        // x = 0: ln 2 for any t, gradient σ(0) − t = 0.5 − t.
        // x = 2, t = 0.25: 2 − 0.5 + ln(1 + e⁻²) = 1.626928; gradient
        // σ(2) − 0.25 = 0.6307971. x = −30, t = 1: 30 (+ 9e-14).
        let x = Var::from_vec(vec![0f32, 0.0, 2.0, -30.0], 4, &Device::Cpu).unwrap();
        let t = Tensor::from_vec(vec![0f32, 0.8, 0.25, 1.0], 4, &Device::Cpu).unwrap();
        let l = bce_with_logits(x.as_tensor(), &t).unwrap();
        let v: Vec<f32> = l.to_vec1().unwrap();
        let expect = [
            std::f32::consts::LN_2,
            std::f32::consts::LN_2,
            1.626928,
            30.0,
        ];
        for (a, b) in v.iter().zip(expect) {
            assert!((a - b).abs() < 1e-5, "{v:?}");
        }
        let g: Vec<f32> = l
            .sum_all()
            .unwrap()
            .backward()
            .unwrap()
            .get(&x)
            .unwrap()
            .to_vec1()
            .unwrap();
        let expect = [0.5, -0.3, 0.6307971, -1.0];
        for (a, b) in g.iter().zip(expect) {
            assert!((a - b).abs() < 1e-5, "{g:?}");
        }
    }

    /// One image, one 2×2 level of stride 8 (16×16 px), one class; every side
    /// distribution is (almost) one-hot on bin 1 (logit 30, others 0), class
    /// logits 0.
    #[test]
    fn full_loss_by_hand() {
        let mut v = vec![0f32; 65 * 4];
        for c in (0..64).filter(|c| c % 16 == 1) {
            for p in 0..4 {
                v[c * 4 + p] = 30.0;
            }
        }
        let x = Tensor::from_vec(v, (1, 65, 2, 2), &Device::Cpu).unwrap();
        let mut cfg = LossConfig::new(1);
        cfg.strides = vec![8.0];
        let out = detection_loss(&[x], &[vec![label(0, [0.0, 0.0, 14.0, 8.0])]], &cfg).unwrap();
        // Anchors (grid) (0.5,0.5), (1.5,0.5), (0.5,1.5), (1.5,1.5); px ×8.
        // Every distance decodes to 1 (+1e-11): pred boxes anchor ± 8 px:
        // anchor 0 (−4,−4,12,12), anchor 1 (4,−4,20,12).
        // gt (0,0,14,8): candidates are anchors 0 (4,4) and 1 (12,4).
        // CIoU(gt, pred0): inter 12·8 = 96, union 112 + 256 − 96 = 272,
        //   IoU 0.3529412; enclosing 18×16, c² = 580; rho² = 3² = 9;
        //   v = 4/π² (atan 1.75 − atan 1)² = 0.0287307, alpha = v/(v − IoU + 1)
        //   = 0.0425143: CIoU0 = 0.3529412 − 9/580 − 0.0012215 = 0.3362025.
        // CIoU(gt, pred1): inter 10·8 = 80, union 288, IoU 0.2777778;
        //   enclosing 20×16, c² = 656; rho² = 5² = 25; alpha = 0.0382591:
        //   CIoU1 = 0.2777778 − 25/656 − 0.0010992 = 0.2385688.
        // Scores σ(0) = 0.5: align = √0.5 · CIoU⁶; anchor 0 has both maxima:
        //   t0 = CIoU0 · align0/(align0 + 1e-9) = 0.3362021,
        //   t1 = CIoU0 · align1/(align0 + 1e-9) = 0.0429217. tss = max(0.379, 1) = 1.
        // cls: BCE(0, t) = ln 2 at all 4 anchors: 4 ln 2 · 0.5 = 1.3862944.
        // box (grid units, same CIoU up to eps): 7.5 · ((1 − 0.3362024)·t0 +
        //   (1 − 0.2385688)·t1) = 1.9188907.
        // dfl: log-softmax is 0 at bin 1 and −30 elsewhere. Targets (grid):
        //   anchor 0 ltrb (0.5, 0.5, 1.25, 0.5): 0.5·30 + 0.5·0 = 15 (×3) and
        //   0.75·0 + 0.25·30 = 7.5: mean 13.125; anchor 1 (1.5, 0.5, 0.25, 0.5):
        //   15, 15, 0.75·30 = 22.5, 15: mean 16.875.
        //   1.5 · (13.125·t0 + 16.875·t1) = 7.7054356.
        // Total (batch 1) 11.0106207. The numpy re-implementation of
        // ultralytics (see `matches_numpy_reference`) gives the same numbers.
        assert_eq!(out.num_fg, 2);
        assert!(rel_close(out.cls_loss, 1.3862944, 1e-5), "{out:?}");
        assert!(rel_close(out.box_loss, 1.9188907, 1e-4), "{out:?}");
        assert!(rel_close(out.dfl_loss, 7.7054356, 1e-4), "{out:?}");
        let total: f32 = out.total.to_vec0().unwrap();
        assert!(rel_close(total, 11.0106207, 1e-4), "{total}");
        assert!(rel_close(
            out.assignments[0].target_scores[1],
            0.0429217,
            1e-4
        ));
    }

    /// The inputs of the numpy reference: value `i` (flat index over
    /// `[B, C, H, W]`) of level `l` is `1.5 sin(0.37 i + 1.3 l + 0.2) +
    /// 0.4 cos(0.23 i)`, minus `0.35 · bin` on the box channels (short boxes).
    fn reference_levels() -> Vec<Tensor> {
        [(4usize, 4usize), (2, 2)]
            .iter()
            .enumerate()
            .map(|(l, &(h, w))| {
                let (b, c) = (3, 66);
                let v: Vec<f32> = (0..b * c * h * w)
                    .map(|i| {
                        let fi = i as f64;
                        let ch = (i / (h * w)) % c;
                        let mut v = 1.5 * (0.37 * fi + 1.3 * l as f64 + 0.2).sin()
                            + 0.4 * (0.23 * fi).cos();
                        if ch < 64 {
                            v -= 0.35 * (ch % 16) as f64;
                        }
                        v as f32
                    })
                    .collect();
                Tensor::from_vec(v, (b, c, h, w), &Device::Cpu).unwrap()
            })
            .collect()
    }

    /// Against an independent numpy re-implementation of ultralytics'
    /// v8DetectionLoss / TaskAlignedAssigner / BboxLoss / DFLoss / bbox_iou
    /// (vectorised like the torch code, float64, ties in top-k to the lower
    /// index), run once; the numbers are its output. Batch of 3 (32×32
    /// images, levels 4×4 @ 8 and 2×2 @ 16, 2 classes), the last image
    /// without objects.
    #[test]
    fn matches_numpy_reference() {
        let levels = reference_levels();
        let few = vec![
            vec![
                label(1, [2.0, 3.0, 29.0, 27.0]),
                label(0, [5.0, 4.0, 14.0, 13.0]),
            ],
            vec![label(0, [10.0, 12.0, 20.0, 30.0])],
            vec![],
        ];
        let many = vec![
            vec![
                label(1, [2.0, 3.0, 29.0, 27.0]),
                label(0, [5.0, 4.0, 14.0, 13.0]),
                label(0, [17.0, 1.0, 31.0, 15.0]),
                label(1, [1.0, 17.0, 15.0, 31.0]),
            ],
            vec![
                label(0, [10.0, 12.0, 20.0, 30.0]),
                label(1, [18.0, 2.0, 30.0, 12.0]),
                label(1, [0.0, 0.0, 32.0, 32.0]),
            ],
            vec![],
        ];
        let empty = vec![vec![], vec![], vec![]];
        // (targets, topk, total, [box, cls, dfl], fg, tss)
        type Case<'a> = (&'a Vec<Vec<Label>>, usize, f64, [f64; 3], usize, f64);
        let cases: [Case; 5] = [
            (
                &few,
                10,
                162.29584379516956,
                [3.553324067306917, 48.68938431616019, 1.8559062149227532],
                12,
                1.0,
            ),
            (
                &few,
                3,
                162.06370089396142,
                [3.5028010264933616, 48.68773323697238, 1.8306993678547387],
                6,
                1.0,
            ),
            (
                &many,
                10,
                100.3270034550617,
                [3.9281022138252575, 27.18190574288223, 2.3323265283130796],
                27,
                1.7958799024395165,
            ),
            (
                &many,
                3,
                94.70260176091234,
                [4.137005811391289, 25.088532764347303, 2.3419953445655244],
                16,
                1.9432664950322236,
            ),
            (
                &empty,
                10,
                145.893384841378,
                [0.0, 48.631128280459336, 0.0],
                0,
                1.0,
            ),
        ];
        for (targets, topk, total, items, fg, tss) in cases {
            let mut cfg = LossConfig::new(2);
            cfg.strides = vec![8.0, 16.0];
            cfg.assigner.topk = topk;
            let out = detection_loss(&levels, targets, &cfg).unwrap();
            let msg = format!("topk {topk}, {} gts: {out:?}", targets[0].len());
            assert_eq!(out.num_fg, fg, "{msg}");
            assert!(rel_close(out.target_scores_sum, tss, 1e-4), "{msg}");
            assert!(rel_close(out.box_loss, items[0], 1e-4), "{msg}");
            assert!(rel_close(out.cls_loss, items[1], 1e-5), "{msg}");
            assert!(rel_close(out.dfl_loss, items[2], 1e-4), "{msg}");
            assert!(
                rel_close(out.total.to_vec0::<f32>().unwrap(), total, 1e-5),
                "{msg}"
            );
        }
    }

    #[test]
    fn random_inputs_give_a_finite_positive_loss_and_gradients() {
        // 64×64 images: levels 8×8, 4×4, 2×2; 3 classes; batch 2.
        let shapes = [(8, 8), (4, 4), (2, 2)];
        let levels = random_levels(7, 2, 67, &shapes, 3.0);
        let vars: Vec<Var> = levels
            .iter()
            .map(|t| Var::from_tensor(t).unwrap())
            .collect();
        let ts: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().clone()).collect();
        let targets = vec![
            vec![
                label(0, [3.0, 5.0, 40.0, 30.0]),
                label(2, [30.0, 30.0, 62.0, 63.0]),
            ],
            vec![label(1, [10.0, 10.0, 18.0, 20.0])],
        ];
        let out = DetectionLoss::new(3).compute(&ts, &targets).unwrap();
        let total: f32 = out.total.to_vec0().unwrap();
        assert!(out.num_fg > 0, "{out:?}");
        for v in [out.box_loss, out.cls_loss, out.dfl_loss] {
            assert!(v.is_finite() && v > 0.0, "{out:?}");
        }
        assert!(((out.box_loss + out.cls_loss + out.dfl_loss) * 2.0 - total).abs() < 1e-3 * total);
        let grads = out.total.backward().unwrap();
        let mut box_grad = 0f32;
        for v in &vars {
            let g = grads.get(v).expect("gradient for every level");
            let g2: f32 = g.sqr().unwrap().sum_all().unwrap().to_vec0().unwrap();
            assert!(g2.is_finite() && g2 > 0.0);
            box_grad += g
                .narrow(1, 0, 64)
                .unwrap()
                .abs()
                .unwrap()
                .sum_all()
                .unwrap()
                .to_vec0::<f32>()
                .unwrap();
        }
        assert!(box_grad > 0.0);
    }

    #[test]
    fn batch_without_objects_pushes_all_scores_down() {
        let levels = random_levels(3, 2, 65, &[(4, 4), (2, 2), (1, 1)], 2.0);
        let vars: Vec<Var> = levels
            .iter()
            .map(|t| Var::from_tensor(t).unwrap())
            .collect();
        let ts: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().clone()).collect();
        let out = DetectionLoss::new(1)
            .compute(&ts, &[vec![], vec![]])
            .unwrap();
        assert_eq!((out.box_loss, out.dfl_loss, out.num_fg), (0.0, 0.0, 0));
        // cls = 0.5 · Σ BCE(x, 0) / 1 = 0.5 · Σ softplus(x).
        let expect: f32 = levels
            .iter()
            .map(|t| {
                let v: Vec<f32> = t
                    .narrow(1, 64, 1)
                    .unwrap()
                    .flatten_all()
                    .unwrap()
                    .to_vec1()
                    .unwrap();
                v.iter().map(|x| (1.0 + x.exp()).ln()).sum::<f32>()
            })
            .sum::<f32>()
            * 0.5;
        assert!(
            (out.cls_loss - expect).abs() < 1e-4 * expect,
            "{} vs {expect}",
            out.cls_loss
        );
        let grads = out.total.backward().unwrap();
        for v in &vars {
            let g = grads.get(v).unwrap();
            let gc: Vec<f32> = g
                .narrow(1, 64, 1)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap();
            assert!(gc.iter().all(|&x| x > 0.0), "class logits must all go down");
            let gb: f32 = g
                .narrow(1, 0, 64)
                .unwrap()
                .abs()
                .unwrap()
                .sum_all()
                .unwrap()
                .to_vec0()
                .unwrap();
            assert_eq!(gb, 0.0);
        }
    }

    #[test]
    fn sgd_on_the_predictions_lowers_the_loss() {
        // One 32×32 image, one 4×4 level, one class, one object.
        let x = Var::from_tensor(&random_levels(11, 1, 65, &[(4, 4)], 1.0)[0]).unwrap();
        let mut cfg = LossConfig::new(1);
        cfg.strides = vec![8.0];
        let loss = DetectionLoss::with_config(cfg);
        let targets = vec![vec![label(0, [6.0, 4.0, 27.0, 22.0])]];
        let mut first = None;
        let mut last = (0f32, 0f32, 0f32);
        // Plain gradient descent, lr 0.5: total 5.76 → 0.95, box 0.073 → 0.040.
        for _ in 0..40 {
            let out = loss.compute(&[x.as_tensor().clone()], &targets).unwrap();
            let total: f32 = out.total.to_vec0().unwrap();
            first.get_or_insert((total, out.box_loss, out.dfl_loss));
            last = (total, out.box_loss, out.dfl_loss);
            let g = out.total.backward().unwrap().get(&x).unwrap().clone();
            x.set(&(x.as_tensor() - (g * 0.5).unwrap()).unwrap())
                .unwrap();
        }
        let first = first.unwrap();
        assert!(last.0 < 0.5 * first.0, "total {first:?} -> {last:?}");
        assert!(last.1 < 0.8 * first.1, "box {first:?} -> {last:?}");
        assert!(last.2 < first.2, "dfl {first:?} -> {last:?}");
    }

    #[test]
    fn bad_shapes_are_errors() {
        let levels = random_levels(1, 1, 66, &[(2, 2)], 1.0);
        let mut cfg = LossConfig::new(1);
        cfg.strides = vec![8.0];
        // 66 channels for 1 class (expects 65).
        assert!(detection_loss(&levels, &[vec![]], &cfg).is_err());
        cfg = LossConfig::new(2);
        cfg.strides = vec![8.0];
        // Two target lists for a batch of one; a class id out of range.
        assert!(detection_loss(&levels, &[vec![], vec![]], &cfg).is_err());
        assert!(detection_loss(&levels, &[vec![label(2, [0.0, 0.0, 9.0, 9.0])]], &cfg).is_err());
        // Levels and strides disagree.
        cfg.strides = vec![8.0, 16.0];
        assert!(detection_loss(&levels, &[vec![]], &cfg).is_err());
    }
}
