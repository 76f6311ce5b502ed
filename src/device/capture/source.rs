//! The `[source]` section of the daemon's configuration: which source to
//! open (`synthetic`, `images:…`, `v4l2:…`, `fault:…`), at what size, rate
//! and pixel format. It lives with the capture code that reads it, so the
//! sources depend on nothing above them; `device::config` embeds it.

use std::path::PathBuf;

use anyhow::{bail, ensure, Result};
use serde::Deserialize;

use super::PixelFormat;
use crate::shared::condition::Condition;

#[derive(Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields, default)]
pub struct SourceConfig {
    /// `synthetic`, `images:DIR` (or `images:GLOB`), `v4l2:/dev/videoN`,
    /// or `fault:EVENTS` (synthetic with injected faults, for tests).
    pub spec: String,
    /// Frames per second asked of the camera; for synthetic and image
    /// sources the pace (0 = as fast as the pipeline takes them).
    pub fps: f32,
    pub width_px: u32,
    pub height_px: u32,
    /// Preferred pixel format (`YUYV`, `MJPG`, `NV12`, `RGB3`, `GREY`);
    /// none = the best the camera offers. The synthetic source emits it
    /// too (default YUYV, like a webcam).
    pub format: Option<String>,
    /// V4L2 mmap buffers.
    pub buffer_count: u32,
    /// A camera silent this long is stalled (a timeout is counted).
    pub timeout_ms: u64,
    pub synthetic: SyntheticConfig,
}

impl Default for SourceConfig {
    fn default() -> Self {
        Self {
            spec: "synthetic".into(),
            fps: 15.0,
            width_px: 640,
            height_px: 480,
            format: None,
            buffer_count: 4,
            timeout_ms: 2000,
            synthetic: SyntheticConfig::default(),
        }
    }
}

#[derive(Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields, default)]
pub struct SyntheticConfig {
    pub seed: u64,
    /// Conditions cycled through, in order.
    pub conditions: Vec<String>,
    /// Frames each generated scene is shown for (objects then keep their
    /// track IDs, as in a real street).
    pub hold_frames: u32,
    /// Scenes per condition before the next condition.
    pub scenes_per_condition: u32,
    /// The view pans right by this many pixels per frame within a scene
    /// (wrapping around), so objects move across the frame and through
    /// zones: tracks and object events get exercised. 0: still scenes.
    pub pan_px_per_frame: f32,
}

impl Default for SyntheticConfig {
    fn default() -> Self {
        Self {
            seed: 1,
            conditions: vec!["day".into(), "night".into(), "fog".into()],
            hold_frames: 30,
            scenes_per_condition: 4,
            pan_px_per_frame: 0.0,
        }
    }
}

/// A parsed `--source`/`source.spec`.
#[derive(Debug, Clone, PartialEq)]
pub enum SourceSpec {
    Synthetic,
    /// A folder, or a glob pattern.
    Images(String),
    V4l2(PathBuf),
    /// Synthetic frames with faults injected (see `capture::fault`).
    Fault(String),
}

impl std::str::FromStr for SourceSpec {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        let s = s.trim();
        if s == "synthetic" {
            return Ok(SourceSpec::Synthetic);
        }
        if let Some(rest) = s.strip_prefix("images:") {
            ensure!(
                !rest.is_empty(),
                "images: needs a folder or glob, e.g. images:frames/"
            );
            return Ok(SourceSpec::Images(rest.to_string()));
        }
        if let Some(rest) = s.strip_prefix("v4l2:") {
            ensure!(
                !rest.is_empty(),
                "v4l2: needs a device, e.g. v4l2:/dev/video0"
            );
            return Ok(SourceSpec::V4l2(PathBuf::from(rest)));
        }
        if let Some(rest) = s.strip_prefix("fault:") {
            return Ok(SourceSpec::Fault(rest.to_string()));
        }
        if s.starts_with("/dev/video") {
            return Ok(SourceSpec::V4l2(PathBuf::from(s)));
        }
        bail!("unknown source {s:?}: expected synthetic, images:DIR, v4l2:/dev/videoN or fault:EVENTS")
    }
}

/// Parses a V4L2 fourcc name (`YUYV`, `MJPG`/`MJPEG`, `NV12`, `RGB3`/`RGB24`, `GREY`).
pub fn parse_pixel_format(s: &str) -> Result<PixelFormat> {
    match s.trim().to_ascii_uppercase().as_str() {
        "YUYV" => Ok(PixelFormat::Yuyv),
        "MJPG" | "MJPEG" => Ok(PixelFormat::Mjpeg),
        "NV12" => Ok(PixelFormat::Nv12),
        "RGB3" | "RGB24" | "RGB" => Ok(PixelFormat::Rgb24),
        "GREY" | "GRAY" | "Y8" => Ok(PixelFormat::Grey),
        other => bail!("unknown pixel format {other:?}: expected YUYV, MJPG, NV12, RGB3 or GREY"),
    }
}

impl SourceConfig {
    pub fn source_spec(&self) -> Result<SourceSpec> {
        self.spec.parse()
    }

    /// The preferred pixel format, if one is set and valid (validation
    /// refuses an invalid one before a source is opened).
    pub fn pixel_format(&self) -> Option<PixelFormat> {
        self.format
            .as_deref()
            .and_then(|f| parse_pixel_format(f).ok())
    }

    /// The synthetic source's conditions that parse (validation refuses
    /// the others).
    pub fn synthetic_conditions(&self) -> Vec<Condition> {
        self.synthetic
            .conditions
            .iter()
            .filter_map(|c| c.parse().ok())
            .collect()
    }
}
