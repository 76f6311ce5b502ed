//! Frame → model input: the letterbox geometry (as ultralytics computes it)
//! and the conversion of an RGB frame into a `[3, S, S]` float tensor.

use crate::shared::bbox::BBox;
use image::RgbImage;

/// Grey of the letterbox padding, as ultralytics uses.
pub const PAD_GREY: u8 = 114;

/// How a `src_w × src_h` frame maps into a `dst_w × dst_h` model input:
/// scaled by the smaller ratio, centred, padded.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Letterbox {
    pub scale: f32,
    /// Padding on the left and top, pixels of the model input.
    pub pad_left_px: f32,
    pub pad_top_px: f32,
    /// Size of the resized frame inside the input (without padding).
    pub inner_w_px: u32,
    pub inner_h_px: u32,
    pub dst_w_px: u32,
    pub dst_h_px: u32,
}

/// Python's `round`: halves go to the even neighbour.
fn py_round(x: f64) -> f64 {
    x.round_ties_even()
}

impl Letterbox {
    pub fn new(src_w: u32, src_h: u32, dst_w: u32, dst_h: u32) -> Self {
        let scale = (dst_h as f64 / src_h as f64).min(dst_w as f64 / src_w as f64);
        let inner_w = py_round(src_w as f64 * scale) as u32;
        let inner_h = py_round(src_h as f64 * scale) as u32;
        let (dw, dh) = (
            (dst_w - inner_w) as f64 / 2.0,
            (dst_h - inner_h) as f64 / 2.0,
        );
        Self {
            scale: scale as f32,
            pad_left_px: py_round(dw - 0.1) as f32,
            pad_top_px: py_round(dh - 0.1) as f32,
            inner_w_px: inner_w,
            inner_h_px: inner_h,
            dst_w_px: dst_w,
            dst_h_px: dst_h,
        }
    }

    /// A box in source pixels → model-input pixels.
    pub fn to_input(&self, b: &BBox) -> BBox {
        BBox::new(
            b.x1 * self.scale + self.pad_left_px,
            b.y1 * self.scale + self.pad_top_px,
            b.x2 * self.scale + self.pad_left_px,
            b.y2 * self.scale + self.pad_top_px,
        )
    }

    /// A box in model-input pixels → source pixels (clipped to the frame).
    pub fn to_source(&self, b: &BBox, src_w: u32, src_h: u32) -> BBox {
        BBox::new(
            (b.x1 - self.pad_left_px) / self.scale,
            (b.y1 - self.pad_top_px) / self.scale,
            (b.x2 - self.pad_left_px) / self.scale,
            (b.y2 - self.pad_top_px) / self.scale,
        )
        .clipped(src_w as f32, src_h as f32)
    }
}

/// Bilinear sampling positions along one axis: for each output index the
/// two source indices and the weight of the second (pixel-centre aligned,
/// as OpenCV's INTER_LINEAR).
pub fn linear_taps(
    src_len: u32,
    out_len: u32,
    out_offset: f32,
    scale: f32,
) -> Vec<Option<(usize, usize, f32)>> {
    (0..out_len)
        .map(|o| {
            let s = (o as f32 + 0.5 - out_offset) / scale - 0.5;
            if s < -0.5 || s > src_len as f32 - 0.5 {
                return None;
            }
            let s = s.clamp(0.0, src_len as f32 - 1.0);
            let i0 = s.floor() as usize;
            let i1 = (i0 + 1).min(src_len as usize - 1);
            Some((i0, i1, s - i0 as f32))
        })
        .collect()
}

/// Writes `rgb`, letterboxed by `lb`, into `out` as `[3, H, W]` floats in
/// 0..1 (channel-major, RGB order).
pub fn letterbox_into(rgb: &RgbImage, lb: &Letterbox, out: &mut [f32]) {
    let (w, h) = (lb.dst_w_px as usize, lb.dst_h_px as usize);
    assert_eq!(out.len(), 3 * w * h, "output buffer must be [3, {h}, {w}]");
    // cv2.resize to the rounded inner size: each axis scales by inner/src
    let sx = lb.inner_w_px as f32 / rgb.width() as f32;
    let sy = lb.inner_h_px as f32 / rgb.height() as f32;
    let xs = linear_taps(rgb.width(), lb.dst_w_px, lb.pad_left_px, sx);
    let ys = linear_taps(rgb.height(), lb.dst_h_px, lb.pad_top_px, sy);
    let src = rgb.as_raw();
    let stride = rgb.width() as usize * 3;
    let pad = PAD_GREY as f32 / 255.0;
    for (y, ty) in ys.iter().enumerate() {
        for (x, tx) in xs.iter().enumerate() {
            let i = y * w + x;
            match (ty, tx) {
                (Some((y0, y1, fy)), Some((x0, x1, fx))) => {
                    for c in 0..3 {
                        let p = |yy: usize, xx: usize| src[yy * stride + xx * 3 + c] as f32;
                        let top = p(*y0, *x0) + (p(*y0, *x1) - p(*y0, *x0)) * fx;
                        let bottom = p(*y1, *x0) + (p(*y1, *x1) - p(*y1, *x0)) * fx;
                        out[c * w * h + i] = (top + (bottom - top) * fy) / 255.0;
                    }
                }
                _ => {
                    for c in 0..3 {
                        out[c * w * h + i] = pad;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn letterbox_matches_ultralytics_geometry() {
        // 640x480 into 320x320: r = 0.5, inner 320x240, dh = 40 -> top 40
        let lb = Letterbox::new(640, 480, 320, 320);
        assert_eq!((lb.inner_w_px, lb.inner_h_px), (320, 240));
        assert_eq!((lb.pad_left_px, lb.pad_top_px), (0.0, 40.0));
        // 320x256 into 128: r = 0.4, inner 128x102.4 -> 102, dh = 13 -> round(12.9) = 13
        let lb = Letterbox::new(320, 256, 128, 128);
        assert_eq!((lb.inner_w_px, lb.inner_h_px), (128, 102));
        assert_eq!(lb.pad_top_px, 13.0);
        // odd padding 3 -> dh 1.5 -> top round(1.4) = 1 (bottom gets 2)
        let lb = Letterbox::new(100, 97, 100, 100);
        assert_eq!(lb.pad_top_px, 1.0);
        let b = BBox::new(10.0, 20.0, 30.0, 40.0);
        let lb = Letterbox::new(640, 480, 320, 320);
        let back = lb.to_source(&lb.to_input(&b), 640, 480);
        assert!((back.x1 - 10.0).abs() < 1e-4 && (back.y2 - 40.0).abs() < 1e-4);
    }

    #[test]
    fn letterbox_pads_grey_and_keeps_content() {
        let img = RgbImage::from_pixel(4, 2, image::Rgb([255, 0, 0]));
        let lb = Letterbox::new(4, 2, 4, 4);
        let mut out = vec![0.0; 3 * 16];
        letterbox_into(&img, &lb, &mut out);
        let grey = 114.0 / 255.0;
        assert_eq!(out[0], grey); // top row is padding
        assert_eq!(out[4 + 1], 1.0); // red channel inside
        assert_eq!(out[16 + 5], 0.0); // green channel inside
    }
}
