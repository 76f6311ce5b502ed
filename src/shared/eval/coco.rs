//! The COCO bounding-box evaluation (pycocotools' `COCOeval` with
//! `iouType='bbox'`) on plain structs.
//!
//! The goal is numerical agreement with pycocotools, not just "a mAP": every
//! published detector number is a pycocotools number, so this module keeps its
//! conventions even where they are odd (they are pointed out where they
//! occur). Thresholds are built the way numpy builds them, IoUs are computed
//! with the same f64 operations as `maskApi.c`, and every sort is stable, so
//! ties break the same way.

use std::cmp::Ordering;
use std::collections::{HashMap, HashSet};

/// Detections kept per image and the per-image caps the recall stats use.
pub const MAX_DETS: [usize; 3] = [1, 10, 100];

/// Area ranges `(label, min, max)`, inclusive at both ends, in pixels².
pub const AREA_RANGES: [(&str, f64, f64); 4] = [
    ("all", 0.0, 1e10),
    ("small", 0.0, 1024.0),
    ("medium", 1024.0, 9216.0),
    ("large", 9216.0, 1e10),
];

/// Index of `AREA_RANGES` covering every object.
const AREA_ALL: usize = 0;
/// Index of `MAX_DETS` used for the AP stats.
const MAX_DET_AP: usize = 2;
/// Index of IoU 0.50 and 0.75 in `iou_thresholds()`.
const IOU_50: usize = 0;
const IOU_75: usize = 5;

/// Evenly spaced values computed as `numpy.linspace(start, stop, num)` does
/// (`i * step + start`, last element forced to `stop`), so that comparisons
/// against the thresholds agree with numpy bit for bit (0.9 comes out as
/// 0.8999999999999999, for instance).
pub fn linspace(start: f64, stop: f64, num: usize) -> Vec<f64> {
    if num == 0 {
        return Vec::new();
    }
    if num == 1 {
        return vec![start];
    }
    let step = (stop - start) / (num - 1) as f64;
    let mut out: Vec<f64> = (0..num).map(|i| i as f64 * step + start).collect();
    out[num - 1] = stop;
    out
}

/// The ten IoU thresholds 0.50:0.05:0.95.
pub fn iou_thresholds() -> Vec<f64> {
    linspace(0.5, 0.95, 10)
}

/// The 101 recall points 0:0.01:1 at which precision is sampled.
pub fn recall_thresholds() -> Vec<f64> {
    linspace(0.0, 1.0, 101)
}

/// A ground-truth box. `bbox` is COCO `[x, y, width, height]`; `area` is the
/// annotation's own area (for COCO files the segmentation area, not w*h),
/// which only decides the small/medium/large bucket.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GroundTruth {
    /// Annotation id. pycocotools records matches by id and treats id 0 as
    /// "no match", so a ground truth with id 0 can never be a true positive.
    pub id: i64,
    pub image_id: i64,
    pub category_id: i64,
    pub bbox: [f64; 4],
    pub area: f64,
    /// A crowd region: never counted, and detections inside it are ignored.
    pub iscrowd: bool,
}

impl GroundTruth {
    /// A non-crowd ground truth whose area is its box area.
    pub fn from_box(id: i64, image_id: i64, category_id: i64, bbox: [f64; 4]) -> Self {
        Self {
            id,
            image_id,
            category_id,
            bbox,
            area: bbox[2] * bbox[3],
            iscrowd: false,
        }
    }
}

/// A scored detection (one entry of a COCO results file). `area` is w*h.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DetectionResult {
    /// Positive id (pycocotools numbers results 1..n in file order).
    pub id: i64,
    pub image_id: i64,
    pub category_id: i64,
    pub bbox: [f64; 4],
    pub score: f64,
    pub area: f64,
}

impl DetectionResult {
    pub fn new(id: i64, image_id: i64, category_id: i64, bbox: [f64; 4], score: f64) -> Self {
        Self {
            id,
            image_id,
            category_id,
            bbox,
            score,
            area: bbox[2] * bbox[3],
        }
    }
}

/// IoU of every detection (rows) with every ground truth (columns), with
/// exactly the f64 operations of `bbIou` in pycocotools' `maskApi.c`: no +1
/// on widths, and for a crowd ground truth the union is the detection's area
/// (so a detection fully inside a crowd region scores 1).
pub fn box_ious(dts: &[[f64; 4]], gts: &[[f64; 4]], iscrowd: &[bool]) -> Vec<f64> {
    let mut out = vec![0.0; dts.len() * gts.len()];
    for (g, gb) in gts.iter().enumerate() {
        let ga = gb[2] * gb[3];
        for (d, db) in dts.iter().enumerate() {
            let da = db[2] * db[3];
            let w = (db[2] + db[0]).min(gb[2] + gb[0]) - db[0].max(gb[0]);
            if w <= 0.0 {
                continue;
            }
            let h = (db[3] + db[1]).min(gb[3] + gb[1]) - db[1].max(gb[1]);
            if h <= 0.0 {
                continue;
            }
            let inter = w * h;
            let union = if iscrowd[g] { da } else { da + ga - inter };
            out[d * gts.len() + g] = inter / union;
        }
    }
    out
}

/// Descending score order as numpy's `argsort(-scores)`: equal scores compare
/// equal (so a stable sort keeps input order) and NaN goes last.
fn by_score_desc(a: f64, b: f64) -> Ordering {
    match (a.is_nan(), b.is_nan()) {
        (false, false) => b.partial_cmp(&a).unwrap_or(Ordering::Equal),
        (a_nan, b_nan) => a_nan.cmp(&b_nan),
    }
}

/// One image × category × area range after matching (pycocotools'
/// `evaluateImg` result, reduced to what accumulation needs).
#[derive(Debug, Clone)]
struct ImageEval {
    /// Scores of the kept detections, highest first.
    scores: Vec<f64>,
    /// `[t * D + d]`: detection `d` matched a ground truth at threshold `t`
    /// (more precisely: the matched ground truth's id is non-zero).
    matched: Vec<bool>,
    /// `[t * D + d]`: detection `d` is neither a true nor a false positive.
    ignored: Vec<bool>,
    /// Ground truths of this area range that count towards recall.
    counted_gts: usize,
}

/// Ground truths and detections of one image and category, detections
/// sorted by score and capped, with their IoU matrix.
struct ImageCategory<'a> {
    gts: Vec<&'a GroundTruth>,
    dts: Vec<&'a DetectionResult>,
    /// `[d * G + g]`, empty when there are no detections or no ground truths.
    ious: Vec<f64>,
}

impl<'a> ImageCategory<'a> {
    fn new(gts: Vec<&'a GroundTruth>, mut dts: Vec<&'a DetectionResult>, max_det: usize) -> Self {
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
    fn evaluate(&self, (lo, hi): (f64, f64), iou_thrs: &[f64]) -> Option<ImageEval> {
        if self.gts.is_empty() && self.dts.is_empty() {
            return None;
        }
        let n_gt = self.gts.len();
        let n_dt = self.dts.len();
        let gt_ignored: Vec<bool> = self
            .gts
            .iter()
            .map(|g| g.iscrowd || g.area < lo || g.area > hi)
            .collect();
        // Counted ground truths first, ignored ones last, otherwise in input
        // order (a stable sort on the ignore flag).
        let order: Vec<usize> = (0..n_gt)
            .filter(|&g| !gt_ignored[g])
            .chain((0..n_gt).filter(|&g| gt_ignored[g]))
            .collect();

        let mut matched_gt_id = vec![0i64; iou_thrs.len() * n_dt];
        let mut ignored = vec![false; iou_thrs.len() * n_dt];
        if !self.ious.is_empty() {
            for (t, &thr) in iou_thrs.iter().enumerate() {
                // Id of the detection that took each ground truth (by `order`
                // position); 0 = free, as in pycocotools.
                let mut taken_by = vec![0i64; n_gt];
                for (d, dt) in self.dts.iter().enumerate() {
                    let Some(pos) = self.best_match(d, thr, &order, &gt_ignored, &taken_by) else {
                        continue;
                    };
                    let g = order[pos];
                    ignored[t * n_dt + d] = gt_ignored[g];
                    matched_gt_id[t * n_dt + d] = self.gts[g].id;
                    taken_by[pos] = dt.id;
                }
            }
        }
        // Unmatched detections outside the area range are not false positives
        // of this range.
        for (d, dt) in self.dts.iter().enumerate() {
            if dt.area < lo || dt.area > hi {
                for t in 0..iou_thrs.len() {
                    if matched_gt_id[t * n_dt + d] == 0 {
                        ignored[t * n_dt + d] = true;
                    }
                }
            }
        }
        Some(ImageEval {
            scores: self.dts.iter().map(|d| d.score).collect(),
            matched: matched_gt_id.iter().map(|&id| id != 0).collect(),
            ignored,
            counted_gts: gt_ignored.iter().filter(|&&i| !i).count(),
        })
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

/// Precision at every recall point (`[t * R + r]`) and final recall (`[t]`)
/// of one category, area range and detection cap.
struct Curve {
    precision: Vec<f64>,
    recall: Vec<f64>,
}

/// pycocotools' `accumulate` for one category, area range and per-image
/// detection cap. `evals` are in image-id order, which decides how equal
/// scores from different images are ranked. `None` when no ground truth
/// counts (the category then stays at -1).
fn accumulate(
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
    // (image, detection) pairs, ranked by score; the sort is stable.
    let mut ranked: Vec<(usize, usize)> = evals
        .iter()
        .enumerate()
        .flat_map(|(i, e)| (0..e.scores.len().min(max_det)).map(move |d| (i, d)))
        .collect();
    ranked
        .sort_by(|&(ia, da), &(ib, db)| by_score_desc(evals[ia].scores[da], evals[ib].scores[db]));

    let n_rec = rec_thrs.len();
    let mut curve = Curve {
        precision: vec![0.0; n_iou * n_rec],
        recall: vec![0.0; n_iou],
    };
    let mut rc = Vec::with_capacity(ranked.len());
    let mut pr = Vec::with_capacity(ranked.len());
    for t in 0..n_iou {
        rc.clear();
        pr.clear();
        let (mut tp, mut fp) = (0.0f64, 0.0f64);
        for &(i, d) in &ranked {
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
        curve.recall[t] = rc.last().copied().unwrap_or(0.0);
        // Precision envelope: the best precision at this recall or beyond.
        for j in (1..pr.len()).rev() {
            if pr[j] > pr[j - 1] {
                pr[j - 1] = pr[j];
            }
        }
        for (r, &thr) in rec_thrs.iter().enumerate() {
            // numpy searchsorted(rc, thr, side='left'); recall points past
            // the last reached recall keep precision 0.
            let j = rc.partition_point(|&x| x < thr);
            if j >= pr.len() {
                break;
            }
            curve.precision[t * n_rec + r] = pr[j];
        }
    }
    Some(curve)
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

/// Evaluates `dts` against `gts` on the given images and categories, as
/// pycocotools' `evaluate()` + `accumulate()`. Annotations of other images or
/// categories are left out (pycocotools does the same). Within one image and
/// category, input order breaks score ties, as file order does for
/// pycocotools.
pub fn evaluate(
    img_ids: &[i64],
    cat_ids: &[i64],
    gts: &[GroundTruth],
    dts: &[DetectionResult],
) -> CocoEval {
    let img_ids = sorted_unique(img_ids);
    let cat_ids = sorted_unique(cat_ids);
    let iou_thrs = iou_thresholds();
    let rec_thrs = recall_thresholds();
    let (n_t, n_r, n_k, n_a, n_m) = (
        iou_thrs.len(),
        rec_thrs.len(),
        cat_ids.len(),
        AREA_RANGES.len(),
        MAX_DETS.len(),
    );

    let groups = group_by_image_category(&img_ids, &cat_ids, gts, dts);
    let num_gts = groups
        .values()
        .flat_map(|(g, _)| g)
        .filter(|g| !g.iscrowd)
        .count();
    let num_dts = groups.values().map(|(_, d)| d.len()).sum();

    let mut precision = vec![-1.0; n_t * n_r * n_k * n_a * n_m];
    let mut recall = vec![-1.0; n_t * n_k * n_a * n_m];
    let max_det = MAX_DETS[n_m - 1];
    for (k, &cat) in cat_ids.iter().enumerate() {
        // evals[a] = the images (in id order) with anything of this category.
        let mut evals: Vec<Vec<ImageEval>> = vec![Vec::new(); n_a];
        for &img in &img_ids {
            let Some((g, d)) = groups.get(&(img, cat)) else {
                continue;
            };
            let ic = ImageCategory::new(g.clone(), d.clone(), max_det);
            for (a, &(_, lo, hi)) in AREA_RANGES.iter().enumerate() {
                evals[a].extend(ic.evaluate((lo, hi), &iou_thrs));
            }
        }
        for (a, area_evals) in evals.iter().enumerate() {
            let refs: Vec<&ImageEval> = area_evals.iter().collect();
            for (m, &cap) in MAX_DETS.iter().enumerate() {
                let Some(curve) = accumulate(&refs, cap, n_t, &rec_thrs) else {
                    continue;
                };
                for t in 0..n_t {
                    recall[((t * n_k + k) * n_a + a) * n_m + m] = curve.recall[t];
                    for r in 0..n_r {
                        precision[(((t * n_r + r) * n_k + k) * n_a + a) * n_m + m] =
                            curve.precision[t * n_r + r];
                    }
                }
            }
        }
    }
    CocoEval {
        img_ids,
        cat_ids,
        iou_thrs,
        rec_thrs,
        num_gts,
        num_dts,
        precision,
        recall,
    }
}

fn sorted_unique(ids: &[i64]) -> Vec<i64> {
    let mut v = ids.to_vec();
    v.sort_unstable();
    v.dedup();
    v
}

type Groups<'a> = HashMap<(i64, i64), (Vec<&'a GroundTruth>, Vec<&'a DetectionResult>)>;

/// Ground truths and detections per (image, category), input order kept,
/// restricted to the evaluated images and categories.
fn group_by_image_category<'a>(
    img_ids: &[i64],
    cat_ids: &[i64],
    gts: &'a [GroundTruth],
    dts: &'a [DetectionResult],
) -> Groups<'a> {
    let imgs: HashSet<i64> = img_ids.iter().copied().collect();
    let cats: HashSet<i64> = cat_ids.iter().copied().collect();
    let wanted = |img: i64, cat: i64| imgs.contains(&img) && cats.contains(&cat);
    let mut groups: Groups = HashMap::new();
    for g in gts.iter().filter(|g| wanted(g.image_id, g.category_id)) {
        groups
            .entry((g.image_id, g.category_id))
            .or_default()
            .0
            .push(g);
    }
    for d in dts.iter().filter(|d| wanted(d.image_id, d.category_id)) {
        groups
            .entry((d.image_id, d.category_id))
            .or_default()
            .1
            .push(d);
    }
    groups
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

/// The sum of `a` in numpy's summation order (`pairwise_sum` in numpy's
/// loops): plain below 8 values, 8 interleaved partial sums up to 128,
/// otherwise split in two halves (the first a multiple of 8). Summing in the
/// same order makes the means bit-identical to pycocotools', not just close.
fn pairwise_sum(a: &[f64]) -> f64 {
    let n = a.len();
    if n < 8 {
        a.iter().fold(-0.0, |acc, &v| acc + v)
    } else if n <= 128 {
        let mut r = [0.0; 8];
        r.copy_from_slice(&a[..8]);
        let blocks_end = n - n % 8;
        for block in a[8..blocks_end].chunks_exact(8) {
            for (acc, &v) in r.iter_mut().zip(block) {
                *acc += v;
            }
        }
        let mut res = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
        for &v in &a[blocks_end..] {
            res += v;
        }
        res
    } else {
        let half = n / 2;
        let half = half - half % 8;
        pairwise_sum(&a[..half]) + pairwise_sum(&a[half..])
    }
}

impl CocoEval {
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
            map_small: self.mean_ap(None, 1, top),
            map_medium: self.mean_ap(None, 2, top),
            map_large: self.mean_ap(None, 3, top),
            ar1: self.mean_ar(AREA_ALL, 0),
            ar10: self.mean_ar(AREA_ALL, 1),
            ar100: self.mean_ar(AREA_ALL, 2),
            ar_small: self.mean_ar(1, top),
            ar_medium: self.mean_ar(2, top),
            ar_large: self.mean_ar(3, top),
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
    use super::*;

    const EPS: f64 = 1e-12;

    fn gt(id: i64, img: i64, cat: i64, bbox: [f64; 4]) -> GroundTruth {
        GroundTruth::from_box(id, img, cat, bbox)
    }

    fn dt(id: i64, img: i64, cat: i64, bbox: [f64; 4], score: f64) -> DetectionResult {
        DetectionResult::new(id, img, cat, bbox, score)
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < EPS
    }

    #[test]
    fn thresholds_match_numpy_linspace() {
        // Values printed by numpy 2.x: np.linspace(.5, .95, 10).tolist()
        let expected = [
            0.5,
            0.55,
            0.6,
            0.65,
            0.7,
            0.75,
            0.8,
            0.85,
            0.8999999999999999,
            0.95,
        ];
        assert_eq!(iou_thresholds(), expected);
        assert_eq!(iou_thresholds()[IOU_75], 0.75);
        let r = recall_thresholds();
        assert_eq!(r.len(), 101);
        assert_eq!((r[0], r[50], r[100]), (0.0, 0.5, 1.0));
        assert_eq!(r[7], 7.0 * 0.01);
    }

    #[test]
    fn pairwise_sum_follows_numpy_order() {
        // Exact on integers whatever the order; checks every branch adds all.
        for n in [0usize, 1, 7, 8, 9, 16, 127, 128, 129, 1000, 5050] {
            let a: Vec<f64> = (0..n).map(|i| (i % 13) as f64).collect();
            assert_eq!(pairwise_sum(&a), a.iter().sum::<f64>(), "n = {n}");
        }
        // [1, 1e-16 x 8]: left to right every tiny term is lost against the
        // 1, while numpy's partial sums add six of them together first.
        let mut a = vec![1.0];
        a.extend([1e-16; 8]);
        assert_eq!(a.iter().sum::<f64>(), 1.0);
        // np.sum(np.array([1.0] + [1e-16] * 8)) in numpy 2.x:
        assert_eq!(pairwise_sum(&a), 1.0000000000000007);
    }

    #[test]
    fn iou_has_no_plus_one_and_crowd_uses_detection_area() {
        let g = [[0.0, 0.0, 10.0, 10.0]];
        let d = [
            [5.0, 0.0, 10.0, 10.0],
            [20.0, 20.0, 5.0, 5.0],
            [2.0, 2.0, 4.0, 4.0],
        ];
        let ious = box_ious(&d, &g, &[false]);
        assert!(close(ious[0], 50.0 / 150.0));
        assert_eq!(ious[1], 0.0);
        assert!(close(ious[2], 16.0 / 100.0));
        let crowd = box_ious(&d, &g, &[true]);
        assert!(close(crowd[0], 50.0 / 100.0));
        assert_eq!(crowd[2], 1.0);
    }

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
