//! irdistill: an RGB+IR teacher distilled into an RGB-only student, and the
//! camera daemon that runs the student. See README.md ("Architecture").
//!
//! The crate is three folders, one per role:
//!
//! - [`device`]: the camera daemon (`irdistill` binary), built for the edge
//!   board with no candle:
//!   `capture → convert → infer → postprocess → track → publish`, driven by
//!   `pipeline`.
//! - [`trainer`] (cargo feature `trainer`): the workstation half (`trainer`
//!   binary), on candle:
//!   `pair → model (teacher, student) → assign + loss (+ distill) → train`,
//!   then `export` to ONNX.
//! - [`shared`]: what both halves use: the box, condition and frame-pair
//!   types, the letterbox and NMS, the scene generator, the dataset readers
//!   and the COCO evaluator.
//!
//! Dependencies point one way: `device` and `trainer` use `shared`;
//! `shared` names neither, and `device` never names `trainer`.

pub mod device;
pub mod shared;
#[cfg(feature = "trainer")]
pub mod trainer;
