//! Model scales and the serialisable model configuration.
//!
//! YOLOv8's `yolov8.yaml` describes every size (n/s/m/l/x) with one layer
//! list written for the largest channel counts (64 … 1024) and repeat counts
//! (3 or 6 bottlenecks per C2f); a *scale* then shrinks them:
//!
//! - channels: `make_divisible(min(c, max_channels) * width, 8)`,
//! - repeats:  `max(round(n * depth), 1)` (for n > 1; Python's `round`, so
//!   ties go to even).
//!
//! [`Scale`] carries those three numbers; [`ModelConfig`] is what a
//! checkpoint stores so the model can be rebuilt from it.

use anyhow::{bail, ensure, Result};
use serde::{Deserialize, Serialize};

/// Depth/width multipliers and channel cap of one model size.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Scale {
    pub name: &'static str,
    /// Multiplies the number of bottlenecks in each C2f.
    pub depth: f64,
    /// Multiplies every channel count.
    pub width: f64,
    /// Channel counts above this are capped before `width` applies.
    pub max_channels: usize,
}

/// Every scale this crate knows. A teacher (`teacher-*`) has two backbones
/// of its student's size (RGB and IR), fused, then the student's neck and
/// head; the backbone, neck and head read nothing else from the scale.
pub const SCALES: &[Scale] = &[
    // Exactly ultralytics' YOLOv8n (`n: [0.33, 0.25, 1024]`).
    Scale {
        name: "student-n",
        depth: 0.33,
        width: 0.25,
        max_channels: 1024,
    },
    // Half of YOLOv8n's width for small edge boards (channels 8 … 128).
    Scale {
        name: "student-p",
        depth: 0.33,
        width: 0.125,
        max_channels: 1024,
    },
    // RGB+IR teachers: two backbones of the student's size each.
    Scale {
        name: "teacher-n",
        depth: 0.33,
        width: 0.25,
        max_channels: 1024,
    },
    Scale {
        name: "teacher-p",
        depth: 0.33,
        width: 0.125,
        max_channels: 1024,
    },
];

/// How a teacher fuses its RGB and IR streams (`--fusion`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Fusion {
    /// Cross-modal coordinate attention (CCAFusion) at P3, P4, P5.
    Cca,
    /// Concatenate the two streams, 1×1 Conv back to C channels.
    Concat,
    /// Add the two streams.
    Add,
    /// One backbone on a 4-channel RGB+IR input.
    Early,
    /// Common and private parts: a shared projection of each stream (pulled
    /// together), an IR-only projection (kept uncorrelated with the common
    /// part), mixed; students imitate the common part only.
    Decoupled,
}

impl std::fmt::Display for Fusion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Fusion::Cca => "cca",
            Fusion::Concat => "concat",
            Fusion::Add => "add",
            Fusion::Early => "early",
            Fusion::Decoupled => "decoupled",
        })
    }
}

impl Scale {
    /// Looks a scale up by name (`student-n`, `student-p`, …).
    pub fn by_name(name: &str) -> Result<Scale> {
        match SCALES.iter().find(|s| s.name == name) {
            Some(s) => Ok(*s),
            None => {
                let known: Vec<&str> = SCALES.iter().map(|s| s.name).collect();
                bail!(
                    "unknown model scale {name:?}; known scales: {}",
                    known.join(", ")
                )
            }
        }
    }

    /// Channel count for a `yolov8.yaml` channel number `c` (64, 128, …).
    pub fn channels(&self, c: usize) -> usize {
        let scaled = c.min(self.max_channels) as f64 * self.width;
        // make_divisible(x, 8) = ceil(x / 8) * 8
        (scaled / 8.0).ceil() as usize * 8
    }

    /// Number of bottlenecks for a `yolov8.yaml` repeat count `n`.
    pub fn repeats(&self, n: usize) -> usize {
        if n > 1 {
            // Python's round() rounds ties to even; keep that so a depth of
            // e.g. 0.5 gives the same counts as ultralytics.
            ((n as f64 * self.depth).round_ties_even() as usize).max(1)
        } else {
            n
        }
    }
}

/// What a checkpoint carries to rebuild the model: scale, classes, and the
/// square input size it was trained at.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelConfig {
    /// A name from [`SCALES`], e.g. `"student-p"`.
    pub scale: String,
    /// Number of classes; must equal `names.len()`.
    pub nc: usize,
    /// Class names, index = class id.
    pub names: Vec<String>,
    /// Square training/inference size in pixels; a multiple of 32.
    pub imgsz: usize,
    /// Teachers only: how RGB and IR are fused (absent = CCAFusion).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fusion: Option<Fusion>,
}

impl ModelConfig {
    /// A config whose `nc` is taken from `names`.
    pub fn new(scale: &str, names: &[&str], imgsz: usize) -> Self {
        Self {
            scale: scale.to_string(),
            nc: names.len(),
            names: names.iter().map(|s| s.to_string()).collect(),
            imgsz,
            fusion: None,
        }
    }

    /// True for an RGB+IR teacher (`teacher-*` scales).
    pub fn is_teacher(&self) -> bool {
        self.scale.starts_with("teacher-")
    }

    /// The fusion of a teacher (CCAFusion unless set); `None` for students.
    pub fn fusion_kind(&self) -> Option<Fusion> {
        self.is_teacher()
            .then(|| self.fusion.unwrap_or(Fusion::Cca))
    }

    /// Checks the config is buildable and returns its scale.
    pub fn validate(&self) -> Result<Scale> {
        let scale = Scale::by_name(&self.scale)?;
        ensure!(
            self.nc >= 1,
            "model config: nc must be at least 1, got {}",
            self.nc
        );
        ensure!(
            self.names.len() == self.nc,
            "model config: nc is {} but {} class names are given ({:?})",
            self.nc,
            self.names.len(),
            self.names
        );
        ensure!(
            self.is_teacher() || self.fusion.is_none(),
            "model config: {} is an RGB student; only teacher-* models take a fusion",
            self.scale
        );
        ensure!(
            self.imgsz >= 32 && self.imgsz % 32 == 0,
            "model config: imgsz must be a positive multiple of 32 (the largest stride), got {}",
            self.imgsz
        );
        Ok(scale)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yolov8n_channels_and_repeats() {
        let n = Scale::by_name("student-n").unwrap();
        let ch: Vec<usize> = [64, 128, 256, 512, 1024]
            .iter()
            .map(|&c| n.channels(c))
            .collect();
        assert_eq!(ch, [16, 32, 64, 128, 256]);
        assert_eq!((n.repeats(3), n.repeats(6), n.repeats(1)), (1, 2, 1));
        let p = Scale::by_name("student-p").unwrap();
        let ch: Vec<usize> = [64, 128, 256, 512, 1024]
            .iter()
            .map(|&c| p.channels(c))
            .collect();
        assert_eq!(ch, [8, 16, 32, 64, 128]);
    }

    #[test]
    fn config_errors_name_the_problem() {
        let e = Scale::by_name("student-q").unwrap_err().to_string();
        assert!(e.contains("student-q") && e.contains("student-p"), "{e}");
        let mut cfg = ModelConfig::new("student-p", &["person", "car"], 128);
        assert!(cfg.validate().is_ok());
        cfg.nc = 3;
        let e = cfg.validate().unwrap_err().to_string();
        assert!(e.contains("nc is 3"), "{e}");
        let cfg = ModelConfig::new("student-p", &["person"], 100);
        assert!(cfg.validate().unwrap_err().to_string().contains("imgsz"));
    }
}
