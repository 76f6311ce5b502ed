//! A classical person detector for real thermal frames: the labeller of
//! `trainer autolabel --method ir`. People are the warmest narrow upright
//! things in a night street: it keeps pixels that are both warm for this
//! frame and warmer than the wide warm surfaces around them (road, walls,
//! car bodies), groups them into blobs, splits blobs that are wider than one
//! person (groups walking side by side) and scores each part by how warm,
//! upright, solid and large it is.
//!
//! It is tuned on frames of LLVIP's training scenes checked by eye, at a
//! working height of [`WORK_HEIGHT_PX`], so its sizes are fractions of the
//! frame and any resolution works. Unlike `shared::hot_spots` (the
//! generator's yardstick), it needs no fixed grey levels: real thermal
//! cameras rescale their grey levels every frame.

use crate::shared::bbox::{BBox, Detection};
use image::imageops::{self, FilterType};
use image::GrayImage;

/// Frames are resized to this height (aspect kept) before detection.
pub const WORK_HEIGHT_PX: u32 = 256;

/// Tunables of [`detect_people`]; the defaults are what `trainer autolabel`
/// uses.
#[derive(Debug, Clone, Copy)]
pub struct ThermalPeopleParams {
    /// A pixel is warm when it is this far from the frame's median grey to
    /// its 99.5th percentile (0 = median, 1 = nearly the hottest).
    pub warm: f32,
    /// …and this much (same units) warmer than the wide warm surfaces
    /// around it.
    pub above_surroundings: f32,
    /// Width of the horizontal window that estimates the surroundings, as a
    /// fraction of the frame width: wider than a person, narrower than a car.
    pub surroundings_width: f32,
    /// Smallest person kept, as a fraction of the frame height.
    pub min_height: f32,
    /// Height / width of one standing person, to split wide blobs.
    pub person_aspect: f32,
}

impl Default for ThermalPeopleParams {
    fn default() -> Self {
        Self {
            warm: 0.35,
            above_surroundings: 0.25,
            surroundings_width: 0.15,
            min_height: 10.0 / WORK_HEIGHT_PX as f32,
            person_aspect: 2.6,
        }
    }
}

/// Persons (class 0) in a thermal frame, boxes in the frame's pixels, each
/// with a score in [0, 1]. Not thresholded: the caller picks the score.
pub fn detect_people(ir: &GrayImage, p: &ThermalPeopleParams) -> Vec<Detection> {
    if ir.width() < 8 || ir.height() < 8 {
        return Vec::new();
    }
    let work_w =
        ((ir.width() as f32 * WORK_HEIGHT_PX as f32 / ir.height() as f32).round() as u32).max(8);
    // working-frame pixels per input pixel, per axis (the width is rounded)
    let (sx, sy) = (
        work_w as f32 / ir.width() as f32,
        WORK_HEIGHT_PX as f32 / ir.height() as f32,
    );
    let small = imageops::resize(ir, work_w, WORK_HEIGHT_PX, FilterType::Triangle);
    let map = WarmthMap::new(&small, p);
    let hot = close_gaps(&open_vertical(&map.hot, map.w, map.h), map.w, map.h);
    let mut detections = Vec::new();
    for blob in blobs(&hot, map.w, map.h) {
        for part in split_wide(&blob, p.person_aspect) {
            if let Some(d) = score_part(&part, &map, p) {
                detections.push(Detection {
                    class_id: 0,
                    score: d.score,
                    bbox: BBox::new(
                        d.bbox.x1 / sx,
                        d.bbox.y1 / sy,
                        d.bbox.x2 / sx,
                        d.bbox.y2 / sy,
                    ),
                });
            }
        }
    }
    detections
}

/// Per pixel of the working frame: warmth (0 = median, 1 = 99.5th
/// percentile) and whether it is warm and above its surroundings.
struct WarmthMap {
    w: usize,
    h: usize,
    warmth: Vec<f32>,
    hot: Vec<bool>,
}

impl WarmthMap {
    fn new(img: &GrayImage, p: &ThermalPeopleParams) -> Self {
        let (w, h) = (img.width() as usize, img.height() as usize);
        let raw: Vec<f32> = img.as_raw().iter().map(|&v| v as f32).collect();
        let smooth = box_mean(&raw, w, h, 1, 1);
        let (lo, hi) = (percentile(&smooth, 0.5), percentile(&smooth, 0.995));
        let span = (hi - lo).max(1.0);
        let warmth: Vec<f32> = smooth.iter().map(|v| (v - lo) / span).collect();
        // grey opening with a horizontal line wider than a person: narrow
        // warm things (people, poles) vanish, wide ones (ground, cars) stay
        let r = ((p.surroundings_width * w as f32) as usize / 2).max(1);
        let opened = max_filter_rows(&min_filter_rows(&warmth, w, h, r), w, h, r);
        let surroundings = box_mean(&opened, w, h, r / 4, r / 4);
        let hot = warmth
            .iter()
            .zip(&surroundings)
            .map(|(&v, &s)| v > p.warm && v - s > p.above_surroundings)
            .collect();
        Self { w, h, warmth, hot }
    }
}

/// The `q`-quantile of `values` (nearest rank).
fn percentile(values: &[f32], q: f32) -> f32 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f32::total_cmp);
    sorted[((sorted.len() - 1) as f32 * q).round() as usize]
}

/// Mean over a `(2rx+1) × (2ry+1)` window (clipped at the borders), via an
/// integral image.
fn box_mean(v: &[f32], w: usize, h: usize, rx: usize, ry: usize) -> Vec<f32> {
    let mut integral = vec![0f64; (w + 1) * (h + 1)];
    for y in 0..h {
        let mut row = 0f64;
        for x in 0..w {
            row += v[y * w + x] as f64;
            integral[(y + 1) * (w + 1) + x + 1] = integral[y * (w + 1) + x + 1] + row;
        }
    }
    let mut out = vec![0.0; w * h];
    for y in 0..h {
        let (y0, y1) = (y.saturating_sub(ry), (y + ry + 1).min(h));
        for x in 0..w {
            let (x0, x1) = (x.saturating_sub(rx), (x + rx + 1).min(w));
            let sum = integral[y1 * (w + 1) + x1] + integral[y0 * (w + 1) + x0]
                - integral[y0 * (w + 1) + x1]
                - integral[y1 * (w + 1) + x0];
            out[y * w + x] = (sum / ((y1 - y0) * (x1 - x0)) as f64) as f32;
        }
    }
    out
}

fn min_filter_rows(v: &[f32], w: usize, h: usize, r: usize) -> Vec<f32> {
    filter_rows(v, w, h, r, f32::min)
}

fn max_filter_rows(v: &[f32], w: usize, h: usize, r: usize) -> Vec<f32> {
    filter_rows(v, w, h, r, f32::max)
}

/// A 1-D min or max over `x ± r` on each row (clipped at the borders).
fn filter_rows(v: &[f32], w: usize, h: usize, r: usize, f: fn(f32, f32) -> f32) -> Vec<f32> {
    let mut out = vec![0.0; w * h];
    for y in 0..h {
        let row = &v[y * w..(y + 1) * w];
        for x in 0..w {
            let window = &row[x.saturating_sub(r)..(x + r + 1).min(w)];
            out[y * w + x] = window.iter().copied().reduce(f).unwrap_or(row[x]);
        }
    }
    out
}

/// Binary erosion then dilation with a 1-wide, 3-tall element: drops
/// one-row streaks (lamp glare, wires) that are not upright.
fn open_vertical(m: &[bool], w: usize, h: usize) -> Vec<bool> {
    let eroded = morph(m, w, h, 0, 1, true);
    morph(&eroded, w, h, 0, 1, false)
}

/// Binary dilation then erosion with a 3-wide, 5-tall element: joins the
/// parts of a person that clothing splits (head, torso, legs).
fn close_gaps(m: &[bool], w: usize, h: usize) -> Vec<bool> {
    let dilated = morph(m, w, h, 1, 2, false);
    morph(&dilated, w, h, 1, 2, true)
}

/// Erosion (`all`) or dilation (any) over a `(2rx+1) × (2ry+1)` window;
/// pixels outside the frame count as set for erosion and unset for
/// dilation, so borders neither grow nor shrink blobs.
fn morph(m: &[bool], w: usize, h: usize, rx: usize, ry: usize, erode: bool) -> Vec<bool> {
    let mut out = vec![false; w * h];
    for y in 0..h {
        for x in 0..w {
            let mut acc = erode;
            'window: for yy in y.saturating_sub(ry)..(y + ry + 1).min(h) {
                for xx in x.saturating_sub(rx)..(x + rx + 1).min(w) {
                    let v = m[yy * w + xx];
                    if erode && !v || !erode && v {
                        acc = !erode;
                        break 'window;
                    }
                }
            }
            out[y * w + x] = acc;
        }
    }
    out
}

/// One 8-connected blob: its bounding box in working pixels and its mask
/// (row-major over the box).
struct Blob {
    x0: usize,
    y0: usize,
    w: usize,
    h: usize,
    mask: Vec<bool>,
}

impl Blob {
    fn column_count(&self, x: usize) -> usize {
        (0..self.h).filter(|&y| self.mask[y * self.w + x]).count()
    }

    /// The columns `c0..c1` as a blob of their own, rows trimmed to where
    /// the mask is set; `None` when nothing is set.
    fn columns(&self, c0: usize, c1: usize) -> Option<Blob> {
        let set_in_row = |y: usize| (c0..c1).any(|x| self.mask[y * self.w + x]);
        let top = (0..self.h).find(|&y| set_in_row(y))?;
        let bottom = (0..self.h).rev().find(|&y| set_in_row(y))?;
        let mask = (top..=bottom)
            .flat_map(|y| (c0..c1).map(move |x| (y, x)))
            .map(|(y, x)| self.mask[y * self.w + x])
            .collect();
        Some(Blob {
            x0: self.x0 + c0,
            y0: self.y0 + top,
            w: c1 - c0,
            h: bottom - top + 1,
            mask,
        })
    }
}

fn blobs(hot: &[bool], w: usize, h: usize) -> Vec<Blob> {
    let mut seen = vec![false; w * h];
    let mut out = Vec::new();
    let mut stack = Vec::new();
    let mut members = Vec::new();
    for start in 0..w * h {
        if !hot[start] || seen[start] {
            continue;
        }
        seen[start] = true;
        stack.push(start);
        members.clear();
        let (mut x0, mut y0, mut x1, mut y1) = (w, h, 0, 0);
        while let Some(i) = stack.pop() {
            let (x, y) = (i % w, i / w);
            (x0, y0, x1, y1) = (x0.min(x), y0.min(y), x1.max(x), y1.max(y));
            members.push(i);
            for ny in y.saturating_sub(1)..(y + 2).min(h) {
                for nx in x.saturating_sub(1)..(x + 2).min(w) {
                    let j = ny * w + nx;
                    if hot[j] && !seen[j] {
                        seen[j] = true;
                        stack.push(j);
                    }
                }
            }
        }
        let (bw, bh) = (x1 - x0 + 1, y1 - y0 + 1);
        let mut mask = vec![false; bw * bh];
        for &i in &members {
            mask[(i / w - y0) * bw + (i % w - x0)] = true;
        }
        out.push(Blob {
            x0,
            y0,
            w: bw,
            h: bh,
            mask,
        });
    }
    out
}

/// A blob wider than one person of its height is cut into as many parts as
/// persons fit, each cut at the emptiest column near its even position.
fn split_wide(blob: &Blob, person_aspect: f32) -> Vec<Blob> {
    let person_w = blob.h as f32 / person_aspect;
    let parts = (blob.w as f32 / person_w).round() as usize;
    if parts <= 1 {
        return blob.columns(0, blob.w).into_iter().collect();
    }
    // column profile, smoothed over 3 columns
    let counts: Vec<f32> = (0..blob.w).map(|x| blob.column_count(x) as f32).collect();
    let profile: Vec<f32> = (0..blob.w)
        .map(|x| {
            let window = &counts[x.saturating_sub(1)..(x + 2).min(blob.w)];
            window.iter().sum::<f32>() / window.len() as f32
        })
        .collect();
    let reach = ((0.35 * person_w) as usize).max(1);
    let mut cuts: Vec<usize> = (1..parts)
        .filter_map(|j| {
            let even = j * blob.w / parts;
            let (lo, hi) = (
                even.saturating_sub(reach).max(1),
                (even + reach).min(blob.w - 1),
            );
            (lo < hi).then(|| {
                (lo..hi)
                    .min_by(|&a, &b| profile[a].total_cmp(&profile[b]))
                    .unwrap_or(even)
            })
        })
        .collect();
    cuts.sort_unstable();
    cuts.dedup();
    let edges: Vec<usize> = std::iter::once(0)
        .chain(cuts)
        .chain(std::iter::once(blob.w))
        .collect();
    edges
        .windows(2)
        .filter(|e| e[1] - e[0] >= 2)
        .filter_map(|e| blob.columns(e[0], e[1]))
        .collect()
}

/// A part's box (working pixels) and person score, or `None` when it is too
/// small or not upright.
fn score_part(part: &Blob, map: &WarmthMap, p: &ThermalPeopleParams) -> Option<Detection> {
    let (h, w) = (part.h as f32, part.w as f32);
    let frame_h = map.h as f32;
    let aspect = h / w;
    if h < p.min_height * frame_h || !(1.0..=6.0).contains(&aspect) {
        return None;
    }
    let set: Vec<usize> = (0..part.h * part.w).filter(|&i| part.mask[i]).collect();
    let fill = set.len() as f32 / (h * w);
    let warmth = set
        .iter()
        .map(|&i| map.warmth[(part.y0 + i / part.w) * map.w + part.x0 + i % part.w])
        .sum::<f32>()
        / set.len().max(1) as f32;
    // warm, upright (2:1 or taller), solid (a person fills about half its
    // box) and not tiny (an eighth of the frame height counts as full size)
    let score = warmth.min(1.0)
        * (aspect / 2.0).min(1.0)
        * (fill / 0.45).min(1.0)
        * (h / (0.12 * frame_h)).min(1.0);
    Some(Detection {
        class_id: 0,
        score: score.clamp(0.0, 1.0),
        bbox: BBox::new(
            part.x0 as f32,
            part.y0 as f32,
            (part.x0 + part.w) as f32,
            (part.y0 + part.h) as f32,
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 320×256 frame: mid-grey ground, a warm wide car body, and warm
    /// upright people at the given boxes.
    fn frame(people: &[(u32, u32, u32, u32)]) -> GrayImage {
        let mut img = GrayImage::from_pixel(320, 256, image::Luma([90]));
        for y in 150..200 {
            for x in 20..140 {
                img.put_pixel(x, y, image::Luma([170])); // a car: wide and warm
            }
        }
        for &(x0, y0, x1, y1) in people {
            for y in y0..y1 {
                for x in x0..x1 {
                    img.put_pixel(x, y, image::Luma([240]));
                }
            }
        }
        img
    }

    fn confident(d: &[Detection]) -> Vec<BBox> {
        d.iter().filter(|d| d.score > 0.3).map(|d| d.bbox).collect()
    }

    #[test]
    fn finds_an_upright_warm_person_and_not_the_wide_warm_car() {
        let found = confident(&detect_people(
            &frame(&[(200, 60, 216, 110)]),
            &Default::default(),
        ));
        assert_eq!(found, [BBox::new(200.0, 60.0, 216.0, 110.0)]);
    }

    #[test]
    fn two_people_side_by_side_are_two_boxes() {
        let found = confident(&detect_people(
            &frame(&[(200, 60, 218, 110), (218, 62, 236, 110)]),
            &Default::default(),
        ));
        assert_eq!(found.len(), 2, "{found:?}");
        for b in &found {
            assert!(b.width() < 24.0 && b.height() > 45.0, "{b:?}");
        }
    }

    #[test]
    fn boxes_are_in_the_input_frame_pixels_at_any_resolution() {
        // the same scene at 4× (1280×1024, LLVIP's size)
        let big = imageops::resize(
            &frame(&[(200, 60, 216, 110)]),
            1280,
            1024,
            FilterType::Nearest,
        );
        let found = confident(&detect_people(&big, &Default::default()));
        assert_eq!(found.len(), 1);
        let b = found[0];
        assert!(
            (b.x1 - 800.0).abs() <= 8.0 && (b.y2 - 440.0).abs() <= 8.0,
            "{b:?}"
        );
    }

    #[test]
    fn a_uniform_or_tiny_frame_has_no_people() {
        let flat = GrayImage::from_pixel(320, 256, image::Luma([120]));
        assert!(detect_people(&flat, &Default::default()).is_empty());
        let tiny = GrayImage::from_pixel(4, 4, image::Luma([255]));
        assert!(detect_people(&tiny, &Default::default()).is_empty());
    }
}
