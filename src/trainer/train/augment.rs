//! Training-time augmentation of a pair, fused with the letterbox into one
//! resampling pass: random scale and translation, horizontal flip, HSV
//! jitter (ultralytics' defaults). The same geometry is applied to the IR
//! frame so a teacher sees aligned pairs; labels follow the geometry and
//! boxes that end up mostly outside the frame are dropped.

use crate::shared::bbox::{BBox, Label};
use crate::shared::condition::Condition;
use crate::shared::letterbox::{linear_taps, Letterbox, PAD_GREY};
use crate::shared::pair::FramePair;
use rand::Rng;
use rand_chacha::ChaCha8Rng;

/// Strengths of the random transforms (ultralytics' names and defaults).
#[derive(Debug, Clone, Copy)]
pub struct AugmentParams {
    pub hsv_h: f32,
    pub hsv_s: f32,
    pub hsv_v: f32,
    /// Fraction of the input size.
    pub translate: f32,
    /// Scale gain range ±.
    pub scale: f32,
    pub fliplr: f32,
}

impl Default for AugmentParams {
    fn default() -> Self {
        Self {
            hsv_h: 0.015,
            hsv_s: 0.7,
            hsv_v: 0.4,
            translate: 0.1,
            scale: 0.5,
            fliplr: 0.5,
        }
    }
}

/// A model-ready sample: `[3, S, S]` RGB and optionally `[1, S, S]` IR in
/// 0..1, labels in input pixels.
#[derive(Debug, Clone)]
pub struct Sample {
    pub rgb: Vec<f32>,
    pub ir: Option<Vec<f32>>,
    pub labels: Vec<Label>,
    pub condition: Option<Condition>,
}

/// `out = a * src + b` along one axis.
#[derive(Debug, Clone, Copy)]
struct AxisMap {
    a: f32,
    b: f32,
}

impl AxisMap {
    /// Source sample positions for each output index (see
    /// [`linear_taps`]); a negative `a` mirrors.
    fn taps(&self, src_len: u32, out_len: u32) -> Vec<Option<(usize, usize, f32)>> {
        linear_taps(src_len, out_len, self.b, self.a)
    }
}

/// Resamples a `channels`-interleaved u8 image through the axis maps into a
/// channel-major float buffer.
fn resample(
    src: &[u8],
    (w, h, channels): (u32, u32, usize),
    (mx, my): (AxisMap, AxisMap),
    size: u32,
) -> Vec<f32> {
    let xs = mx.taps(w, size);
    let ys = my.taps(h, size);
    let s = size as usize;
    let stride = w as usize * channels;
    let mut out = vec![PAD_GREY as f32 / 255.0; channels * s * s];
    for (y, ty) in ys.iter().enumerate() {
        let Some((y0, y1, fy)) = *ty else { continue };
        for (x, tx) in xs.iter().enumerate() {
            let Some((x0, x1, fx)) = *tx else { continue };
            for c in 0..channels {
                let p = |yy: usize, xx: usize| src[yy * stride + xx * channels + c] as f32;
                let top = p(y0, x0) + (p(y0, x1) - p(y0, x0)) * fx;
                let bottom = p(y1, x0) + (p(y1, x1) - p(y1, x0)) * fx;
                out[c * s * s + y * s + x] = (top + (bottom - top) * fy) / 255.0;
            }
        }
    }
    out
}

/// HSV gains on a `[3, S, S]` buffer: hue and saturation multiplied (hue
/// wraps), value multiplied and clipped — as ultralytics' `augment_hsv`.
fn jitter_hsv(rgb: &mut [f32], gains: [f32; 3]) {
    let n = rgb.len() / 3;
    for i in 0..n {
        let (r, g, b) = (rgb[i], rgb[n + i], rgb[2 * n + i]);
        let max = r.max(g).max(b);
        let min = r.min(g).min(b);
        let delta = max - min;
        let mut hue = if delta <= 0.0 {
            0.0
        } else if max == r {
            ((g - b) / delta).rem_euclid(6.0) / 6.0
        } else if max == g {
            ((b - r) / delta + 2.0) / 6.0
        } else {
            ((r - g) / delta + 4.0) / 6.0
        };
        let sat = if max > 0.0 { delta / max } else { 0.0 };
        hue = (hue * gains[0]).rem_euclid(1.0);
        let sat = (sat * gains[1]).clamp(0.0, 1.0);
        let val = (max * gains[2]).clamp(0.0, 1.0);
        // back to RGB
        let c = val * sat;
        let hp = hue * 6.0;
        let x = c * (1.0 - (hp.rem_euclid(2.0) - 1.0).abs());
        let (r1, g1, b1) = match hp as u32 {
            0 => (c, x, 0.0),
            1 => (x, c, 0.0),
            2 => (0.0, c, x),
            3 => (0.0, x, c),
            4 => (x, 0.0, c),
            _ => (c, 0.0, x),
        };
        let m = val - c;
        rgb[i] = r1 + m;
        rgb[n + i] = g1 + m;
        rgb[2 * n + i] = b1 + m;
    }
}

/// Letterboxes (and, with `aug`, augments) `pair` into a `size × size`
/// sample. Deterministic given `rng`'s state.
pub fn prepare(
    pair: &FramePair,
    size: u32,
    aug: Option<&AugmentParams>,
    with_ir: bool,
    rng: &mut ChaCha8Rng,
) -> Sample {
    let (w, h) = (pair.width_px(), pair.height_px());
    let lb = Letterbox::new(w, h, size, size);
    let (mut mx, mut my) = letterbox_maps(&lb, w, h);
    let mut hsv = None;
    if let Some(p) = aug {
        let drawn = draw_augment(p, (mx, my), size, rng);
        (mx, my) = drawn.maps;
        hsv = Some(drawn.hsv_gains);
    }
    let mut rgb = resample(pair.rgb.as_raw(), (w, h, 3), (mx, my), size);
    if let Some(gains) = hsv {
        jitter_hsv(&mut rgb, gains);
    }
    let ir = with_ir.then(|| {
        let mut ir = resample(pair.ir.as_raw(), (w, h, 1), (mx, my), size);
        if let Some(gains) = hsv {
            // thermal contrast varies less than visible brightness
            let k = 1.0 + (gains[2] - 1.0) * 0.5;
            ir.iter_mut().for_each(|v| *v = (*v * k).min(1.0));
        }
        ir
    });
    let labels = match aug {
        Some(_) => pair
            .labels
            .iter()
            .filter_map(|l| map_label(l, mx, my, size))
            .collect(),
        // evaluation keeps every label, as ultralytics' validation does;
        // boxes use the letterbox's own mapping (scale_boxes' inverse)
        None => pair
            .labels
            .iter()
            .map(|l| Label {
                class_id: l.class_id,
                bbox: lb.to_input(&l.bbox),
            })
            .collect(),
    };
    Sample {
        rgb,
        ir,
        labels,
        condition: pair.condition,
    }
}

/// The letterbox of a `w × h` frame as axis maps: per-axis scale
/// inner/src, as cv2.resize to the rounded inner size does, then the pad.
fn letterbox_maps(lb: &Letterbox, w: u32, h: u32) -> (AxisMap, AxisMap) {
    (
        AxisMap {
            a: lb.inner_w_px as f32 / w as f32,
            b: lb.pad_left_px,
        },
        AxisMap {
            a: lb.inner_h_px as f32 / h as f32,
            b: lb.pad_top_px,
        },
    )
}

/// One draw of the random transforms: the axis maps moved by them, and the
/// HSV gains.
struct DrawnAugment {
    maps: (AxisMap, AxisMap),
    /// (hue, saturation, value) gains for [`jitter_hsv`].
    hsv_gains: [f32; 3],
}

/// Draws scale, translation, flip and HSV gains from `rng` (in that order:
/// the order fixes which sample a seed gives) and applies the geometry to
/// the letterbox's `(mx, my)`.
fn draw_augment(
    p: &AugmentParams,
    (mx, my): (AxisMap, AxisMap),
    size: u32,
    rng: &mut ChaCha8Rng,
) -> DrawnAugment {
    let half = size as f32 / 2.0;
    // scale about the centre, then translate, then maybe mirror
    let g = 1.0 + rng.random_range(-p.scale..=p.scale);
    let tx = rng.random_range(-p.translate..=p.translate) * size as f32;
    let ty = rng.random_range(-p.translate..=p.translate) * size as f32;
    let mut mx = AxisMap {
        a: mx.a * g,
        b: g * (mx.b - half) + half + tx,
    };
    let my = AxisMap {
        a: my.a * g,
        b: g * (my.b - half) + half + ty,
    };
    if rng.random_bool(p.fliplr as f64) {
        mx = AxisMap {
            a: -mx.a,
            b: size as f32 - mx.b,
        };
    }
    let hsv_gains = [
        1.0 + rng.random_range(-1.0..=1.0) * p.hsv_h,
        1.0 + rng.random_range(-1.0..=1.0) * p.hsv_s,
        1.0 + rng.random_range(-1.0..=1.0) * p.hsv_v,
    ];
    DrawnAugment {
        maps: (mx, my),
        hsv_gains,
    }
}

/// Moves a label through the axis maps; drops it when the visible part is
/// under 2 px a side or under 10 % of the box (ultralytics' box_candidates).
fn map_label(l: &Label, mx: AxisMap, my: AxisMap, size: u32) -> Option<Label> {
    let (xa, xb) = (mx.a * l.bbox.x1 + mx.b, mx.a * l.bbox.x2 + mx.b);
    let (ya, yb) = (my.a * l.bbox.y1 + my.b, my.a * l.bbox.y2 + my.b);
    let full = BBox::new(xa.min(xb), ya.min(yb), xa.max(xb), ya.max(yb));
    let clipped = full.clipped(size as f32, size as f32);
    let keep = clipped.width() > 2.0
        && clipped.height() > 2.0
        && clipped.area() > 0.1 * full.area()
        && clipped.width().max(clipped.height()) / clipped.width().min(clipped.height()) < 100.0;
    keep.then_some(Label {
        class_id: l.class_id,
        bbox: clipped,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{GrayImage, RgbImage};
    use rand::SeedableRng;

    fn pair() -> FramePair {
        let mut rgb = RgbImage::from_pixel(40, 20, image::Rgb([0, 0, 0]));
        for y in 5..15 {
            for x in 10..20 {
                rgb.put_pixel(x, y, image::Rgb([255, 255, 255]));
            }
        }
        FramePair {
            name: "t".into(),
            rgb,
            ir: GrayImage::from_pixel(40, 20, image::Luma([200])),
            labels: vec![Label {
                class_id: 1,
                bbox: BBox::new(10.0, 5.0, 20.0, 15.0),
            }],
            condition: None,
        }
    }

    #[test]
    fn plain_letterbox_maps_labels_and_pixels() {
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        let s = prepare(&pair(), 80, None, true, &mut rng);
        // 40x20 -> 80x40, pad top 20
        assert_eq!(s.labels[0].bbox, BBox::new(20.0, 30.0, 40.0, 50.0));
        let at = |x: usize, y: usize| s.rgb[y * 80 + x];
        assert!((at(30, 40) - 1.0).abs() < 1e-6, "inside the white square");
        assert!((at(30, 5) - 114.0 / 255.0).abs() < 1e-6, "padding");
        assert_eq!(s.ir.unwrap().len(), 80 * 80);
    }

    #[test]
    fn augmented_labels_follow_the_pixels() {
        for seed in 0..20 {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            let s = prepare(
                &pair(),
                64,
                Some(&AugmentParams {
                    hsv_h: 0.0,
                    hsv_s: 0.0,
                    hsv_v: 0.0,
                    ..Default::default()
                }),
                false,
                &mut rng,
            );
            for l in &s.labels {
                let (cx, cy) = l.bbox.center();
                let v = s.rgb[cy as usize * 64 + cx as usize];
                assert!(
                    v > 0.9,
                    "seed {seed}: box centre not on the white square ({v})"
                );
            }
        }
    }

    #[test]
    fn hsv_identity_gains_keep_colours() {
        let mut rgb = vec![0.2, 0.9, 0.5, 0.4, 0.1, 0.5];
        let before = rgb.clone();
        jitter_hsv(&mut rgb, [1.0, 1.0, 1.0]);
        for (a, b) in rgb.iter().zip(&before) {
            assert!((a - b).abs() < 1e-5);
        }
    }
}
