//! COCO-style evaluation.
//!
//! [`coco`] is pycocotools' `COCOeval` (bbox) on plain structs, matching its
//! numbers to floating-point noise; [`json`] reads COCO instances and results
//! files for it; [`metrics`] holds the numbers both report; [`report`] evaluates a dataset's labels and detections
//! overall and per imaging condition (training's validation).

pub mod coco;
pub mod json;
pub mod metrics;
pub mod pr;
pub mod report;

pub use coco::{evaluate, CocoEval, CocoStats, DetectionResult, GroundTruth};
pub use json::{
    evaluate_coco, evaluate_files, load_results, results_from_json, Category, CocoGroundTruth,
};
pub use metrics::{ClassMetrics, Metrics};
pub use report::{evaluate_dataset, EvalImage, EvalReport, ADVERSE};
