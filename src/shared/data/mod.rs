//! Dataset readers: the paired YOLO-txt layout and LLVIP.
//!
//! [`Dataset::open`] recognises the layout of a folder, checks every pair,
//! label and annotation up front (reading only image headers, so opening
//! thousands of images is quick) and yields [`SampleInfo`]s sorted by name.
//! [`Dataset::load_pair`] then decodes one sample into a
//! [`FramePair`](crate::shared::pair::FramePair). Every problem found is an error
//! naming the offending file (and line where there is one): a reader that
//! skips bad samples quietly would bias training and evaluation instead.

mod dataset;
pub(crate) mod images;
pub mod llvip;
pub mod meta;
mod sample;
pub mod unlabeled;
pub mod yolo;

pub use sample::{Dataset, Layout, SampleInfo};
pub use unlabeled::UnlabeledPairs;
