//! irdistill: see README.md.
//!
//! The runtime library (no candle): the paired scene generator (`synth`),
//! dataset readers (`data`), the COCO evaluator (`eval`) and the shared
//! types they pass around (`bbox`, `condition`, `pair`). The candle trainer
//! lives behind the `trainer` feature.

pub mod baseline;
pub mod bbox;
pub mod condition;
pub mod data;
pub mod draw;
pub mod eval;
pub mod pair;
pub mod synth;
