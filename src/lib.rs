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
pub mod data;
pub mod draw;
pub mod eval;
#[cfg(feature = "trainer")]
pub mod export;
#[cfg(feature = "trainer")]
pub mod loss;
#[cfg(feature = "trainer")]
pub mod model;
pub mod pair;
pub mod postprocess;
pub mod preprocess;
pub mod publish;
pub mod synth;
#[cfg(feature = "trainer")]
pub mod train;
