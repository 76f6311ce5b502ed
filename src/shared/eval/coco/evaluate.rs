//! The driver: pycocotools' `evaluate()` (with `_prepare()`, which groups
//! the annotations per image and category) followed by `accumulate()`,
//! running per-image matching and accumulation over every category, area
//! range and detection cap.

use std::collections::{HashMap, HashSet};

use super::accumulate::{accumulate, CocoEval};
use super::annotations::{DetectionResult, GroundTruth};
use super::matching::{ImageCategory, ImageEval};
use super::params::{iou_thresholds, recall_thresholds, AREA_RANGES, MAX_DETS};

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
    let groups = group_by_image_category(&img_ids, &cat_ids, gts, dts);
    let num_gts = groups
        .values()
        .flat_map(|(g, _)| g)
        .filter(|g| !g.iscrowd)
        .count();
    let num_dts = groups.values().map(|(_, d)| d.len()).sum();

    let mut eval = CocoEval::unmeasured(
        img_ids,
        cat_ids,
        iou_thrs,
        recall_thresholds(),
        num_gts,
        num_dts,
    );
    for k in 0..eval.cat_ids.len() {
        let evals = evaluate_category(&eval, eval.cat_ids[k], &groups);
        for (a, area_evals) in evals.iter().enumerate() {
            let refs: Vec<&ImageEval> = area_evals.iter().collect();
            for (m, &cap) in MAX_DETS.iter().enumerate() {
                if let Some(curve) = accumulate(&refs, cap, eval.iou_thrs.len(), &eval.rec_thrs) {
                    eval.record(k, a, m, &curve);
                }
            }
        }
    }
    eval
}

/// `evaluateImg` on every image (in id order) with anything of category
/// `cat`, for every area range: `[a]` holds area range `a`'s results.
fn evaluate_category(eval: &CocoEval, cat: i64, groups: &Groups) -> Vec<Vec<ImageEval>> {
    let max_det = MAX_DETS[MAX_DETS.len() - 1];
    let mut evals: Vec<Vec<ImageEval>> = vec![Vec::new(); AREA_RANGES.len()];
    for &img in &eval.img_ids {
        let Some((g, d)) = groups.get(&(img, cat)) else {
            continue;
        };
        let ic = ImageCategory::new(g.clone(), d.clone(), max_det);
        for (a, &(_, lo, hi)) in AREA_RANGES.iter().enumerate() {
            evals[a].extend(ic.evaluate((lo, hi), &eval.iou_thrs));
        }
    }
    evals
}

fn sorted_unique(ids: &[i64]) -> Vec<i64> {
    let mut v = ids.to_vec();
    v.sort_unstable();
    v.dedup();
    v
}

/// Ground truths and detections per (image id, category id).
type Groups<'a> = HashMap<(i64, i64), (Vec<&'a GroundTruth>, Vec<&'a DetectionResult>)>;

/// Ground truths and detections per (image, category), input order kept,
/// restricted to the evaluated images and categories (`_prepare`).
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
