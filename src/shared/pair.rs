//! A paired RGB + thermal frame with its labels: the unit every data source
//! (generator, dataset readers) yields.

use crate::shared::bbox::Label;
use crate::shared::condition::Condition;
use image::{GrayImage, RgbImage};

/// An RGB frame and its thermal (IR, one channel) partner of the same size,
/// with ground-truth labels in the RGB frame's pixels.
#[derive(Debug, Clone)]
pub struct FramePair {
    /// Identifies the pair within its source (file stem, or generator index).
    pub name: String,
    pub rgb: RgbImage,
    pub ir: GrayImage,
    pub labels: Vec<Label>,
    /// Known for synthetic data and datasets that record it.
    pub condition: Option<Condition>,
}

impl FramePair {
    pub fn width_px(&self) -> u32 {
        self.rgb.width()
    }

    pub fn height_px(&self) -> u32 {
        self.rgb.height()
    }
}
