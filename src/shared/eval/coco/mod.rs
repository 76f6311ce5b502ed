//! The COCO bounding-box evaluation (pycocotools' `COCOeval` with
//! `iouType='bbox'`) on plain structs.
//!
//! The goal is numerical agreement with pycocotools, not just "a mAP": every
//! published detector number is a pycocotools number, so these modules keep
//! its conventions even where they are odd (they are pointed out where they
//! occur). Thresholds are built the way numpy builds them, IoUs are computed
//! with the same f64 operations as `maskApi.c`, and every sort is stable, so
//! ties break the same way.
//!
//! One module per part of `COCOeval`, in the order an evaluation uses them:
//! - `params`: the fixed settings (`Params.setDetParams`): IoU thresholds,
//!   recall points, area ranges, detection caps;
//! - `annotations`: the inputs, [`GroundTruth`] and [`DetectionResult`];
//! - `evaluate`: [`evaluate()`], the driver (`evaluate()` with `_prepare()`,
//!   then `accumulate()`);
//! - `iou`: box IoUs (`computeIoU`, `bbIou` in `maskApi.c`);
//! - `matching`: per-image greedy matching (`evaluateImg`);
//! - `accumulate`: precision/recall curves and the [`CocoEval`] arrays that
//!   hold them (`accumulate()`);
//! - `summary`: the twelve numbers, [`CocoStats`] (`summarize()`);
//! - `numpy`: the numpy behaviour the numbers depend on bit for bit.

mod accumulate;
mod annotations;
mod evaluate;
mod iou;
mod matching;
mod numpy;
mod params;
mod summary;
#[cfg(test)]
mod test_support;

pub use accumulate::CocoEval;
pub use annotations::{DetectionResult, GroundTruth};
pub use evaluate::evaluate;
pub use iou::box_ious;
pub use numpy::linspace;
pub use params::{iou_thresholds, recall_thresholds, AREA_RANGES, MAX_DETS};
pub use summary::CocoStats;
