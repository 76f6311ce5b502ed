//! What a dataset is once opened, whatever its layout on disk: the layout,
//! the class names and the checked samples. The layout readers ([`super::yolo`],
//! [`super::llvip`]) produce these; [`super::dataset`] opens a folder with
//! the right reader and decodes samples.

use crate::shared::bbox::Label;
use crate::shared::condition::{Condition, Split};
use std::fmt;
use std::path::PathBuf;

/// How a dataset folder is organised on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// `images/rgb/`, `images/ir/`, `labels/*.txt` (YOLO), optional
    /// `meta.json`: our own layout, written by `trainer synth`. See [`super::yolo`].
    YoloPairs,
    /// LLVIP as released: `visible/`, `infrared/`, `Annotations/` (Pascal
    /// VOC). See [`super::llvip`].
    Llvip,
}

impl Layout {
    pub fn as_str(&self) -> &'static str {
        match self {
            Layout::YoloPairs => "yolo-pairs",
            Layout::Llvip => "llvip",
        }
    }
}

impl fmt::Display for Layout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One checked RGB + IR pair: where its files are, its size (from the image
/// headers) and its labels, without pixels.
#[derive(Debug, Clone, PartialEq)]
pub struct SampleInfo {
    /// The file stem shared by both images (unique within the dataset).
    pub name: String,
    pub rgb_path: PathBuf,
    pub ir_path: PathBuf,
    pub width_px: u32,
    pub height_px: u32,
    /// Boxes in pixels, clipped to the image.
    pub labels: Vec<Label>,
    pub condition: Option<Condition>,
    pub split: Split,
}

/// A checked dataset: class names and samples sorted by name.
#[derive(Debug, Clone)]
pub struct Dataset {
    pub root: PathBuf,
    pub layout: Layout,
    /// Class names; every label's `class_id` indexes into them.
    pub names: Vec<String>,
    pub samples: Vec<SampleInfo>,
}
