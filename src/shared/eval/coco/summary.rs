//! The summary: pycocotools' `summarize()`. Averages the accumulated
//! precision and recall into the twelve numbers of `COCOeval.stats`
//! ([`CocoStats`]), per-category APs, and the text lines it prints.

use super::accumulate::CocoEval;
use super::numpy::pairwise_sum;
use super::params::{AREA_ALL, AREA_LARGE, AREA_MEDIUM, AREA_SMALL, IOU_50, IOU_75, MAX_DET_AP};

impl CocoEval {
    /// Mean precision over the chosen IoU thresholds (all when `iou` is None)
    /// and all categories, at area range `a` and cap `m`.
    fn mean_ap(&self, iou: Option<usize>, a: usize, m: usize) -> f64 {
        let ts: Vec<usize> = iou.map_or_else(|| (0..self.iou_thrs.len()).collect(), |t| vec![t]);
        let (n_r, n_k) = (self.rec_thrs.len(), self.cat_ids.len());
        mean_valid(ts.into_iter().flat_map(|t| {
            (0..n_r).flat_map(move |r| (0..n_k).map(move |k| self.precision(t, r, k, a, m)))
        }))
    }

    /// Mean recall over all IoU thresholds and categories.
    fn mean_ar(&self, a: usize, m: usize) -> f64 {
        let n_k = self.cat_ids.len();
        mean_valid(
            (0..self.iou_thrs.len()).flat_map(|t| (0..n_k).map(move |k| self.recall(t, k, a, m))),
        )
    }

    /// The twelve numbers of pycocotools' `summarize()`.
    pub fn stats(&self) -> CocoStats {
        let top = MAX_DET_AP;
        CocoStats {
            map: self.mean_ap(None, AREA_ALL, top),
            map50: self.mean_ap(Some(IOU_50), AREA_ALL, top),
            map75: self.mean_ap(Some(IOU_75), AREA_ALL, top),
            map_small: self.mean_ap(None, AREA_SMALL, top),
            map_medium: self.mean_ap(None, AREA_MEDIUM, top),
            map_large: self.mean_ap(None, AREA_LARGE, top),
            ar1: self.mean_ar(AREA_ALL, 0),
            ar10: self.mean_ar(AREA_ALL, 1),
            ar100: self.mean_ar(AREA_ALL, 2),
            ar_small: self.mean_ar(AREA_SMALL, top),
            ar_medium: self.mean_ar(AREA_MEDIUM, top),
            ar_large: self.mean_ar(AREA_LARGE, top),
        }
    }

    /// AP of category index `k` (area all, 100 detections), averaged over
    /// IoU 0.50:0.95, or at a single threshold index; -1 without ground truth.
    pub fn category_ap(&self, k: usize, iou: Option<usize>) -> f64 {
        let ts: Vec<usize> = iou.map_or_else(|| (0..self.iou_thrs.len()).collect(), |t| vec![t]);
        let n_r = self.rec_thrs.len();
        mean_valid(
            ts.into_iter()
                .flat_map(|t| (0..n_r).map(move |r| self.precision(t, r, k, AREA_ALL, MAX_DET_AP))),
        )
    }

    /// AP@[.50:.95] of category index `k`.
    pub fn category_map(&self, k: usize) -> f64 {
        self.category_ap(k, None)
    }

    /// AP@.50 of category index `k`.
    pub fn category_map50(&self, k: usize) -> f64 {
        self.category_ap(k, Some(IOU_50))
    }
}

/// Mean of the entries that are not -1 (a category without ground truth),
/// or -1 when there are none, as pycocotools' `summarize` (`np.mean`).
fn mean_valid(values: impl Iterator<Item = f64>) -> f64 {
    let valid: Vec<f64> = values.filter(|&v| v > -1.0).collect();
    if valid.is_empty() {
        -1.0
    } else {
        pairwise_sum(&valid) / valid.len() as f64
    }
}

/// pycocotools' twelve summary numbers (`COCOeval.stats`), -1 where nothing
/// could be measured.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct CocoStats {
    /// AP@[.50:.95], all areas, 100 detections.
    pub map: f64,
    pub map50: f64,
    pub map75: f64,
    pub map_small: f64,
    pub map_medium: f64,
    pub map_large: f64,
    /// AR@[.50:.95] with 1, 10 and 100 detections per image.
    pub ar1: f64,
    pub ar10: f64,
    pub ar100: f64,
    pub ar_small: f64,
    pub ar_medium: f64,
    pub ar_large: f64,
}

impl CocoStats {
    /// In pycocotools' `stats` order.
    pub fn to_array(&self) -> [f64; 12] {
        [
            self.map,
            self.map50,
            self.map75,
            self.map_small,
            self.map_medium,
            self.map_large,
            self.ar1,
            self.ar10,
            self.ar100,
            self.ar_small,
            self.ar_medium,
            self.ar_large,
        ]
    }

    /// The twelve lines pycocotools' `summarize()` prints, same layout.
    pub fn summary_lines(&self) -> Vec<String> {
        // (is AP, IoU label, area label, max dets)
        const ROWS: [(bool, &str, &str, usize); 12] = [
            (true, "0.50:0.95", "all", 100),
            (true, "0.50", "all", 100),
            (true, "0.75", "all", 100),
            (true, "0.50:0.95", "small", 100),
            (true, "0.50:0.95", "medium", 100),
            (true, "0.50:0.95", "large", 100),
            (false, "0.50:0.95", "all", 1),
            (false, "0.50:0.95", "all", 10),
            (false, "0.50:0.95", "all", 100),
            (false, "0.50:0.95", "small", 100),
            (false, "0.50:0.95", "medium", 100),
            (false, "0.50:0.95", "large", 100),
        ];
        ROWS.iter()
            .zip(self.to_array())
            .map(|(&(ap, iou, area, dets), v)| {
                let (title, kind) = if ap { ("Average Precision", "(AP)") } else { ("Average Recall", "(AR)") };
                format!(" {title:<18} {kind} @[ IoU={iou:<9} | area={area:>6} | maxDets={dets:>3} ] = {v:.3}")
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::super::evaluate;
    use super::super::test_support::{close, dt, gt};

    #[test]
    fn perfect_detection_scores_one() {
        let gts = [gt(1, 1, 1, [10.0, 10.0, 50.0, 40.0])]; // area 2000: medium
        let dts = [dt(1, 1, 1, [10.0, 10.0, 50.0, 40.0], 0.9)];
        let s = evaluate(&[1], &[1], &gts, &dts).stats();
        for v in [
            s.map,
            s.map50,
            s.map75,
            s.map_medium,
            s.ar1,
            s.ar10,
            s.ar100,
            s.ar_medium,
        ] {
            assert!(close(v, 1.0), "{s:?}");
        }
        // No small or large objects: nothing to measure.
        assert_eq!(
            (s.map_small, s.map_large, s.ar_small, s.ar_large),
            (-1.0, -1.0, -1.0, -1.0)
        );
    }

    #[test]
    fn categories_without_ground_truth_are_left_out_of_the_mean() {
        let gts = [gt(1, 1, 1, [0.0, 0.0, 10.0, 10.0])];
        let dts = [
            dt(1, 1, 1, [0.0, 0.0, 10.0, 10.0], 0.9),
            dt(2, 1, 7, [0.0, 0.0, 10.0, 10.0], 0.9),
        ];
        let e = evaluate(&[1], &[1, 7], &gts, &dts);
        assert!(close(e.stats().map, 1.0));
        assert!(close(e.category_map(0), 1.0));
        assert_eq!(e.category_map(1), -1.0);
        // No images, no detections: everything is -1.
        assert_eq!(evaluate(&[], &[1], &[], &[]).stats().map, -1.0);
        // Ground truth but no detections: 0.
        assert_eq!(evaluate(&[1], &[1], &gts, &[]).stats().map, 0.0);
    }

    #[test]
    fn summary_lines_follow_pycocotools_layout() {
        let s = evaluate(&[1], &[1], &[gt(1, 1, 1, [0.0, 0.0, 10.0, 10.0])], &[]).stats();
        let lines = s.summary_lines();
        assert_eq!(lines.len(), 12);
        assert_eq!(
            lines[0],
            " Average Precision  (AP) @[ IoU=0.50:0.95 | area=   all | maxDets=100 ] = 0.000"
        );
        assert_eq!(
            lines[11],
            " Average Recall     (AR) @[ IoU=0.50:0.95 | area= large | maxDets=100 ] = -1.000"
        );
    }
}
