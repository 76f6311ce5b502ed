//! Training: data (sources, augmentation, loader) and the loop.

pub mod augment;
pub mod ema;
pub mod experiment;
pub mod loader;
pub mod optim;
pub mod plot;
pub mod run;
pub mod source;
