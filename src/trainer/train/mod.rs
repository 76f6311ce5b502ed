//! Training: data (sources, augmentation, loader) and the loop.
//!
//! A run, in the order a reader follows it: `options` (what it is
//! configured with) → `init` / `pretrained` / `resume` (what it starts from) → `source`,
//! `loader`, `augment`, `inputs` (batches as tensors) → `run` (the epoch
//! and step loop; `step` the distillation part and timings, `optim` and
//! `ema` the update) → `validate` (mAP of the EMA weights) → `results`,
//! `plot`, `console` (what it writes and prints). `experiment` compares
//! whole runs.

pub mod augment;
pub mod bench;
mod console;
pub mod ema;
pub mod experiment;
pub mod init;
pub mod inputs;
pub mod loader;
pub mod optim;
pub mod options;
pub mod plot;
pub mod pretrained;
pub mod results;
mod resume;
pub mod run;
pub mod source;
pub mod step;
mod unlabeled;
pub mod validate;
pub mod vars;
