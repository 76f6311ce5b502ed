//! The YOLOv8 task-aligned assigner (TOOD's TAL as ultralytics implements it
//! in `utils/tal.py::TaskAlignedAssigner`), on plain slices for one image.
//!
//! The assigner is not differentiable (ultralytics runs it under
//! `torch.no_grad()` on detached predictions), so it works on `f32` slices:
//! the loss (`crate::trainer::loss`) copies the detached sigmoid scores and decoded
//! boxes to the CPU once per batch and calls [`TaskAlignedAssigner::assign`]
//! per image.
//!
//! The steps, exactly those of ultralytics (v8.1 – v8.3, and v8.4 with
//! `topk2 == topk`):
//!
//! 1. **Candidates** (`select_candidates_in_gts`): anchor centres strictly
//!    inside a ground-truth box, `min(x - x1, y - y1, x2 - x, y2 - y) > 1e-9`.
//! 2. **Metric** (`get_box_metrics`): for candidates only,
//!    `overlap = max(CIoU(gt, pred), 0)` and
//!    `align = score[class]^alpha * overlap^beta`; 0 elsewhere. Ultralytics'
//!    `iou_calculation` is `bbox_iou(gt, pd, xywh=False, CIoU=True).clamp_(0)`
//!    (checked against the v8.1 – v8.4 sources): the overlap is the *clamped
//!    CIoU*, not the plain IoU, and so is ours.
//! 3. **Top-k** (`select_topk_candidates` with `topk_mask` all true, since
//!    every gt we get is real): the `topk` largest metrics of the gt over *all*
//!    anchors; those that are also candidates are positives.
//! 4. **Conflicts** (`select_highest_overlaps`): an anchor positive for
//!    several gts goes to the gt of highest `overlap` over *all* gts (the
//!    argmax of the overlap column, which may even be a gt whose top-k did not
//!    pick the anchor, exactly as ultralytics does; first index on ties).
//! 5. **Targets** (`get_targets` and the normalisation in `forward`): the
//!    assigned gt's class and box, and a soft score
//!    `align * max_overlap(gt) / (max_align(gt) + eps)` where both maxima run
//!    over the gt's final positives; background anchors get score 0, gt index
//!    0, and gt 0's class and box (as ultralytics' `argmax` of an all-zero
//!    column gives).
//!
//! [`TaskAlignedAssigner::assign`] runs them as named steps:
//! `Image::rank_candidates` (1–2), `keep_top_k` (3), `resolve_conflicts` (4)
//! and `TaskAlignedAssigner::targets` (5).
//!
//! Differences from ultralytics, none of which changes a result that
//! ultralytics defines:
//! - `torch.topk` leaves the order of tied metrics unspecified; we break ties
//!   by the lower anchor index. Ties only happen at metric 0 (a gt with fewer
//!   positive-metric candidates than `topk`), and a positive of metric 0 gets
//!   target score 0, so it weighs nothing in any loss.
//! - `torch.topk` fails when there are fewer anchors than `topk`; we take
//!   `min(topk, anchors)`.
//! - Ultralytics drops padding rows of its `[B, max_gt, 4]` gt tensor by
//!   `xyxy.sum() > 0`; we get no padding, so every label counts.
//! - Ultralytics 8.4 (YOLO26) adds STAL: for the candidate test only, a gt side
//!   shorter than the smallest stride is widened to the second stride. It is
//!   off by default here (plain v8); [`Stal`] turns it on.

use anyhow::{ensure, Result};

use crate::shared::bbox::Label;

/// The `eps` of ultralytics' `metrics.bbox_iou` (added to heights and unions).
pub const IOU_EPS: f32 = 1e-7;

/// The `eps` of ultralytics' `select_candidates_in_gts`.
pub const CANDIDATE_EPS: f32 = 1e-9;

/// Plain IoU of two `xyxy` boxes, exactly ultralytics' `bbox_iou(xywh=False)`:
/// heights get `+1e-7` and the union `+1e-7`.
pub fn bbox_iou(b1: &[f32; 4], b2: &[f32; 4]) -> f32 {
    iou_parts(b1, b2).0
}

/// Intersection over union plus the pieces CIoU needs: (iou, w1, h1, w2, h2).
fn iou_parts(b1: &[f32; 4], b2: &[f32; 4]) -> (f32, f32, f32, f32, f32) {
    let (w1, h1) = (b1[2] - b1[0], b1[3] - b1[1] + IOU_EPS);
    let (w2, h2) = (b2[2] - b2[0], b2[3] - b2[1] + IOU_EPS);
    let iw = (b1[2].min(b2[2]) - b1[0].max(b2[0])).max(0.0);
    let ih = (b1[3].min(b2[3]) - b1[1].max(b2[1])).max(0.0);
    let inter = iw * ih;
    let union = w1 * h1 + w2 * h2 - inter + IOU_EPS;
    (inter / union, w1, h1, w2, h2)
}

/// Complete IoU of two `xyxy` boxes, exactly ultralytics'
/// `bbox_iou(xywh=False, CIoU=True)`:
/// `iou - (rho² / c² + v · alpha)` with `rho` the distance of the centres,
/// `c` the diagonal of the enclosing box (`c² + 1e-7`),
/// `v = 4/π² · (atan(w2/h2) − atan(w1/h1))²` and
/// `alpha = v / (v − iou + 1 + 1e-7)`. 1 for identical boxes; in `(-1, 1]`.
pub fn ciou(b1: &[f32; 4], b2: &[f32; 4]) -> f32 {
    let (iou, w1, h1, w2, h2) = iou_parts(b1, b2);
    let cw = b1[2].max(b2[2]) - b1[0].min(b2[0]);
    let ch = b1[3].max(b2[3]) - b1[1].min(b2[1]);
    let c2 = cw * cw + ch * ch + IOU_EPS;
    let dx = b2[0] + b2[2] - b1[0] - b1[2];
    let dy = b2[1] + b2[3] - b1[1] - b1[3];
    let rho2 = (dx * dx + dy * dy) / 4.0;
    let d = (w2 / h2).atan() - (w1 / h1).atan();
    let v = 4.0 / (std::f32::consts::PI * std::f32::consts::PI) * d * d;
    let alpha = v / (v - iou + (1.0 + IOU_EPS));
    iou - (rho2 / c2 + v * alpha)
}

/// Ultralytics' `select_candidates_in_gts`: the anchor centre lies strictly
/// inside the box, `min(x − x1, y − y1, x2 − x, y2 − y) > 1e-9`.
pub fn anchor_inside(anchor: &[f32; 2], b: &[f32; 4]) -> bool {
    let [ax, ay] = *anchor;
    let d = (ax - b[0]).min(ay - b[1]).min(b[2] - ax).min(b[3] - ay);
    d > CANDIDATE_EPS
}

/// STAL (ultralytics 8.4, "small-target-aware label assignment"): for the
/// candidate test only, a gt whose width (height) is below `min_size` pixels
/// is widened (heightened) to `size` pixels about its centre. Ultralytics uses
/// `min_size = strides[0]` (8) and `size = strides[1]` (16).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Stal {
    pub min_size: f32,
    pub size: f32,
}

/// Configuration of the assigner; [`TaskAlignedAssigner::new`] gives
/// ultralytics' v8 detection settings.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskAlignedAssigner {
    /// Positives per gt before conflict resolution (v8 training: 10).
    pub topk: usize,
    pub num_classes: usize,
    /// Exponent of the class score in the alignment metric (v8: 0.5).
    pub alpha: f32,
    /// Exponent of the overlap in the alignment metric (v8: 6.0).
    pub beta: f32,
    /// Guards the score normalisation (1e-9).
    pub eps: f32,
    /// Off (`None`) in v8; see [`Stal`].
    pub stal: Option<Stal>,
}

/// The assignment of one image's `N` anchors.
#[derive(Debug, Clone, PartialEq)]
pub struct Assignment {
    pub num_classes: usize,
    /// `[N]`: the anchor is a positive.
    pub fg_mask: Vec<bool>,
    /// `[N]`: index into the image's gts (0 for background anchors).
    pub target_gt_idx: Vec<usize>,
    /// `[N]`: class of the assigned gt (of gt 0 for background anchors;
    /// `num_classes` when the image has no gts).
    pub target_labels: Vec<usize>,
    /// `[N]`: `xyxy` pixels of the assigned gt (gt 0's for background; zeros
    /// when the image has no gts).
    pub target_bboxes: Vec<[f32; 4]>,
    /// `[N * num_classes]`, row-major: the normalised alignment metric at the
    /// assigned class of a positive, 0 elsewhere.
    pub target_scores: Vec<f32>,
}

impl Assignment {
    /// All background, as ultralytics returns for an image without gts.
    pub fn background(num_anchors: usize, num_classes: usize) -> Self {
        Self {
            num_classes,
            fg_mask: vec![false; num_anchors],
            target_gt_idx: vec![0; num_anchors],
            target_labels: vec![num_classes; num_anchors],
            target_bboxes: vec![[0.0; 4]; num_anchors],
            target_scores: vec![0.0; num_anchors * num_classes],
        }
    }

    pub fn num_anchors(&self) -> usize {
        self.fg_mask.len()
    }

    pub fn num_fg(&self) -> usize {
        self.fg_mask.iter().filter(|&&f| f).count()
    }

    /// Row `n` of `target_scores`.
    pub fn scores_of(&self, n: usize) -> &[f32] {
        &self.target_scores[n * self.num_classes..(n + 1) * self.num_classes]
    }

    /// Sum of all target scores (before ultralytics' `max(·, 1)`).
    pub fn target_scores_sum(&self) -> f32 {
        self.target_scores.iter().sum()
    }
}

impl TaskAlignedAssigner {
    /// Ultralytics' v8 detection-loss settings: topk 10, alpha 0.5, beta 6,
    /// eps 1e-9, no STAL.
    pub fn new(num_classes: usize) -> Self {
        Self {
            topk: 10,
            num_classes,
            alpha: 0.5,
            beta: 6.0,
            eps: 1e-9,
            stal: None,
        }
    }

    /// The gt box used for the candidate test (the gt itself unless STAL
    /// widens it).
    fn candidate_box(&self, b: &[f32; 4]) -> [f32; 4] {
        let Some(stal) = self.stal else { return *b };
        let (cx, cy) = ((b[0] + b[2]) / 2.0, (b[1] + b[3]) / 2.0);
        let (mut w, mut h) = (b[2] - b[0], b[3] - b[1]);
        if w < stal.min_size {
            w = stal.size;
        }
        if h < stal.min_size {
            h = stal.size;
        }
        [cx - w / 2.0, cy - h / 2.0, cx + w / 2.0, cy + h / 2.0]
    }

    /// Assigns one image.
    ///
    /// - `pd_scores`: `[N * num_classes]` row-major class probabilities
    ///   (sigmoid of the detached logits);
    /// - `pd_bboxes`: `[N]` detached predicted boxes, `xyxy` input pixels;
    /// - `anchors`: `[N]` anchor centres in input pixels;
    /// - `gts`: the image's ground truths (class ids `< num_classes`, pixels).
    pub fn assign(
        &self,
        pd_scores: &[f32],
        pd_bboxes: &[[f32; 4]],
        anchors: &[[f32; 2]],
        gts: &[Label],
    ) -> Result<Assignment> {
        self.check_inputs(pd_scores, pd_bboxes, anchors.len(), gts)?;
        if gts.is_empty() || anchors.is_empty() {
            return Ok(Assignment::background(anchors.len(), self.num_classes));
        }
        let image = Image::new(self, pd_scores, pd_bboxes, anchors, gts);
        let positives = self.select_positives(&image);
        let assigned = resolve_conflicts(&image, &positives);
        Ok(self.targets(&image, &assigned))
    }

    /// Sizes agree and every gt's class is one of ours.
    fn check_inputs(
        &self,
        pd_scores: &[f32],
        pd_bboxes: &[[f32; 4]],
        n_anchors: usize,
        gts: &[Label],
    ) -> Result<()> {
        let nc = self.num_classes;
        ensure!(nc > 0, "assigner: num_classes must be positive");
        ensure!(self.topk > 0, "assigner: topk must be positive");
        ensure!(
            pd_bboxes.len() == n_anchors && pd_scores.len() == n_anchors * nc,
            "assigner: {n_anchors} anchors but {} boxes and {} scores ({nc} classes)",
            pd_bboxes.len(),
            pd_scores.len()
        );
        for (i, g) in gts.iter().enumerate() {
            ensure!(
                g.class_id < nc,
                "assigner: gt {i} has class {} but there are {nc} classes",
                g.class_id
            );
        }
        Ok(())
    }

    /// Steps 1–3: each gt's positives, the candidates among its top-k
    /// metrics. An anchor may be positive for several gts.
    fn select_positives(&self, image: &Image) -> Positives {
        let n_anchors = image.anchors.len();
        let k = self.topk.min(n_anchors);
        let mut positives = Positives {
            count: vec![0; n_anchors],
            gt: vec![0; n_anchors],
        };
        let mut kind = vec![AnchorKind::Outside; n_anchors];
        let mut ranked: Vec<(f32, usize)> = Vec::new();
        for m in 0..image.gts.len() {
            image.rank_candidates(m, &mut kind, &mut ranked);
            keep_top_k(&mut ranked, k);
            for &(_, n) in &ranked {
                positives.mark(n, m);
            }
            // Fewer positive metrics than k: topk fills up with metric-0
            // anchors (lowest index first); the candidates among them count.
            let mut fill = k - ranked.len();
            for (n, &kn) in kind.iter().enumerate() {
                if fill == 0 {
                    break;
                }
                match kn {
                    AnchorKind::Ranked => {}
                    AnchorKind::ZeroMetric => {
                        positives.mark(n, m);
                        fill -= 1;
                    }
                    AnchorKind::Outside => fill -= 1,
                }
            }
        }
        positives
    }

    /// Step 5: targets, with the per-gt normalisation of the metric.
    fn targets(&self, image: &Image, assigned: &[Option<usize>]) -> Assignment {
        let (nc, n_anchors, n_gts) = (self.num_classes, image.anchors.len(), image.gts.len());
        let mut out = Assignment::background(n_anchors, nc);
        let mut metric = vec![Metric::ZERO; n_anchors];
        // Per gt, the maxima over its final positives.
        let mut max = vec![Metric::ZERO; n_gts];
        for n in 0..n_anchors {
            let m = assigned[n].unwrap_or(0);
            out.target_gt_idx[n] = m;
            out.target_labels[n] = image.gts[m].class_id;
            out.target_bboxes[n] = image.gt_boxes[m];
            if assigned[n].is_some() {
                out.fg_mask[n] = true;
                metric[n] = image.metric(m, n);
                max[m].overlap = max[m].overlap.max(metric[n].overlap);
                max[m].align = max[m].align.max(metric[n].align);
            }
        }
        for n in 0..n_anchors {
            if let Some(m) = assigned[n] {
                out.target_scores[n * nc + image.gts[m].class_id] =
                    metric[n].align * max[m].overlap / (max[m].align + self.eps);
            }
        }
        out
    }
}

/// The overlap of a gt and an anchor's predicted box and their alignment.
#[derive(Debug, Clone, Copy)]
struct Metric {
    /// `max(CIoU(gt, pred), 0)`.
    overlap: f32,
    /// `score[gt class]^alpha · overlap^beta`.
    align: f32,
}

impl Metric {
    const ZERO: Self = Self {
        overlap: 0.0,
        align: 0.0,
    };
}

/// An anchor, for the gt being ranked.
#[derive(Debug, Clone, Copy, PartialEq)]
enum AnchorKind {
    /// Not a candidate of the gt.
    Outside,
    /// A candidate of metric 0.
    ZeroMetric,
    /// A candidate of metric > 0, in the ranking.
    Ranked,
}

/// Steps 1–3's result: per anchor, how many gts picked it and the last one.
struct Positives {
    /// `[N]` gts for which the anchor is a positive.
    count: Vec<u32>,
    /// `[N]` the last such gt (the only one when `count` is 1).
    gt: Vec<usize>,
}

impl Positives {
    fn mark(&mut self, n: usize, m: usize) {
        self.count[n] += 1;
        self.gt[n] = m;
    }
}

/// One image's inputs as the steps read them: `N` anchors, `M` gts.
struct Image<'a> {
    tal: &'a TaskAlignedAssigner,
    /// `[N * num_classes]` class probabilities.
    pd_scores: &'a [f32],
    /// `[N]` predicted `xyxy` boxes, pixels.
    pd_bboxes: &'a [[f32; 4]],
    /// `[N]` anchor centres, pixels.
    anchors: &'a [[f32; 2]],
    /// `[M]`
    gts: &'a [Label],
    /// `[M]` the gts' `xyxy` boxes.
    gt_boxes: Vec<[f32; 4]>,
    /// `[M]` the boxes of the candidate test (STAL may widen them).
    cand_boxes: Vec<[f32; 4]>,
}

impl<'a> Image<'a> {
    fn new(
        tal: &'a TaskAlignedAssigner,
        pd_scores: &'a [f32],
        pd_bboxes: &'a [[f32; 4]],
        anchors: &'a [[f32; 2]],
        gts: &'a [Label],
    ) -> Self {
        let gt_boxes: Vec<[f32; 4]> = gts
            .iter()
            .map(|g| [g.bbox.x1, g.bbox.y1, g.bbox.x2, g.bbox.y2])
            .collect();
        let cand_boxes: Vec<[f32; 4]> = gt_boxes.iter().map(|b| tal.candidate_box(b)).collect();
        Self {
            tal,
            pd_scores,
            pd_bboxes,
            anchors,
            gts,
            gt_boxes,
            cand_boxes,
        }
    }

    /// Step 1: anchor `n` is a candidate of gt `m`.
    fn is_candidate(&self, m: usize, n: usize) -> bool {
        anchor_inside(&self.anchors[n], &self.cand_boxes[m])
    }

    /// Step 2: the metric of gt `m` and its candidate anchor `n`.
    fn candidate_metric(&self, m: usize, n: usize) -> Metric {
        let overlap = ciou(&self.gt_boxes[m], &self.pd_bboxes[n]).max(0.0);
        let nc = self.tal.num_classes;
        let score = self.pd_scores[n * nc + self.gts[m].class_id];
        Metric {
            overlap,
            align: score.powf(self.tal.alpha) * overlap.powf(self.tal.beta),
        }
    }

    /// The metric of any pair: zero unless `n` is a candidate of `m`.
    fn metric(&self, m: usize, n: usize) -> Metric {
        if self.is_candidate(m, n) {
            self.candidate_metric(m, n)
        } else {
            Metric::ZERO
        }
    }

    /// Steps 1–2 for gt `m`: sorts every anchor into `kind` and lists the
    /// candidates of positive metric as `(align, anchor)` in `ranked`.
    fn rank_candidates(&self, m: usize, kind: &mut [AnchorKind], ranked: &mut Vec<(f32, usize)>) {
        kind.fill(AnchorKind::Outside);
        ranked.clear();
        for (n, kn) in kind.iter_mut().enumerate() {
            if self.is_candidate(m, n) {
                let align = self.candidate_metric(m, n).align;
                if align > 0.0 {
                    *kn = AnchorKind::Ranked;
                    ranked.push((align, n));
                } else {
                    *kn = AnchorKind::ZeroMetric;
                }
            }
        }
    }

    /// Step 4's choice for a contested anchor `n`: the gt of highest overlap
    /// over all gts (first on ties).
    fn highest_overlap_gt(&self, n: usize) -> usize {
        let mut best = (0usize, f32::NEG_INFINITY);
        for m in 0..self.gts.len() {
            let ov = self.metric(m, n).overlap;
            if ov > best.1 {
                best = (m, ov);
            }
        }
        best.0
    }
}

/// Step 3: keeps the `k` largest metrics of `ranked`, larger metric first,
/// then lower index (the kept set; not sorted).
fn keep_top_k(ranked: &mut Vec<(f32, usize)>, k: usize) {
    let order = |a: &(f32, usize), b: &(f32, usize)| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1));
    if ranked.len() > k {
        ranked.select_nth_unstable_by(k - 1, order);
        ranked.truncate(k);
    }
}

/// Step 4: the gt of each anchor (`None` for background); an anchor
/// positive for several gts goes to the gt of highest overlap.
fn resolve_conflicts(image: &Image, positives: &Positives) -> Vec<Option<usize>> {
    (0..image.anchors.len())
        .map(|n| match positives.count[n] {
            0 => None,
            1 => Some(positives.gt[n]),
            _ => Some(image.highest_overlap_gt(n)),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shared::bbox::BBox;

    fn close(a: f32, b: f32, tol: f32) -> bool {
        (a - b).abs() <= tol
    }

    fn label(class_id: usize, b: [f32; 4]) -> Label {
        Label {
            class_id,
            bbox: BBox::new(b[0], b[1], b[2], b[3]),
        }
    }

    /// A 4×4 grid of stride 8 (a 32×32 image): anchor `n = 4·row + col` at
    /// pixel centre `(8·col + 4, 8·row + 4)`.
    fn grid4() -> Vec<[f32; 2]> {
        (0..16)
            .map(|n| [(n % 4) as f32 * 8.0 + 4.0, (n / 4) as f32 * 8.0 + 4.0])
            .collect()
    }

    const FAR: [f32; 4] = [100.0, 100.0, 110.0, 110.0];

    #[test]
    fn iou_and_ciou_by_hand() {
        // Identical 4×2 boxes: inter 8, union 8 + 8 − 8 (+ eps): IoU 1; same
        // centre (rho 0) and aspect (v 0): CIoU 1.
        let a = [0.0, 0.0, 4.0, 2.0];
        assert!(close(bbox_iou(&a, &a), 1.0, 1e-6));
        assert!(close(ciou(&a, &a), 1.0, 1e-6));
        // Disjoint 2×2 boxes 2 apart: IoU 0; enclosing box 6×2, c² = 40;
        // centres (1,1), (5,1): rho² = 16; same aspect: CIoU = −16/40 = −0.4.
        let (b, c) = ([0.0, 0.0, 2.0, 2.0], [4.0, 0.0, 6.0, 2.0]);
        assert_eq!(bbox_iou(&b, &c), 0.0);
        assert!(close(ciou(&b, &c), -0.4, 1e-6));
        // Nested: (0,0,2,2) in (0,0,4,4): IoU 4/16 = 0.25; centres (2,2),
        // (1,1): rho² = 2; c² = 4² + 4² = 32: CIoU = 0.25 − 2/32 = 0.1875.
        let (d, e) = ([0.0, 0.0, 4.0, 4.0], [0.0, 0.0, 2.0, 2.0]);
        assert!(close(bbox_iou(&d, &e), 0.25, 1e-6));
        assert!(close(ciou(&d, &e), 0.1875, 1e-6));
        assert!(close(ciou(&e, &d), 0.1875, 1e-6));
        // Aspect ratios: 2×2 (1,0,3,2) inside 4×2 (0,0,4,2), same centre:
        // IoU 4/8 = 0.5, rho 0;
        // v = 4/π² (atan 2 − atan 1)² = 0.4052847 · 0.3217506² = 0.0419565,
        // alpha = v / (v − 0.5 + 1) = 0.0774166, v·alpha = 0.0032481:
        // CIoU = 0.4967519.
        let (f, g) = ([1.0, 0.0, 3.0, 2.0], [0.0, 0.0, 4.0, 2.0]);
        assert!(close(bbox_iou(&f, &g), 0.5, 1e-6));
        assert!(close(ciou(&f, &g), 0.4967518, 2e-6));
        assert!(close(ciou(&g, &f), 0.4967518, 2e-6));
    }

    #[test]
    fn candidates_are_strictly_inside() {
        let b = [2.0, 2.0, 12.0, 20.0];
        assert!(anchor_inside(&[4.0, 12.0], &b));
        assert!(!anchor_inside(&[12.0, 4.0], &b)); // on the right side
        assert!(!anchor_inside(&[4.0, 20.0], &b)); // on the bottom side
        assert!(!anchor_inside(&[1.0, 4.0], &b));
    }

    #[test]
    fn one_gt_inside_outside_and_scores() {
        // gt (2,2,12,20): anchors 0 (4,4) and 4 (4,12) are inside; 1 (12,4)
        // lies on its right side and 8 (4,20) on its bottom: outside.
        let gt = [2.0, 2.0, 12.0, 20.0];
        let anchors = grid4();
        // Every prediction is the gt box itself (overlap 1); class
        // probabilities 0.64 at anchor 0 and 0.16 at anchor 4.
        let boxes = vec![gt; 16];
        let mut scores = vec![0.9f32; 16];
        scores[0] = 0.64;
        scores[4] = 0.16;
        let a = TaskAlignedAssigner::new(1)
            .assign(&scores, &boxes, &anchors, &[label(0, gt)])
            .unwrap();
        let fg: Vec<usize> = (0..16).filter(|&n| a.fg_mask[n]).collect();
        assert_eq!(fg, vec![0, 4]);
        // align = sqrt(score) · 1⁶: 0.8 and 0.4; the gt's max overlap 1 and
        // max align 0.8 give targets 0.8 · 1/0.8 = 1 and 0.4 · 1/0.8 = 0.5.
        assert!(
            close(a.target_scores[0], 1.0, 1e-5),
            "{}",
            a.target_scores[0]
        );
        assert!(
            close(a.target_scores[4], 0.5, 1e-5),
            "{}",
            a.target_scores[4]
        );
        for n in (0..16).filter(|&n| n != 0 && n != 4) {
            assert_eq!(a.target_scores[n], 0.0);
        }
        assert_eq!(a.target_bboxes[4], gt);
        assert_eq!(a.target_labels, vec![0; 16]);
        assert_eq!(a.target_gt_idx, vec![0; 16]);
    }

    #[test]
    fn normalisation_by_max_overlap_and_max_align() {
        // gt (0,0,16,16) of class 1 (of 2): candidates 0, 1, 4, 5.
        let gt = [0.0, 0.0, 16.0, 16.0];
        let anchors = grid4();
        let mut boxes = vec![FAR; 16];
        // Concentric boxes of the gt's aspect: CIoU = IoU = area ratio.
        boxes[0] = [2.0, 2.0, 14.0, 14.0]; // 12×12: 144/256 = 0.5625
        boxes[1] = [4.0, 4.0, 12.0, 12.0]; // 8×8: 64/256 = 0.25
                                           // Probabilities: index 2·anchor + class.
        let mut scores = vec![0.5f32; 32];
        scores[1] = 0.01; // anchor 0, class 1
        scores[2] = 0.7; // anchor 1, class 0: not the gt's class, ignored
        scores[3] = 1.0; // anchor 1, class 1
        let mut tal = TaskAlignedAssigner::new(2);
        // align0 = sqrt(0.01) · 0.5625⁶ = 0.1 · 0.0316764 = 3.16764e-3;
        // align1 = 1 · 0.25⁶ = 2.44141e-4; anchors 4 and 5 predict far away:
        // CIoU < 0, overlap and align 0. Max align 3.16764e-3 (anchor 0), max
        // overlap 0.5625 (anchor 0): target0 = align0 · 0.5625 / align0 =
        // 0.5625, target1 = 2.44141e-4 · 0.5625 / 3.16764e-3 = 0.0433538.
        tal.topk = 3;
        let a = tal
            .assign(&scores, &boxes, &anchors, &[label(1, gt)])
            .unwrap();
        // topk 3: the two positive metrics, then the first metric-0 anchor
        // by index (2, not a candidate): exactly anchors 0 and 1.
        let fg: Vec<usize> = (0..16).filter(|&n| a.fg_mask[n]).collect();
        assert_eq!(fg, vec![0, 1]);
        assert!(
            close(a.scores_of(0)[1], 0.5625, 1e-5),
            "{:?}",
            a.scores_of(0)
        );
        assert!(
            close(a.scores_of(1)[1], 0.0433538, 1e-6),
            "{:?}",
            a.scores_of(1)
        );
        assert_eq!(a.scores_of(0)[0], 0.0);
        assert_eq!(a.scores_of(1)[0], 0.0);
        assert_eq!(a.target_labels[1], 1);
        // topk 10: metric-0 candidates 4 and 5 fill up the top-k (ties go to
        // the lower index) and become positives of target score 0.
        tal.topk = 10;
        let a = tal
            .assign(&scores, &boxes, &anchors, &[label(1, gt)])
            .unwrap();
        let fg: Vec<usize> = (0..16).filter(|&n| a.fg_mask[n]).collect();
        assert_eq!(fg, vec![0, 1, 4, 5]);
        assert_eq!(a.scores_of(4), &[0.0, 0.0]);
        assert!(close(a.target_scores_sum(), 0.5625 + 0.0433538, 1e-5));
    }

    #[test]
    fn topk_keeps_the_best_aligned() {
        // gt covering the image: all 16 anchors are candidates; every box is
        // the gt (overlap 1) and anchor n has probability (n + 1)/16.
        let gt = [0.0, 0.0, 32.0, 32.0];
        let scores: Vec<f32> = (0..16).map(|n| (n + 1) as f32 / 16.0).collect();
        let mut tal = TaskAlignedAssigner::new(1);
        tal.topk = 3;
        let a = tal
            .assign(&scores, &[gt; 16], &grid4(), &[label(0, gt)])
            .unwrap();
        let fg: Vec<usize> = (0..16).filter(|&n| a.fg_mask[n]).collect();
        assert_eq!(fg, vec![13, 14, 15]);
        // align = sqrt((n+1)/16), max 1 at n = 15: targets sqrt((n+1)/16).
        assert!(close(a.target_scores[15], 1.0, 1e-5));
        assert!(close(a.target_scores[14], 0.9682458, 1e-5));
        assert!(close(a.target_scores[13], 0.9354143, 1e-5));
        // Default topk 10: anchors 6..=15.
        let a = TaskAlignedAssigner::new(1)
            .assign(&scores, &[gt; 16], &grid4(), &[label(0, gt)])
            .unwrap();
        assert_eq!(a.num_fg(), 10);
        assert!((6..16).all(|n| a.fg_mask[n]));
    }

    #[test]
    fn anchor_in_two_gts_goes_to_higher_overlap() {
        // A = top half (class 0), B = left half (class 1): anchors 0, 1, 4, 5
        // lie in both. Predictions are A's box, except anchor 5 predicts B's.
        let (ga, gb) = ([0.0, 0.0, 32.0, 16.0], [0.0, 0.0, 16.0, 32.0]);
        let mut boxes = vec![ga; 16];
        boxes[5] = gb;
        let scores = vec![0.5f32; 32];
        let a = TaskAlignedAssigner::new(2)
            .assign(&scores, &boxes, &grid4(), &[label(0, ga), label(1, gb)])
            .unwrap();
        // CIoU(A, B) = 1/3 − rho²/c² − v·alpha with rho² = 8² + 8² = 128,
        // c² = 32² + 32² = 2048, v = 4/π² (atan 2 − atan ½)² = 0.1678258,
        // alpha = v/(v − 1/3 + 1) = 0.2011112: 0.3333333 − 0.0625 − 0.0337517
        // = 0.2370817 > 0, so all 8 candidates of each gt are positives
        // (8 ≤ topk 10) and 0, 1, 4, 5 are contested.
        let expect_gt = [0, 0, 0, 0, 0, 1, 0, 0, 1, 1, 0, 0, 1, 1, 0, 0];
        let fg: Vec<usize> = (0..16).filter(|&n| a.fg_mask[n]).collect();
        assert_eq!(fg, vec![0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 12, 13]);
        for n in fg {
            assert_eq!(a.target_gt_idx[n], expect_gt[n], "anchor {n}");
            assert_eq!(a.target_labels[n], expect_gt[n], "anchor {n}");
        }
        assert_eq!(a.target_bboxes[5], gb);
        assert_eq!(a.target_bboxes[0], ga);
        // B's final positives: 5 (overlap 1, align sqrt(.5)) and 8, 9, 12, 13
        // (overlap 0.2370817): target 1 at 5 and 0.2370817⁶ = 1.77577e-4.
        assert!(close(a.scores_of(5)[1], 1.0, 1e-5));
        assert!(
            close(a.scores_of(8)[1], 1.77577e-4, 1e-8),
            "{:?}",
            a.scores_of(8)
        );
        assert_eq!(a.scores_of(8)[0], 0.0);
        // A keeps 0, 1, 4 (contested, overlap 1 with A) and 2, 3, 6, 7.
        assert!(close(a.scores_of(4)[0], 1.0, 1e-5));
        // Background anchors: gt 0, its class and box, score 0.
        assert!(!a.fg_mask[10]);
        assert_eq!((a.target_gt_idx[10], a.target_labels[10]), (0, 0));
        assert_eq!(a.scores_of(10), &[0.0, 0.0]);
    }

    #[test]
    fn no_gts_is_all_background() {
        let a = TaskAlignedAssigner::new(3)
            .assign(&[0.5; 48], &[FAR; 16], &grid4(), &[])
            .unwrap();
        assert_eq!(a.num_fg(), 0);
        assert!(a.target_scores.iter().all(|&s| s == 0.0));
        assert!(a.target_labels.iter().all(|&l| l == 3));
        assert!(a.target_bboxes.iter().all(|b| *b == [0.0; 4]));
        assert_eq!(a.target_scores.len(), 48);
    }

    #[test]
    fn stal_widens_tiny_gts_for_the_candidate_test_only() {
        // A 2×2 gt between anchor centres has no candidate.
        let gt = [9.0, 9.0, 11.0, 11.0];
        let mut boxes = vec![FAR; 16];
        boxes[5] = gt;
        let mut tal = TaskAlignedAssigner::new(1);
        let a = tal
            .assign(&[0.5; 16], &boxes, &grid4(), &[label(0, gt)])
            .unwrap();
        assert_eq!(a.num_fg(), 0);
        // STAL (8 → 16): candidate box (2,2,18,18) holds anchors 0, 1, 4, 5;
        // anchor 5 predicts the gt exactly (overlap 1 against the real gt).
        tal.stal = Some(Stal {
            min_size: 8.0,
            size: 16.0,
        });
        let a = tal
            .assign(&[0.5; 16], &boxes, &grid4(), &[label(0, gt)])
            .unwrap();
        let fg: Vec<usize> = (0..16).filter(|&n| a.fg_mask[n]).collect();
        assert_eq!(fg, vec![0, 1, 4, 5]);
        assert!(close(a.target_scores[5], 1.0, 1e-5));
        assert_eq!(a.target_bboxes[5], gt);
    }

    #[test]
    fn bad_inputs_are_errors() {
        let tal = TaskAlignedAssigner::new(1);
        let gt = [0.0, 0.0, 8.0, 8.0];
        assert!(tal
            .assign(&[0.5; 16], &[gt; 16], &grid4(), &[label(1, gt)])
            .is_err());
        assert!(tal
            .assign(&[0.5; 15], &[gt; 16], &grid4(), &[label(0, gt)])
            .is_err());
    }
}
