//! Shorthands the COCO evaluation's unit tests share.

use super::{DetectionResult, GroundTruth};

/// Tolerance for values the tests compute by hand.
const EPS: f64 = 1e-12;

pub(super) fn gt(id: i64, img: i64, cat: i64, bbox: [f64; 4]) -> GroundTruth {
    GroundTruth::from_box(id, img, cat, bbox)
}

pub(super) fn dt(id: i64, img: i64, cat: i64, bbox: [f64; 4], score: f64) -> DetectionResult {
    DetectionResult::new(id, img, cat, bbox, score)
}

pub(super) fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < EPS
}
