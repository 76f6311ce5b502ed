//! Accumulation: pycocotools' `accumulate()`. The matched detections of all
//! images are ranked by score into a precision/recall curve per category,
//! area range and detection cap, sampled at the 101 recall points, and kept
//! in [`CocoEval`] (pycocotools' `eval['precision']` and `eval['recall']`).

use super::matching::ImageEval;
use super::numpy::by_score_desc;
use super::params::{AREA_RANGES, MAX_DETS};

/// Precision at every recall point (`[t * R + r]`) and final recall (`[t]`)
/// of one category, area range and detection cap.
pub(super) struct Curve {
    precision: Vec<f64>,
    recall: Vec<f64>,
}

/// pycocotools' `accumulate` for one category, area range and per-image
/// detection cap. `evals` are in image-id order, which decides how equal
/// scores from different images are ranked. `None` when no ground truth
/// counts (the category then stays at -1).
pub(super) fn accumulate(
    evals: &[&ImageEval],
    max_det: usize,
    n_iou: usize,
    rec_thrs: &[f64],
) -> Option<Curve> {
    if evals.is_empty() {
        return None;
    }
    let counted: usize = evals.iter().map(|e| e.counted_gts).sum();
    if counted == 0 {
        return None;
    }
    let ranked = rank_detections(evals, max_det);
    let n_rec = rec_thrs.len();
    let mut curve = Curve {
        precision: vec![0.0; n_iou * n_rec],
        recall: vec![0.0; n_iou],
    };
    let mut rc = Vec::with_capacity(ranked.len());
    let mut pr = Vec::with_capacity(ranked.len());
    for t in 0..n_iou {
        cumulative_recall_precision(evals, &ranked, t, counted, &mut rc, &mut pr);
        curve.recall[t] = rc.last().copied().unwrap_or(0.0);
        precision_envelope(&mut pr);
        sample_at_recall_points(
            &rc,
            &pr,
            rec_thrs,
            &mut curve.precision[t * n_rec..(t + 1) * n_rec],
        );
    }
    Some(curve)
}

/// The first `max_det` detections of every image as (image, detection)
/// pairs, ranked by score; the sort is stable.
fn rank_detections(evals: &[&ImageEval], max_det: usize) -> Vec<(usize, usize)> {
    let mut ranked: Vec<(usize, usize)> = evals
        .iter()
        .enumerate()
        .flat_map(|(i, e)| (0..e.scores.len().min(max_det)).map(move |d| (i, d)))
        .collect();
    ranked
        .sort_by(|&(ia, da), &(ib, db)| by_score_desc(evals[ia].scores[da], evals[ib].scores[db]));
    ranked
}

/// Recall (`rc`) and precision (`pr`) after each ranked detection at IoU
/// threshold index `t`, from the running true and false positive counts
/// (pycocotools' `tp_sum`/`fp_sum`). Both vectors are overwritten.
fn cumulative_recall_precision(
    evals: &[&ImageEval],
    ranked: &[(usize, usize)],
    t: usize,
    counted: usize,
    rc: &mut Vec<f64>,
    pr: &mut Vec<f64>,
) {
    rc.clear();
    pr.clear();
    let (mut tp, mut fp) = (0.0f64, 0.0f64);
    for &(i, d) in ranked {
        let e = evals[i];
        let k = t * e.scores.len() + d;
        if !e.ignored[k] {
            if e.matched[k] {
                tp += 1.0;
            } else {
                fp += 1.0;
            }
        }
        rc.push(tp / counted as f64);
        // np.spacing(1) keeps 0/0 away; it is part of the value too.
        pr.push(tp / (fp + tp + f64::EPSILON));
    }
}

/// Precision envelope: the best precision at this recall or beyond.
fn precision_envelope(pr: &mut [f64]) {
    for j in (1..pr.len()).rev() {
        if pr[j] > pr[j - 1] {
            pr[j - 1] = pr[j];
        }
    }
}

/// Precision at each recall point into `out` (one slot per point): the
/// precision of the first detection whose recall reaches it.
fn sample_at_recall_points(rc: &[f64], pr: &[f64], rec_thrs: &[f64], out: &mut [f64]) {
    for (r, &thr) in rec_thrs.iter().enumerate() {
        // numpy searchsorted(rc, thr, side='left'); recall points past
        // the last reached recall keep precision 0.
        let j = rc.partition_point(|&x| x < thr);
        if j >= pr.len() {
            break;
        }
        out[r] = pr[j];
    }
}

/// Accumulated evaluation: pycocotools' `eval['precision']` and
/// `eval['recall']`, -1 where a category has no counted ground truth.
#[derive(Debug, Clone)]
pub struct CocoEval {
    /// Evaluated image ids, sorted and unique.
    pub img_ids: Vec<i64>,
    /// Evaluated category ids, sorted and unique.
    pub cat_ids: Vec<i64>,
    pub iou_thrs: Vec<f64>,
    pub rec_thrs: Vec<f64>,
    /// Non-crowd ground truths of the evaluated images and categories.
    pub num_gts: usize,
    /// Detections of the evaluated images and categories (before capping).
    pub num_dts: usize,
    /// `[t][r][k][a][m]`, flattened in that order.
    precision: Vec<f64>,
    /// `[t][k][a][m]`, flattened in that order.
    recall: Vec<f64>,
}

impl CocoEval {
    /// An evaluation with every entry -1 (nothing measured yet), sized for
    /// the given categories and thresholds.
    pub(super) fn unmeasured(
        img_ids: Vec<i64>,
        cat_ids: Vec<i64>,
        iou_thrs: Vec<f64>,
        rec_thrs: Vec<f64>,
        num_gts: usize,
        num_dts: usize,
    ) -> Self {
        let (n_t, n_r, n_k, n_a, n_m) = (
            iou_thrs.len(),
            rec_thrs.len(),
            cat_ids.len(),
            AREA_RANGES.len(),
            MAX_DETS.len(),
        );
        Self {
            precision: vec![-1.0; n_t * n_r * n_k * n_a * n_m],
            recall: vec![-1.0; n_t * n_k * n_a * n_m],
            img_ids,
            cat_ids,
            iou_thrs,
            rec_thrs,
            num_gts,
            num_dts,
        }
    }

    /// Stores the curve of category index `k`, area range `a`, cap `m`.
    pub(super) fn record(&mut self, k: usize, a: usize, m: usize, curve: &Curve) {
        let (n_r, n_k, n_a, n_m) = (
            self.rec_thrs.len(),
            self.cat_ids.len(),
            AREA_RANGES.len(),
            MAX_DETS.len(),
        );
        for t in 0..self.iou_thrs.len() {
            self.recall[((t * n_k + k) * n_a + a) * n_m + m] = curve.recall[t];
            for r in 0..n_r {
                self.precision[(((t * n_r + r) * n_k + k) * n_a + a) * n_m + m] =
                    curve.precision[t * n_r + r];
            }
        }
    }

    /// Precision at IoU threshold `t`, recall point `r`, category index `k`
    /// (into `cat_ids`), area range `a` and detection cap `m`.
    pub fn precision(&self, t: usize, r: usize, k: usize, a: usize, m: usize) -> f64 {
        let (n_r, n_k, n_a, n_m) = (
            self.rec_thrs.len(),
            self.cat_ids.len(),
            AREA_RANGES.len(),
            MAX_DETS.len(),
        );
        self.precision[(((t * n_r + r) * n_k + k) * n_a + a) * n_m + m]
    }

    /// Final recall at IoU threshold `t`, category `k`, area `a`, cap `m`.
    pub fn recall(&self, t: usize, k: usize, a: usize, m: usize) -> f64 {
        let (n_k, n_a, n_m) = (self.cat_ids.len(), AREA_RANGES.len(), MAX_DETS.len());
        self.recall[((t * n_k + k) * n_a + a) * n_m + m]
    }
}

#[cfg(test)]
mod tests {
    use super::super::evaluate;
    use super::super::test_support::{close, dt, gt};

    #[test]
    fn false_positive_ranked_first_halves_precision() {
        let gts = [gt(1, 1, 1, [0.0, 0.0, 10.0, 10.0])];
        let dts = [
            dt(1, 1, 1, [50.0, 50.0, 10.0, 10.0], 0.9),
            dt(2, 1, 1, [0.0, 0.0, 10.0, 10.0], 0.8),
        ];
        let s = evaluate(&[1], &[1], &gts, &dts).stats();
        // tp/(fp+tp) = 1/2 at every recall point, envelope included.
        assert!(close(s.map, 0.5), "{s:?}");
        assert!(close(s.ar100, 1.0));
        // With one detection per image only the false positive is kept.
        assert!(close(s.ar1, 0.0));
    }

    #[test]
    fn precision_envelope_takes_the_best_precision_to_the_right() {
        // Ranked TP, FP, TP over two objects: recall .5, .5, 1 and precision
        // 1, 1/2, 2/3 → envelope 1, 2/3, 2/3. Recall points 0..=.50 (51 of
        // them) get 1, the remaining 50 get 2/3.
        let gts = [
            gt(1, 1, 1, [0.0, 0.0, 10.0, 10.0]),
            gt(2, 1, 1, [100.0, 0.0, 10.0, 10.0]),
        ];
        let dts = [
            dt(1, 1, 1, [0.0, 0.0, 10.0, 10.0], 0.9),
            dt(2, 1, 1, [50.0, 50.0, 10.0, 10.0], 0.8),
            dt(3, 1, 1, [100.0, 0.0, 10.0, 10.0], 0.7),
        ];
        let e = evaluate(&[1], &[1], &gts, &dts);
        let expected = (51.0 + 50.0 * 2.0 / 3.0) / 101.0;
        assert!(
            close(e.stats().map, expected),
            "{} vs {expected}",
            e.stats().map
        );
        assert!(close(e.precision(0, 50, 0, 0, 2), 1.0));
        assert!(close(e.precision(0, 51, 0, 0, 2), 2.0 / 3.0));
    }
}
