//! COCO-style evaluation.
//!
//! [`coco`] is pycocotools' `COCOeval` (bbox) on plain structs, matching its
//! numbers to floating-point noise; [`json`] reads COCO instances and results
//! files for it; [`report`] evaluates a dataset's labels and detections
//! overall and per imaging condition (training's validation).

pub mod coco;
pub mod json;
pub mod report;

pub use coco::{evaluate, CocoEval, CocoStats, DetectionResult, GroundTruth};
pub use json::{evaluate_files, load_results, results_from_json, Category, CocoGroundTruth};
pub use report::{
    evaluate_coco, evaluate_dataset, ClassMetrics, EvalImage, EvalReport, Metrics, ADVERSE,
};
