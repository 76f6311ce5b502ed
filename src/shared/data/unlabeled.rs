//! Unlabeled RGB+IR pairs for distillation (`--unlabeled DIR`): RGB and IR
//! images paired by file stem, any labels ignored. Recording pairs is cheap
//! and labelling them is not, so a folder of pairs needs no annotation.
//!
//! Accepted layouts (the first that exists): `DIR/images/{rgb,ir}` (our
//! paired YOLO layout), `DIR/{visible,infrared}` (LLVIP, every split folder
//! below them included), `DIR/{rgb,ir}`.

use super::images::{decode_gray, decode_rgb, list_images, ImagePair};
use crate::shared::pair::FramePair;
use anyhow::{bail, ensure, Result};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone)]
pub struct UnlabeledPairs {
    pub root: PathBuf,
    pairs: Vec<ImagePair>,
}

const LAYOUTS: [(&str, &str); 3] = [
    ("images/rgb", "images/ir"),
    ("visible", "infrared"),
    ("rgb", "ir"),
];

impl UnlabeledPairs {
    pub fn open(dir: &Path) -> Result<Self> {
        ensure!(
            dir.is_dir(),
            "unlabeled pairs folder {} does not exist or is not a folder",
            dir.display()
        );
        let Some((rgb_dir, ir_dir)) = LAYOUTS
            .iter()
            .map(|(r, i)| (dir.join(r), dir.join(i)))
            .find(|(r, i)| r.is_dir() && i.is_dir())
        else {
            bail!(
                "{}: expected RGB and IR image folders as images/rgb + images/ir, visible + infrared, or rgb + ir",
                dir.display()
            );
        };
        // LLVIP keeps train/ and test/ below visible/ and infrared/.
        let mut folders = vec![(rgb_dir.clone(), ir_dir.clone())];
        for sub in ["train", "test"] {
            if rgb_dir.join(sub).is_dir() && ir_dir.join(sub).is_dir() {
                folders.push((rgb_dir.join(sub), ir_dir.join(sub)));
            }
        }
        let mut pairs = Vec::new();
        for (r, i) in folders {
            let rgb = list_images(&r)?;
            let ir = list_images(&i)?;
            for (name, rgb_path) in rgb {
                let Some(ir_path) = ir.get(&name) else {
                    bail!(
                        "RGB image {} has no IR partner in {}",
                        rgb_path.display(),
                        i.display()
                    );
                };
                pairs.push(ImagePair {
                    name,
                    rgb: rgb_path,
                    ir: ir_path.clone(),
                });
            }
        }
        ensure!(
            !pairs.is_empty(),
            "{}: no RGB+IR image pairs found",
            dir.display()
        );
        // names key everything written from these pairs (labels, copies)
        let mut seen = std::collections::BTreeMap::new();
        for p in &pairs {
            if let Some(other) = seen.insert(p.name.as_str(), &p.rgb) {
                bail!(
                    "two pairs are named '{}' ({} and {}); names must be unique",
                    p.name,
                    other.display(),
                    p.rgb.display()
                );
            }
        }
        Ok(Self {
            root: dir.to_path_buf(),
            pairs,
        })
    }

    pub fn len(&self) -> usize {
        self.pairs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pairs.is_empty()
    }

    /// The name (file stem) of pair `index`.
    pub fn name(&self, index: usize) -> &str {
        &self.pairs[index].name
    }

    /// The RGB and IR files of pair `index`.
    pub fn paths(&self, index: usize) -> (&Path, &Path) {
        let p = &self.pairs[index];
        (&p.rgb, &p.ir)
    }

    /// Decodes pair `index` (no labels, no condition).
    pub fn load(&self, index: usize) -> Result<FramePair> {
        let p = &self.pairs[index];
        let rgb = decode_rgb(&p.rgb)?;
        let ir = decode_gray(&p.ir)?;
        ensure!(
            rgb.dimensions() == ir.dimensions(),
            "pair '{}': RGB {} is {:?} but IR {} is {:?}",
            p.name,
            p.rgb.display(),
            rgb.dimensions(),
            p.ir.display(),
            ir.dimensions()
        );
        Ok(FramePair {
            name: p.name.clone(),
            rgb,
            ir,
            labels: Vec::new(),
            condition: None,
        })
    }
}
