//! The scene generator as a live camera: each scene is held for a number
//! of frames (so objects keep their track IDs), conditions cycle day →
//! night → fog, and frames are delivered in a camera's pixel format
//! (default YUYV), so the daemon's whole conversion path runs as on a
//! device.

use std::time::SystemTime;

use anyhow::{Context, Result};
use image::RgbImage;

use super::source::SourceConfig;
use super::{CaptureError, Frame, Opener, Pacer, PixelFormat, Source};
use crate::shared::condition::Condition;
use crate::shared::synth::{camera, raster, Generator, SceneParams, SynthConfig};

/// RGB → YUV, BT.601 limited range (the inverse of `convert::yuv_to_rgb`).
pub fn rgb_to_yuv(r: u8, g: u8, b: u8) -> [u8; 3] {
    let (r, g, b) = (r as f32, g as f32, b as f32);
    let y = 16.0 + 0.256_788 * r + 0.504_129 * g + 0.097_906 * b;
    let u = 128.0 - 0.148_223 * r - 0.290_993 * g + 0.439_216 * b;
    let v = 128.0 + 0.439_216 * r - 0.367_788 * g - 0.071_427 * b;
    [y, u, v].map(|x| x.round().clamp(0.0, 255.0) as u8)
}

/// Writes `rgb` into `frame` as `format` (buffer reused). YUYV and NV12
/// average the chroma of the pixels they share.
pub fn encode_rgb_into(rgb: &RgbImage, format: PixelFormat, frame: &mut Frame) -> Result<()> {
    let (w, h) = (rgb.width() as usize, rgb.height() as usize);
    let px = |x: usize, y: usize| {
        let p = rgb.get_pixel(x as u32, y as u32).0;
        rgb_to_yuv(p[0], p[1], p[2])
    };
    frame.format = format;
    frame.width_px = w as u32;
    frame.height_px = h as u32;
    frame.data.clear();
    match format {
        PixelFormat::Rgb24 => {
            frame.stride_bytes = (w * 3) as u32;
            frame.data.extend_from_slice(rgb.as_raw());
        }
        PixelFormat::Grey => {
            frame.stride_bytes = w as u32;
            frame.data.extend(rgb.pixels().map(|p| {
                let [r, g, b] = p.0.map(|v| v as f32);
                (0.299 * r + 0.587 * g + 0.114 * b).round() as u8
            }));
        }
        PixelFormat::Yuyv => {
            anyhow::ensure!(w % 2 == 0, "YUYV needs an even width, got {w}");
            frame.stride_bytes = (w * 2) as u32;
            for y in 0..h {
                for x in (0..w).step_by(2) {
                    let (a, b) = (px(x, y), px(x + 1, y));
                    let u = (a[1] as u16 + b[1] as u16).div_ceil(2) as u8;
                    let v = (a[2] as u16 + b[2] as u16).div_ceil(2) as u8;
                    frame.data.extend_from_slice(&[a[0], u, b[0], v]);
                }
            }
        }
        PixelFormat::Nv12 => {
            frame.stride_bytes = w as u32;
            for y in 0..h {
                frame.data.extend((0..w).map(|x| px(x, y)[0]));
            }
            for y in (0..h).step_by(2) {
                for x in (0..w).step_by(2) {
                    let (mut u, mut v, mut n) = (0u32, 0u32, 0u32);
                    for (xx, yy) in [(x, y), (x + 1, y), (x, y + 1), (x + 1, y + 1)] {
                        if xx < w && yy < h {
                            let p = px(xx, yy);
                            u += p[1] as u32;
                            v += p[2] as u32;
                            n += 1;
                        }
                    }
                    frame.data.push(((u + n / 2) / n) as u8);
                    frame.data.push(((v + n / 2) / n) as u8);
                }
            }
        }
        PixelFormat::Mjpeg => {
            frame.stride_bytes = 0;
            image::codecs::jpeg::JpegEncoder::new_with_quality(&mut frame.data, 90)
                .encode_image(rgb)
                .context("encoding a synthetic MJPEG frame")?;
        }
    }
    Ok(())
}

/// Generator settings of a synthetic camera.
#[derive(Clone)]
pub struct SyntheticSource {
    /// One generator per condition, in cycling order.
    generators: Vec<(Condition, Generator)>,
    hold_frames: u64,
    scenes_per_condition: u64,
    /// Pan speed (see `SyntheticConfig::pan_px_per_frame`).
    pan_px_per_frame: f32,
    width_px: u32,
    format: PixelFormat,
    pacer_fps: f32,
    pacer: Option<Pacer>,
    sequence: u64,
    /// The current scene, encoded once and copied out for each frame
    /// (still scenes), or encoded again for each panned frame.
    scene: Option<(u64, Frame)>,
    /// The current scene's rendering (panned scenes).
    rendered: Option<(u64, RgbImage)>,
}

impl SyntheticSource {
    pub fn new(cfg: &SourceConfig) -> Result<Self> {
        let s = cfg;
        let format = cfg.pixel_format().unwrap_or(PixelFormat::Yuyv);
        let width = if format == PixelFormat::Yuyv {
            s.width_px & !1
        } else {
            s.width_px
        };
        let generators = cfg
            .synthetic_conditions()
            .into_iter()
            .map(|c| {
                let config = SynthConfig {
                    scene: SceneParams {
                        width_px: width,
                        height_px: s.height_px,
                        ..SceneParams::default()
                    },
                    conditions: vec![c],
                };
                Generator::new(config, s.synthetic.seed).map(|g| (c, g))
            })
            .collect::<Result<Vec<_>>>()
            .context("source synthetic")?;
        Ok(Self {
            generators,
            hold_frames: s.synthetic.hold_frames as u64,
            scenes_per_condition: s.synthetic.scenes_per_condition as u64,
            pan_px_per_frame: s.synthetic.pan_px_per_frame,
            width_px: width,
            format,
            pacer_fps: s.fps,
            pacer: None,
            sequence: 0,
            scene: None,
            rendered: None,
        })
    }

    /// The condition of the frame `sequence`.
    pub fn condition_of(&self, sequence: u64) -> Condition {
        let scene = sequence / self.hold_frames;
        self.generators
            [((scene / self.scenes_per_condition) % self.generators.len() as u64) as usize]
            .0
    }

    /// The scene shown at frame `sequence`.
    pub fn scene_of(&self, sequence: u64) -> u64 {
        sequence / self.hold_frames
    }

    /// The generator's boxes of scene `index`, in frame pixels: the ground
    /// truth a demo scores its detections against.
    pub fn labels_of_scene(&self, index: u64) -> Vec<crate::shared::bbox::Label> {
        let g = &self.generators
            [((index / self.scenes_per_condition) % self.generators.len() as u64) as usize]
            .1;
        raster::paint(&g.scene(index)).labels
    }

    /// How far frame `sequence` is panned: its content is the scene's
    /// shifted right by this many pixels (wrapping around).
    pub fn pan_offset_px(&self, sequence: u64) -> u32 {
        let step = (sequence % self.hold_frames) as f32 * self.pan_px_per_frame;
        (step.round() as u64 % u64::from(self.width_px.max(1))) as u32
    }

    /// The ground truth of frame `sequence`: its scene's boxes, panned (a
    /// box across the right edge continues at the left; slivers under 2
    /// px are left out).
    pub fn labels_of_frame(&self, sequence: u64) -> Vec<crate::shared::bbox::Label> {
        let labels = self.labels_of_scene(self.scene_of(sequence));
        let dx = self.pan_offset_px(sequence) as f32;
        if dx == 0.0 {
            return labels;
        }
        let w = self.width_px as f32;
        let mut out = Vec::new();
        for l in labels {
            let (x1, x2) = (l.bbox.x1 + dx, l.bbox.x2 + dx);
            // the part left of the right edge, and the part wrapped around
            for (a, b) in [(x1.min(w), x2.min(w)), ((x1 - w).max(0.0), x2 - w)] {
                if b - a >= 2.0 {
                    let mut piece = l;
                    piece.bbox = crate::shared::bbox::BBox::new(a, l.bbox.y1, b, l.bbox.y2);
                    out.push(piece);
                }
            }
        }
        out
    }

    /// Renders scene `index` (RGB only: the thermal half is not needed).
    pub fn render(&self, index: u64) -> RgbImage {
        let g = &self.generators
            [((index / self.scenes_per_condition) % self.generators.len() as u64) as usize]
            .1;
        let scene = g.scene(index);
        let layers = raster::paint(&scene);
        camera::render_rgb(&scene, &layers)
    }

    /// The next frame without pacing (the fault source paces itself).
    pub fn next_frame(&mut self, frame: &mut Frame) -> Result<(), CaptureError> {
        let index = self.sequence / self.hold_frames;
        if self.pan_px_per_frame > 0.0 {
            self.encode_panned(index)?;
        } else if self.scene.as_ref().map_or(true, |(i, _)| *i != index) {
            let rgb = self.render(index);
            let mut encoded = self.scene.take().map_or_else(Frame::empty, |(_, f)| f);
            encode_rgb_into(&rgb, self.format, &mut encoded)
                .map_err(|e| CaptureError::Corrupt(format!("{e:#}")))?;
            self.scene = Some((index, encoded));
        }
        let encoded = &self.scene.as_ref().expect("rendered above").1;
        frame.format = encoded.format;
        frame.width_px = encoded.width_px;
        frame.height_px = encoded.height_px;
        frame.stride_bytes = encoded.stride_bytes;
        frame.data.clear();
        frame.data.extend_from_slice(&encoded.data);
        frame.sequence = self.sequence;
        frame.captured_at = SystemTime::now();
        self.sequence += 1;
        Ok(())
    }
}

impl SyntheticSource {
    /// Encodes the current frame of scene `index`, panned, into `scene`.
    fn encode_panned(&mut self, index: u64) -> Result<(), CaptureError> {
        if self.rendered.as_ref().map_or(true, |(i, _)| *i != index) {
            self.rendered = Some((index, self.render(index)));
        }
        let rgb = &self.rendered.as_ref().expect("rendered above").1;
        let dx = self.pan_offset_px(self.sequence);
        let panned = roll_right(rgb, dx);
        let mut encoded = self.scene.take().map_or_else(Frame::empty, |(_, f)| f);
        encode_rgb_into(&panned, self.format, &mut encoded)
            .map_err(|e| CaptureError::Corrupt(format!("{e:#}")))?;
        self.scene = Some((index, encoded));
        Ok(())
    }
}

/// `img` shifted right by `dx` pixels, wrapping around.
fn roll_right(img: &RgbImage, dx: u32) -> RgbImage {
    let (w, h) = img.dimensions();
    let dx = dx % w.max(1);
    let mut out = RgbImage::new(w, h);
    let row_bytes = 3 * w as usize;
    let cut = 3 * (w - dx) as usize;
    for (src, dst) in img
        .as_raw()
        .chunks_exact(row_bytes)
        .zip(out.chunks_exact_mut(row_bytes))
    {
        // dst = src[w-dx..] ++ src[..w-dx]
        dst[..row_bytes - cut].copy_from_slice(&src[cut..]);
        dst[row_bytes - cut..].copy_from_slice(&src[..cut]);
    }
    out
}

impl Source for SyntheticSource {
    fn read_into(&mut self, frame: &mut Frame) -> Result<(), CaptureError> {
        let fps = self.pacer_fps;
        self.pacer.get_or_insert_with(|| Pacer::new(fps)).wait();
        self.next_frame(frame)
    }

    fn describe(&self) -> String {
        let g = self.generators[0].1.config();
        format!(
            "synthetic {:?} {}x{} at {} fps, conditions {}",
            self.format,
            g.scene.width_px,
            g.scene.height_px,
            if self.pacer_fps > 0.0 {
                self.pacer_fps.to_string()
            } else {
                "max".into()
            },
            self.generators
                .iter()
                .map(|(c, _)| c.as_str())
                .collect::<Vec<_>>()
                .join("/")
        )
    }
}

pub struct SyntheticOpener {
    template: SyntheticSource,
}

impl SyntheticOpener {
    pub fn new(cfg: &SourceConfig) -> Result<Self> {
        Ok(Self {
            template: SyntheticSource::new(cfg)?,
        })
    }
}

impl Opener for SyntheticOpener {
    fn open(&mut self) -> Result<Box<dyn Source>> {
        Ok(Box::new(self.template.clone()))
    }

    fn name(&self) -> String {
        "synthetic".into()
    }

    fn live(&self) -> bool {
        self.template.pacer_fps > 0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn panning_moves_pixels_and_boxes_together() {
        let mut img = RgbImage::new(8, 2);
        img.put_pixel(6, 1, image::Rgb([255, 0, 0]));
        let rolled = roll_right(&img, 3);
        // x = 6 + 3 wraps to 1
        assert_eq!(rolled.get_pixel(1, 1).0, [255, 0, 0]);
        assert_eq!(rolled.pixels().filter(|p| p.0[0] == 255).count(), 1);
        assert_eq!(roll_right(&img, 8), img);

        let mut cfg = SourceConfig {
            width_px: 160,
            height_px: 120,
            ..SourceConfig::default()
        };
        cfg.synthetic.hold_frames = 10;
        cfg.synthetic.pan_px_per_frame = 20.0;
        let s = SyntheticSource::new(&cfg).unwrap();
        assert_eq!(
            (s.pan_offset_px(0), s.pan_offset_px(3), s.pan_offset_px(9)),
            (0, 60, 20)
        );
        assert_eq!(s.pan_offset_px(10), 0, "a new scene starts unpanned");
        let still = s.labels_of_frame(0);
        assert!(!still.is_empty());
        let panned = s.labels_of_frame(3);
        // every box moved right by 60 px or wrapped; the area is kept
        let area = |v: &[crate::shared::bbox::Label]| v.iter().map(|l| l.bbox.width()).sum::<f32>();
        assert!((area(&still) - area(&panned)).abs() < 2.0 * still.len() as f32);
        for l in &still {
            let moved = panned
                .iter()
                .any(|p| (p.bbox.x1 - (l.bbox.x1 + 60.0)).abs() < 1e-3);
            assert!(moved || l.bbox.x2 + 60.0 > 160.0, "{l:?}");
        }
    }
}
