//! Opening a dataset folder: recognising its layout, reading it with that
//! layout's reader, and decoding one sample's images.

use super::images::{decode_gray, decode_rgb};
use super::sample::{Dataset, Layout, SampleInfo};
use super::{llvip, yolo};
use crate::shared::condition::Split;
use crate::shared::pair::FramePair;
use anyhow::{bail, ensure, Result};
use std::path::Path;

impl Layout {
    /// Recognises the layout of `dir` from the folders it contains.
    pub fn detect(dir: &Path) -> Result<Layout> {
        if yolo::looks_like(dir) {
            Ok(Layout::YoloPairs)
        } else if llvip::looks_like(dir) {
            Ok(Layout::Llvip)
        } else {
            bail!(
                "{}: unrecognised dataset layout; looked for {}/ (paired YOLO-txt layout) \
                 or {}/ + {}/ + {}/ (LLVIP)",
                dir.display(),
                yolo::RGB_DIR,
                llvip::VISIBLE_DIR,
                llvip::INFRARED_DIR,
                llvip::ANNOTATIONS_DIR
            )
        }
    }
}

impl Dataset {
    /// Opens and validates the dataset in `dir`: pairing, sizes (from image
    /// headers), labels and annotations. Pixels are decoded only by
    /// [`Dataset::load_pair`]. The first problem found (in name order) is
    /// returned as an error naming the file.
    pub fn open(dir: &Path) -> Result<Dataset> {
        ensure!(
            dir.is_dir(),
            "dataset folder {} does not exist or is not a folder",
            dir.display()
        );
        match Layout::detect(dir)? {
            Layout::YoloPairs => yolo::read(dir),
            Layout::Llvip => llvip::read(dir),
        }
    }

    /// The samples of one split, in name order.
    pub fn split(&self, split: Split) -> Vec<&SampleInfo> {
        self.samples.iter().filter(|s| s.split == split).collect()
    }

    /// Decodes both images of `sample` (RGB as 8-bit RGB, IR as 8-bit gray).
    /// Errors name the file that fails to decode, or both files when their
    /// size no longer matches what [`Dataset::open`] read from the headers.
    pub fn load_pair(&self, sample: &SampleInfo) -> Result<FramePair> {
        let rgb = decode_rgb(&sample.rgb_path)?;
        let ir = decode_gray(&sample.ir_path)?;
        let expected = (sample.width_px, sample.height_px);
        ensure!(
            rgb.dimensions() == expected && ir.dimensions() == expected,
            "pair '{}' changed since the dataset was opened: RGB {} is {:?}, IR {} is {:?}, \
             expected {expected:?}",
            sample.name,
            sample.rgb_path.display(),
            rgb.dimensions(),
            sample.ir_path.display(),
            ir.dimensions()
        );
        Ok(FramePair {
            name: sample.name.clone(),
            rgb,
            ir,
            labels: sample.labels.clone(),
            condition: sample.condition,
        })
    }
}
