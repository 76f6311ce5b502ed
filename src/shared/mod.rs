//! What the device daemon and the trainer both use. Nothing here names
//! [`crate::device`] or the trainer, and nothing here needs candle.
//!
//! - Types passed between stages: [`bbox`] (`BBox`, `Label`, `Detection`),
//!   [`condition`] (day / night / fog, splits), [`pair`] (`FramePair`).
//! - Image ↔ model geometry: [`letterbox`] (frame → `[3, S, S]` input) and
//!   [`nms`] (`[4 + nc, N]` model output → detections).
//! - Data: [`synth`] (the procedural RGB+IR scene generator) and [`data`]
//!   (LLVIP and paired YOLO-txt readers, unlabelled pairs).
//! - Judging results: [`eval`] (COCO mAP overall and per condition) and
//!   [`hot_spots`] (a training-free thermal detector, the yardstick).
//! - [`draw`]: boxes and text on frames (previews, snapshots, plots).

pub mod bbox;
pub mod condition;
pub mod data;
pub mod draw;
pub mod eval;
pub mod hot_spots;
pub mod letterbox;
pub mod nms;
pub mod pair;
pub mod synth;
