//! Per-image matching: pycocotools' `evaluateImg` for one image, category
//! and area range. Detections are ranked by score and capped, then matched
//! greedily to ground truths at every IoU threshold, crowd regions and
//! out-of-range objects being ignored rather than counted.

use super::annotations::{DetectionResult, GroundTruth};
use super::iou::box_ious;
use super::numpy::by_score_desc;

/// One image × category × area range after matching (pycocotools'
/// `evaluateImg` result, reduced to what accumulation needs).
#[derive(Debug, Clone)]
pub(super) struct ImageEval {
    /// Scores of the kept detections, highest first.
    pub(super) scores: Vec<f64>,
    /// `[t * D + d]`: detection `d` matched a ground truth at threshold `t`
    /// (more precisely: the matched ground truth's id is non-zero).
    pub(super) matched: Vec<bool>,
    /// `[t * D + d]`: detection `d` is neither a true nor a false positive.
    pub(super) ignored: Vec<bool>,
    /// Ground truths of this area range that count towards recall.
    pub(super) counted_gts: usize,
}

/// Ground truths and detections of one image and category, detections
/// sorted by score and capped, with their IoU matrix.
pub(super) struct ImageCategory<'a> {
    gts: Vec<&'a GroundTruth>,
    dts: Vec<&'a DetectionResult>,
    /// `[d * G + g]`, empty when there are no detections or no ground truths.
    ious: Vec<f64>,
}

/// Matching state of every detection at every IoU threshold, both indexed
/// `[t * D + d]` (`evaluateImg`'s `dtm` and `dtIg`).
struct Matches {
    /// Id of the ground truth each detection matched; 0 = unmatched, as in
    /// pycocotools.
    gt_id: Vec<i64>,
    /// The detection is neither a true nor a false positive.
    ignored: Vec<bool>,
}

impl<'a> ImageCategory<'a> {
    pub(super) fn new(
        gts: Vec<&'a GroundTruth>,
        mut dts: Vec<&'a DetectionResult>,
        max_det: usize,
    ) -> Self {
        dts.sort_by(|a, b| by_score_desc(a.score, b.score));
        dts.truncate(max_det);
        let ious = if gts.is_empty() || dts.is_empty() {
            Vec::new()
        } else {
            let d: Vec<[f64; 4]> = dts.iter().map(|d| d.bbox).collect();
            let g: Vec<[f64; 4]> = gts.iter().map(|g| g.bbox).collect();
            let crowd: Vec<bool> = gts.iter().map(|g| g.iscrowd).collect();
            box_ious(&d, &g, &crowd)
        };
        Self { gts, dts, ious }
    }

    /// Greedy matching for one area range at every IoU threshold, as
    /// pycocotools' `evaluateImg`. `None` when the image has neither ground
    /// truths nor detections of this category.
    pub(super) fn evaluate(&self, (lo, hi): (f64, f64), iou_thrs: &[f64]) -> Option<ImageEval> {
        if self.gts.is_empty() && self.dts.is_empty() {
            return None;
        }
        let gt_ignored: Vec<bool> = self
            .gts
            .iter()
            .map(|g| g.iscrowd || g.area < lo || g.area > hi)
            .collect();
        let mut matches = self.match_greedily(iou_thrs, &gt_ignored);
        self.ignore_unmatched_out_of_range(&mut matches, (lo, hi), iou_thrs.len());
        Some(ImageEval {
            scores: self.dts.iter().map(|d| d.score).collect(),
            matched: matches.gt_id.iter().map(|&id| id != 0).collect(),
            ignored: matches.ignored,
            counted_gts: gt_ignored.iter().filter(|&&i| !i).count(),
        })
    }

    /// Matches the detections, best score first, to ground truths at each
    /// threshold; a detection matched to an ignored ground truth is ignored.
    fn match_greedily(&self, iou_thrs: &[f64], gt_ignored: &[bool]) -> Matches {
        let n_gt = self.gts.len();
        let n_dt = self.dts.len();
        // Counted ground truths first, ignored ones last, otherwise in input
        // order (a stable sort on the ignore flag).
        let order: Vec<usize> = (0..n_gt)
            .filter(|&g| !gt_ignored[g])
            .chain((0..n_gt).filter(|&g| gt_ignored[g]))
            .collect();
        let mut matches = Matches {
            gt_id: vec![0i64; iou_thrs.len() * n_dt],
            ignored: vec![false; iou_thrs.len() * n_dt],
        };
        if self.ious.is_empty() {
            return matches;
        }
        for (t, &thr) in iou_thrs.iter().enumerate() {
            // Id of the detection that took each ground truth (by `order`
            // position); 0 = free, as in pycocotools.
            let mut taken_by = vec![0i64; n_gt];
            for (d, dt) in self.dts.iter().enumerate() {
                let Some(pos) = self.best_match(d, thr, &order, gt_ignored, &taken_by) else {
                    continue;
                };
                let g = order[pos];
                matches.ignored[t * n_dt + d] = gt_ignored[g];
                matches.gt_id[t * n_dt + d] = self.gts[g].id;
                taken_by[pos] = dt.id;
            }
        }
        matches
    }

    /// Unmatched detections outside the area range are not false positives
    /// of this range.
    fn ignore_unmatched_out_of_range(
        &self,
        matches: &mut Matches,
        (lo, hi): (f64, f64),
        n_iou: usize,
    ) {
        let n_dt = self.dts.len();
        for (d, dt) in self.dts.iter().enumerate() {
            if dt.area < lo || dt.area > hi {
                for t in 0..n_iou {
                    if matches.gt_id[t * n_dt + d] == 0 {
                        matches.ignored[t * n_dt + d] = true;
                    }
                }
            }
        }
    }

    /// The ground truth (position in `order`) detection `d` matches at IoU
    /// threshold `thr`: the highest IoU ≥ `thr` among free ground truths
    /// (crowds are never used up), later ones winning ties, and a counted
    /// ground truth always preferred over an ignored one.
    fn best_match(
        &self,
        d: usize,
        thr: f64,
        order: &[usize],
        gt_ignored: &[bool],
        taken_by: &[i64],
    ) -> Option<usize> {
        let n_gt = self.gts.len();
        // Capped below 1 (as pycocotools) so a threshold of 1.0 could match.
        let mut best_iou = thr.min(1.0 - 1e-10);
        let mut best: Option<usize> = None;
        for (pos, &g) in order.iter().enumerate() {
            if taken_by[pos] > 0 && !self.gts[g].iscrowd {
                continue;
            }
            // Ignored ground truths come last: once a counted one matched,
            // stop rather than trade it for an ignored one.
            if best.is_some_and(|b| !gt_ignored[order[b]]) && gt_ignored[g] {
                break;
            }
            let iou = self.ious[d * n_gt + g];
            if iou < best_iou {
                continue;
            }
            best_iou = iou;
            best = Some(pos);
        }
        best
    }
}

#[cfg(test)]
mod tests {
    use super::super::evaluate;
    use super::super::test_support::{close, dt, gt};

    #[test]
    fn partial_overlap_counts_only_at_lower_thresholds() {
        // IoU 58/100: matched at 0.50 and 0.55 only → AP = 2/10.
        let gts = [gt(1, 1, 1, [0.0, 0.0, 10.0, 10.0])];
        let dts = [dt(1, 1, 1, [0.0, 0.0, 10.0, 5.8], 0.9)];
        let s = evaluate(&[1], &[1], &gts, &dts).stats();
        assert!(close(s.map50, 1.0) && close(s.map75, 0.0));
        assert!(close(s.map, 0.2), "{s:?}");
        assert!(close(s.ar100, 0.2));
        // IoU exactly 0.6 equals the third threshold, and equality matches.
        let dts = [dt(1, 1, 1, [0.0, 0.0, 10.0, 6.0], 0.9)];
        assert!(close(evaluate(&[1], &[1], &gts, &dts).stats().map, 0.3));
    }

    #[test]
    fn tied_scores_keep_input_order() {
        // Same score: the false positive comes first in the input, so it is
        // ranked first (stable sort), giving AP 0.5 rather than 1.
        let gts = [gt(1, 1, 1, [0.0, 0.0, 10.0, 10.0])];
        let fp_first = [
            dt(1, 1, 1, [50.0, 50.0, 10.0, 10.0], 0.5),
            dt(2, 1, 1, [0.0, 0.0, 10.0, 10.0], 0.5),
        ];
        assert!(close(
            evaluate(&[1], &[1], &gts, &fp_first).stats().map,
            0.5
        ));
        let tp_first = [fp_first[1], fp_first[0]];
        assert!(close(
            evaluate(&[1], &[1], &gts, &tp_first).stats().map,
            1.0
        ));
    }

    #[test]
    fn detections_inside_crowd_regions_are_ignored() {
        let mut crowd = gt(2, 1, 1, [100.0, 100.0, 200.0, 200.0]);
        crowd.iscrowd = true;
        let gts = [gt(1, 1, 1, [0.0, 0.0, 10.0, 10.0]), crowd];
        let dts = [
            dt(1, 1, 1, [120.0, 120.0, 20.0, 20.0], 0.95),
            dt(2, 1, 1, [150.0, 150.0, 20.0, 20.0], 0.9),
            dt(3, 1, 1, [0.0, 0.0, 10.0, 10.0], 0.8),
        ];
        let e = evaluate(&[1], &[1], &gts, &dts);
        assert!(close(e.stats().map, 1.0), "{:?}", e.stats());
        assert_eq!(e.num_gts, 1);
    }

    #[test]
    fn ground_truth_with_id_zero_is_never_a_true_positive() {
        // pycocotools records the matched gt id and reads 0 as "unmatched".
        let gts = [gt(0, 1, 1, [0.0, 0.0, 10.0, 10.0])];
        let dts = [dt(1, 1, 1, [0.0, 0.0, 10.0, 10.0], 0.9)];
        let s = evaluate(&[1], &[1], &gts, &dts).stats();
        assert_eq!((s.map, s.ar100), (0.0, 0.0));
    }

    #[test]
    fn unmatched_detections_outside_the_area_range_are_ignored() {
        // A small object found, plus a large false positive: the false
        // positive hurts "all" but is ignored for "small".
        let gts = [gt(1, 1, 1, [0.0, 0.0, 10.0, 10.0])];
        let dts = [
            dt(1, 1, 1, [200.0, 200.0, 150.0, 150.0], 0.9),
            dt(2, 1, 1, [0.0, 0.0, 10.0, 10.0], 0.8),
        ];
        let s = evaluate(&[1], &[1], &gts, &dts).stats();
        assert!(close(s.map, 0.5) && close(s.map_small, 1.0), "{s:?}");
        assert_eq!(s.map_large, -1.0);
    }
}
