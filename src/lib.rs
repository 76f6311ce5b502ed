//! irdistill: see README.md.
//!
//! The runtime library (no candle): the paired scene generator (`synth`),
//! dataset readers (`data`), the COCO evaluator (`eval`) and the shared
//! types they pass around (`bbox`, `condition`, `pair`). The candle trainer
//! lives behind the `trainer` feature.

#[cfg(feature = "trainer")]
pub mod assign;
pub mod baseline;
pub mod bbox;
pub mod capture;
pub mod condition;
pub mod config;
pub mod convert;
pub mod data;
#[cfg(feature = "trainer")]
pub mod distill;
pub mod draw;
pub mod eval;
#[cfg(feature = "trainer")]
pub mod export;
pub mod infer;
#[cfg(feature = "trainer")]
pub mod loss;
pub mod metrics;
#[cfg(feature = "trainer")]
pub mod model;
#[cfg(feature = "trainer")]
pub mod ops;
pub mod pair;
pub mod pipeline;
pub mod postprocess;
pub mod preprocess;
pub mod publish;
pub mod service;
pub mod synth;
pub mod track;
#[cfg(feature = "trainer")]
pub mod train;
