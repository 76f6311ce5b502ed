//! The workstation trainer (`trainer` binary; cargo feature `trainer`), on
//! candle, in the order a training step runs:
//!
//! ```text
//! FramePair ─ train::source / loader / augment ─ batch: rgb [B, 3, S, S], ir [B, 1, S, S], labels
//!   ├ model (student)            ─ per level [B, 64 + nc, H/s, W/s] → decoded [B, 4 + nc, N]
//!   ├ model::teacher (frozen)    ─ the same from RGB+IR, fused by model::fusion (CCA)
//!   ├ assign (task-aligned)      ─ which anchors learn which box
//!   ├ loss (box IoU, DFL, class) ─ L_det
//!   ├ distill (feature, InfoNCE, response) ─ L_distill
//!   └ train::run (optim, ema)    ─ L_det + α·L_distill → AdamW/SGD step; checkpoint
//! ```
//!
//! [`ops`] holds the fast CPU kernels the model's blocks call, [`checkpoint`]
//! the safetensors files, [`export`] the ONNX writer for the student (what
//! the device runs), [`predict`] a checkpoint on one image,
//! [`pseudo_label`] a teacher labelling unlabeled pairs once, [`autolabel`]
//! the thermal image labelling them with no model, [`import`] recordings
//! stored as side-by-side pairs, and
//! `train::experiment` the multi-arm comparison.

pub mod assign;
pub mod autolabel;
pub mod checkpoint;
pub mod distill;
pub mod export;
pub mod import;
pub mod loss;
pub mod model;
pub mod ops;
pub mod predict;
pub mod pseudo_label;
pub mod train;
