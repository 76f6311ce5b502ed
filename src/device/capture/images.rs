//! Frames from image files (a folder or a glob), in name order, at a set
//! pace or as fast as the pipeline takes them. JPEG files are passed on as
//! MJPEG frames (decoded by the converter, as a camera's would be); other
//! formats are decoded here to RGB24. An unreadable file is a corrupt
//! frame: skipped and counted, the run goes on.

use std::path::PathBuf;
use std::time::SystemTime;

use anyhow::{bail, Context, Result};

use super::source::SourceConfig;
use super::{CaptureError, Frame, Opener, Pacer, PixelFormat, Source};

const EXTENSIONS: [&str; 5] = ["jpg", "jpeg", "png", "bmp", "ppm"];

fn is_image(p: &std::path::Path) -> bool {
    p.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
}

/// The image files of a folder, or matching a glob, sorted by path.
pub fn list_images(pattern: &str) -> Result<Vec<PathBuf>> {
    let dir = std::path::Path::new(pattern);
    let mut files: Vec<PathBuf> = if dir.is_dir() {
        std::fs::read_dir(dir)
            .with_context(|| format!("images:{pattern}: cannot list the folder"))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_file() && is_image(p))
            .collect()
    } else {
        glob::glob(pattern)
            .with_context(|| format!("images:{pattern}: not a folder nor a valid glob"))?
            .filter_map(|p| p.ok())
            .filter(|p| p.is_file())
            .collect()
    };
    files.sort();
    if files.is_empty() {
        bail!("images:{pattern}: no image files (jpg, png, bmp, ppm) found");
    }
    Ok(files)
}

/// Reads one image file into `frame` (JPEG as MJPEG, others as RGB24).
pub fn read_image_into(path: &std::path::Path, frame: &mut Frame) -> Result<(), CaptureError> {
    let corrupt = |e: String| CaptureError::Corrupt(format!("{}: {e}", path.display()));
    let jpeg = path
        .extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| matches!(e.to_ascii_lowercase().as_str(), "jpg" | "jpeg"));
    if jpeg {
        let bytes = std::fs::read(path).map_err(|e| corrupt(e.to_string()))?;
        frame.format = PixelFormat::Mjpeg;
        frame.width_px = 0;
        frame.height_px = 0;
        frame.stride_bytes = 0;
        frame.data.clear();
        frame.data.extend_from_slice(&bytes);
    } else {
        let img = image::open(path)
            .map_err(|e| corrupt(e.to_string()))?
            .to_rgb8();
        frame.format = PixelFormat::Rgb24;
        frame.width_px = img.width();
        frame.height_px = img.height();
        frame.stride_bytes = img.width() * 3;
        frame.data.clear();
        frame.data.extend_from_slice(img.as_raw());
    }
    frame.captured_at = SystemTime::now();
    Ok(())
}

pub struct ImagesSource {
    files: Vec<PathBuf>,
    next: usize,
    pacer: Pacer,
    fps: f32,
}

impl Source for ImagesSource {
    fn read_into(&mut self, frame: &mut Frame) -> Result<(), CaptureError> {
        let Some(path) = self.files.get(self.next) else {
            return Err(CaptureError::EndOfStream);
        };
        self.pacer.wait();
        frame.sequence = self.next as u64;
        self.next += 1;
        read_image_into(path, frame)
    }

    fn describe(&self) -> String {
        format!(
            "{} image files at {} fps",
            self.files.len(),
            if self.fps > 0.0 {
                self.fps.to_string()
            } else {
                "max".into()
            }
        )
    }
}

pub struct ImagesOpener {
    pattern: String,
    fps: f32,
}

impl ImagesOpener {
    pub fn new(pattern: &str, cfg: &SourceConfig) -> Result<Self> {
        list_images(pattern)?;
        Ok(Self {
            pattern: pattern.to_string(),
            fps: cfg.fps,
        })
    }
}

impl Opener for ImagesOpener {
    fn open(&mut self) -> Result<Box<dyn Source>> {
        Ok(Box::new(ImagesSource {
            files: list_images(&self.pattern)?,
            next: 0,
            pacer: Pacer::new(self.fps),
            fps: self.fps,
        }))
    }

    fn name(&self) -> String {
        format!("images:{}", self.pattern)
    }

    fn live(&self) -> bool {
        self.fps > 0.0
    }
}
