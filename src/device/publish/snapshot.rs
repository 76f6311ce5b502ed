//! Annotated JPEG snapshots: boxes and labels drawn on the source frame,
//! written to a folder on detection at most once per interval (of time,
//! and optionally of frames), the folder
//! kept under a size cap by deleting the oldest snapshots (only files this
//! daemon names, `snap-*.jpg`, are ever deleted).

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use image::RgbImage;

use crate::device::postprocess::{Zone, ZoneMode};
use crate::device::publish::DetectionJson;
use crate::shared::draw::{class_colour, draw_box, draw_label, draw_line};

/// Draws each detection's box and `label score` (and `#track`) on `img`.
pub fn annotate(img: &mut RgbImage, dets: &[DetectionJson]) {
    let thickness = (img.width().max(img.height()) / 320).max(1) as i64 + 1;
    for d in dets {
        let b = crate::shared::bbox::BBox::new(d.bbox[0], d.bbox[1], d.bbox[2], d.bbox[3]);
        let colour = class_colour(d.class_id);
        draw_box(img, &b, colour, thickness);
        let text = match d.track_id.flatten() {
            Some(t) => format!("{} {:.2} #{t}", d.label, d.score),
            None => format!("{} {:.2}", d.label, d.score),
        };
        let y = if b.y1 >= 10.0 {
            b.y1 as i64 - 10
        } else {
            b.y2 as i64
        };
        draw_label(img, b.x1 as i64, y, &text, image::Rgb([0, 0, 0]), colour);
    }
}

/// Outlines each zone (include green, exclude red) with its name at its
/// first vertex, under the boxes: where a detection counts.
pub fn annotate_zones(img: &mut RgbImage, zones: &[Zone]) {
    let (w, h) = (img.width() as f32, img.height() as f32);
    let thickness = (img.width().max(img.height()) / 480).max(1) as i64;
    for z in zones {
        let colour = match z.mode {
            ZoneMode::Include => image::Rgb([40, 200, 80]),
            ZoneMode::Exclude => image::Rgb([220, 50, 50]),
        };
        let px: Vec<(f32, f32)> = z.points.iter().map(|&(x, y)| (x * w, y * h)).collect();
        for (i, &a) in px.iter().enumerate() {
            draw_line(img, a, px[(i + 1) % px.len()], colour, thickness);
        }
        if let Some(&(x, y)) = px.first() {
            let (x, y) = (
                (x as i64).min(img.width() as i64 - 40),
                (y as i64).clamp(0, img.height() as i64 - 10),
            );
            draw_label(img, x.max(0), y, &z.name, image::Rgb([0, 0, 0]), colour);
        }
    }
}

/// `img` as a JPEG of `quality` (1..=100).
pub fn encode_jpeg(img: &RgbImage, quality: u8) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, quality)
        .encode_image(img)
        .context("encoding a JPEG snapshot")?;
    Ok(out)
}

pub struct SnapshotWriter {
    dir: PathBuf,
    min_interval: Duration,
    /// At least this many source frames between snapshots (0 = no limit).
    min_interval_frames: u64,
    max_total_bytes: u64,
    last: Option<Instant>,
    last_frame: Option<u64>,
    /// Our snapshots in the folder, oldest first, with their sizes.
    files: VecDeque<(PathBuf, u64)>,
    total_bytes: u64,
}

const PREFIX: &str = "snap-";

impl SnapshotWriter {
    /// Creates `dir` if needed and takes stock of earlier snapshots (they
    /// count toward the cap).
    pub fn new(dir: &Path, min_interval: Duration, max_total_bytes: u64) -> Result<Self> {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("snapshots dir {}: cannot create", dir.display()))?;
        let mut files: Vec<(PathBuf, u64)> = std::fs::read_dir(dir)
            .with_context(|| format!("snapshots dir {}: cannot list", dir.display()))?
            .filter_map(|e| e.ok())
            .filter(|e| {
                let name = e.file_name().to_string_lossy().to_string();
                name.starts_with(PREFIX) && name.ends_with(".jpg")
            })
            .filter_map(|e| Some((e.path(), e.metadata().ok()?.len())))
            .collect();
        // names start with a sortable UTC timestamp
        files.sort();
        let total_bytes = files.iter().map(|(_, n)| n).sum();
        Ok(Self {
            dir: dir.to_path_buf(),
            min_interval,
            min_interval_frames: 0,
            max_total_bytes,
            last: None,
            last_frame: None,
            files: files.into(),
            total_bytes,
        })
    }

    /// Also require `frames` source frames between snapshots (0 = only
    /// the time interval counts).
    pub fn with_min_interval_frames(mut self, frames: u64) -> Self {
        self.min_interval_frames = frames;
        self
    }

    /// Whether a snapshot of source frame `frame` may be taken now (rate
    /// limits). A frame number below the last snapshot's (the source was
    /// reopened and counts again from 0) does not block it.
    pub fn due(&self, frame: u64) -> bool {
        let time_ok = self.last.map_or(true, |t| t.elapsed() >= self.min_interval);
        let frames_ok = self.last_frame.map_or(true, |last| {
            frame < last || frame - last >= self.min_interval_frames
        });
        time_ok && frames_ok
    }

    /// Writes `jpeg` as `snap-<timestamp>-<camera>-<frame>.jpg` (via a
    /// temporary file, so readers never see half a JPEG), then deletes the
    /// oldest snapshots beyond the cap.
    pub fn save(
        &mut self,
        jpeg: &[u8],
        timestamp: &str,
        camera: &str,
        frame: u64,
    ) -> Result<PathBuf> {
        self.last = Some(Instant::now());
        self.last_frame = Some(frame);
        let stamp: String = timestamp
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || *c == '.')
            .collect();
        let name = format!("{PREFIX}{stamp}-{camera}-{frame:08}.jpg");
        let path = self.dir.join(&name);
        let tmp = self.dir.join(format!(".{name}.tmp"));
        std::fs::write(&tmp, jpeg)
            .and_then(|_| std::fs::rename(&tmp, &path))
            .with_context(|| format!("writing snapshot {}", path.display()))?;
        self.files.push_back((path.clone(), jpeg.len() as u64));
        self.total_bytes += jpeg.len() as u64;
        while self.total_bytes > self.max_total_bytes && self.files.len() > 1 {
            let (old, n) = self.files.pop_front().expect("len > 1");
            // Already gone (someone cleaned up): nothing to free on disk.
            let _ = std::fs::remove_file(&old);
            self.total_bytes -= n;
        }
        Ok(path)
    }

    pub fn total_bytes(&self) -> u64 {
        self.total_bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zones_are_outlined_in_their_colour() {
        let mut img = RgbImage::new(100, 80);
        let zone = |mode, points: Vec<(f32, f32)>| Zone {
            name: "z".into(),
            mode,
            points,
        };
        let zones = [
            zone(ZoneMode::Include, vec![(0.1, 0.5), (0.9, 0.5), (0.9, 0.9)]),
            zone(ZoneMode::Exclude, vec![(0.0, 0.0), (0.2, 0.0), (0.2, 0.2)]),
        ];
        annotate_zones(&mut img, &zones);
        // on the include zone's bottom edge (y = 40, x in 10..90) and the
        // exclude zone's top edge (y = 0, x in 0..20; its label is at x < 10)
        assert_eq!(img.get_pixel(60, 40).0, [40, 200, 80]);
        assert_eq!(img.get_pixel(18, 0).0, [220, 50, 50]);
        // inside the include triangle, away from its edges: untouched
        assert_eq!(img.get_pixel(80, 50).0, [0, 0, 0]);
    }

    #[test]
    fn rate_limited_and_capped() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("keep-me.jpg"), b"user file").unwrap();
        let mut w = SnapshotWriter::new(dir.path(), Duration::from_secs(3600), 1 << 16).unwrap();
        assert!(w.due(1));
        let jpeg = vec![0u8; 30_000];
        w.save(&jpeg, "2024-01-01T00:00:00.000Z", "cam0", 1)
            .unwrap();
        assert!(!w.due(2));
        for i in 2..6 {
            w.save(&jpeg, &format!("2024-01-01T00:00:0{i}.000Z"), "cam0", i)
                .unwrap();
        }
        let mut names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        // 2 × 30 kB fit under 64 KiB; the oldest were deleted; the user's file stays
        assert_eq!(
            names,
            [
                "keep-me.jpg",
                "snap-20240101T000004.000Z-cam0-00000004.jpg",
                "snap-20240101T000005.000Z-cam0-00000005.jpg"
            ]
        );
        assert_eq!(w.total_bytes(), 60_000);
    }

    #[test]
    fn frame_interval() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = SnapshotWriter::new(dir.path(), Duration::ZERO, 1 << 20)
            .unwrap()
            .with_min_interval_frames(10);
        assert!(w.due(3));
        w.save(b"x", "2024-01-01T00:00:00.000Z", "cam0", 3).unwrap();
        assert!(!w.due(4) && !w.due(12));
        assert!(w.due(13));
        // the source restarted its count
        assert!(w.due(0));
    }
}
