//! Captured frame → model input, in one pass: pixel conversion (YUYV, NV12,
//! GREY, RGB24 → RGB; MJPEG decode) fused with the letterbox resize, written
//! straight into the reused `[3, H, W]` input tensor.
//!
//! The resampling is exactly [`crate::shared::letterbox::letterbox_into`]'s
//! (bilinear, pixel-centre aligned, grey-114 padding, same arithmetic order),
//! done separably: each source row the output needs is converted and
//! resampled horizontally once, then two such rows are blended. An RGB24
//! frame gives bit-identical tensors to `letterbox_into`; YUV frames give
//! what converting the whole frame to RGB first would, without rounding the
//! intermediate RGB to bytes. Nothing is allocated per frame once the
//! geometry is known (the taps and row buffers are rebuilt only when the
//! frame size or the input size changes).

use crate::device::capture::{Frame, PixelFormat};
use crate::shared::letterbox::{linear_taps, Letterbox, PAD_GREY};
use anyhow::{bail, ensure, Result};
use zune_core::bytestream::ZCursor;
use zune_core::colorspace::ColorSpace;
use zune_core::options::DecoderOptions;
use zune_jpeg::JpegDecoder;

/// One horizontal or vertical bilinear tap: source indices and the weight
/// of the second; `None` is padding.
type Tap = Option<(usize, usize, f32)>;

/// YUV (BT.601, limited range, as V4L2 webcams deliver and OpenCV's
/// `COLOR_YUV2RGB_*` assume) → RGB in 0..=255, clamped.
#[inline(always)]
pub fn yuv_to_rgb(y: u8, u: u8, v: u8) -> [f32; 3] {
    let c = 1.164_383_6 * (y as f32 - 16.0);
    let (d, e) = (u as f32 - 128.0, v as f32 - 128.0);
    [
        (c + 1.596_026_8 * e).clamp(0.0, 255.0),
        (c - 0.391_762_3 * d - 0.812_967_6 * e).clamp(0.0, 255.0),
        (c + 2.017_232_1 * d).clamp(0.0, 255.0),
    ]
}

/// Why a frame could not be converted (the frame is skipped and counted).
#[derive(Debug)]
pub struct CorruptFrame(pub String);

impl std::fmt::Display for CorruptFrame {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for CorruptFrame {}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
struct Geometry {
    src_w_px: u32,
    src_h_px: u32,
    dst_w_px: u32,
    dst_h_px: u32,
}

/// Reusable converter: keeps the taps for the current geometry, two
/// resampled rows and the MJPEG decode buffer.
pub struct Converter {
    geometry: Option<Geometry>,
    letterbox: Option<Letterbox>,
    xs: Vec<Tap>,
    ys: Vec<Tap>,
    /// Two horizontally resampled source rows, `[dst_w, 3]` RGB in 0..=255,
    /// and which source row each holds.
    rows: [Vec<f32>; 2],
    row_src: [Option<usize>; 2],
    /// Decoded MJPEG pixels (RGB24), reused across frames.
    jpeg_rgb: Vec<u8>,
}

impl Default for Converter {
    fn default() -> Self {
        Self::new()
    }
}

/// A frame's pixels as the resampler reads them.
#[derive(Clone, Copy)]
struct PixelView<'a> {
    format: PixelFormat,
    data: &'a [u8],
    width_px: usize,
    height_px: usize,
    stride_bytes: usize,
}

impl Converter {
    pub fn new() -> Self {
        Self {
            geometry: None,
            letterbox: None,
            xs: Vec::new(),
            ys: Vec::new(),
            rows: [Vec::new(), Vec::new()],
            row_src: [None, None],
            jpeg_rgb: Vec::new(),
        }
    }

    /// Converts `frame` into `out`, a `[3, dst_h, dst_w]` RGB tensor in 0..1,
    /// letterboxed; returns the letterbox (to map boxes back).
    pub fn letterbox_frame(
        &mut self,
        frame: &Frame,
        dst_w_px: u32,
        dst_h_px: u32,
        out: &mut [f32],
    ) -> Result<Letterbox> {
        ensure!(
            out.len() == 3 * dst_w_px as usize * dst_h_px as usize,
            "input tensor must be [3, {dst_h_px}, {dst_w_px}]"
        );
        let view = if frame.format == PixelFormat::Mjpeg {
            let (w, h) = decode_jpeg_into(&frame.data, &mut self.jpeg_rgb)?;
            PixelView {
                format: PixelFormat::Rgb24,
                data: &self.jpeg_rgb,
                width_px: w,
                height_px: h,
                stride_bytes: w * 3,
            }
        } else {
            raw_view(frame)?
        };
        let geometry = Geometry {
            src_w_px: view.width_px as u32,
            src_h_px: view.height_px as u32,
            dst_w_px,
            dst_h_px,
        };
        if self.geometry != Some(geometry) {
            let lb = Letterbox::new(geometry.src_w_px, geometry.src_h_px, dst_w_px, dst_h_px);
            // As letterbox_into: each axis scales by inner/src (cv2.resize to the rounded size).
            let sx = lb.inner_w_px as f32 / geometry.src_w_px as f32;
            let sy = lb.inner_h_px as f32 / geometry.src_h_px as f32;
            self.xs = linear_taps(geometry.src_w_px, dst_w_px, lb.pad_left_px, sx);
            self.ys = linear_taps(geometry.src_h_px, dst_h_px, lb.pad_top_px, sy);
            for row in &mut self.rows {
                row.clear();
                row.resize(dst_w_px as usize * 3, 0.0);
            }
            self.geometry = Some(geometry);
            self.letterbox = Some(lb);
        }
        self.row_src = [None, None];
        let lb = self.letterbox.expect("set with the geometry");
        resample(
            view,
            &self.xs,
            &self.ys,
            &mut self.rows,
            &mut self.row_src,
            dst_w_px as usize,
            dst_h_px as usize,
            out,
        );
        Ok(lb)
    }

    /// Size of the last converted frame (for MJPEG: as decoded).
    pub fn source_size(&self) -> (u32, u32) {
        self.geometry.map_or((0, 0), |g| (g.src_w_px, g.src_h_px))
    }

    /// The frame as an RGB image at its own size (for snapshots and
    /// `detect --save`; allocates, so not on the per-frame path).
    pub fn to_rgb_image(&mut self, frame: &Frame) -> Result<image::RgbImage> {
        let view = if frame.format == PixelFormat::Mjpeg {
            let (w, h) = decode_jpeg_into(&frame.data, &mut self.jpeg_rgb)?;
            return image::RgbImage::from_raw(
                w as u32,
                h as u32,
                self.jpeg_rgb[..w * h * 3].to_vec(),
            )
            .ok_or_else(|| anyhow::anyhow!("decoded JPEG has the wrong size"));
        } else {
            raw_view(frame)?
        };
        let mut img = image::RgbImage::new(view.width_px as u32, view.height_px as u32);
        for (y, row) in img.rows_mut().enumerate() {
            for (x, px) in row.enumerate() {
                let rgb = view.pixel(x, y);
                *px = image::Rgb(rgb.map(|v| v.round() as u8));
            }
        }
        Ok(img)
    }
}

/// Checks the frame holds enough bytes for its format and size.
fn raw_view(frame: &Frame) -> Result<PixelView<'_>> {
    let (w, h) = (frame.width_px as usize, frame.height_px as usize);
    if w == 0 || h == 0 {
        bail!(CorruptFrame(format!("frame has no size ({w}x{h})")));
    }
    let min_stride = match frame.format {
        PixelFormat::Yuyv => w * 2,
        PixelFormat::Nv12 | PixelFormat::Grey => w,
        PixelFormat::Rgb24 => w * 3,
        PixelFormat::Mjpeg => unreachable!("decoded before"),
    };
    let stride = if frame.stride_bytes == 0 {
        min_stride
    } else {
        frame.stride_bytes as usize
    };
    if stride < min_stride {
        bail!(CorruptFrame(format!(
            "{:?} frame {w}x{h}: stride {stride} bytes is below the row size {min_stride}",
            frame.format
        )));
    }
    if matches!(frame.format, PixelFormat::Yuyv | PixelFormat::Nv12) && w % 2 == 1 {
        // chroma is shared by pixel pairs: V4L2 gives these formats even widths
        bail!(CorruptFrame(format!(
            "{:?} frame width {w} is odd",
            frame.format
        )));
    }
    // The last row needs only its pixels, not the full stride.
    let mut need = stride * (h - 1) + min_stride;
    if frame.format == PixelFormat::Nv12 {
        // the interleaved UV plane follows the Y plane, same stride, half height
        need = stride * h + stride * (h.div_ceil(2) - 1) + 2 * w.div_ceil(2);
    }
    if frame.data.len() < need {
        bail!(CorruptFrame(format!(
            "{:?} frame {w}x{h} (stride {stride}) needs {need} bytes, got {} (truncated)",
            frame.format,
            frame.data.len()
        )));
    }
    Ok(PixelView {
        format: frame.format,
        data: &frame.data,
        width_px: w,
        height_px: h,
        stride_bytes: stride,
    })
}

/// Decodes one JPEG into `rgb` (resized, capacity kept); returns its size.
/// A frame without its end-of-image marker is truncated (a USB transfer cut
/// short): decoders fill the rest with grey, which would be fed to the model
/// as if real, so it is rejected.
pub fn decode_jpeg_into(jpeg: &[u8], rgb: &mut Vec<u8>) -> Result<(usize, usize)> {
    if jpeg.len() < 4 || jpeg[0] != 0xFF || jpeg[1] != 0xD8 {
        bail!(CorruptFrame(
            "MJPEG frame does not start with a JPEG SOI marker".into()
        ));
    }
    // Drivers may pad the buffer after the EOI marker with zeros.
    let mut end = jpeg.len();
    while end > 2 && jpeg[end - 1] == 0 {
        end -= 1;
    }
    if end < 4 || jpeg[end - 2] != 0xFF || jpeg[end - 1] != 0xD9 {
        bail!(CorruptFrame(format!(
            "MJPEG frame of {} bytes has no end-of-image marker (truncated)",
            jpeg.len()
        )));
    }
    let options = DecoderOptions::default()
        .jpeg_set_out_colorspace(ColorSpace::RGB)
        .set_strict_mode(true);
    let mut decoder = JpegDecoder::new_with_options(ZCursor::new(&jpeg[..end]), options);
    decoder
        .decode_headers()
        .map_err(|e| CorruptFrame(format!("MJPEG frame: {e:?}")))?;
    let (w, h) = decoder
        .dimensions()
        .ok_or_else(|| CorruptFrame("MJPEG frame without dimensions".into()))?;
    let size = decoder
        .output_buffer_size()
        .ok_or_else(|| CorruptFrame("MJPEG frame without dimensions".into()))?;
    if w == 0 || h == 0 || size != w * h * 3 {
        bail!(CorruptFrame(format!(
            "MJPEG frame {w}x{h} does not decode to RGB ({size} bytes)"
        )));
    }
    rgb.resize(size, 0);
    decoder
        .decode_into(rgb)
        .map_err(|e| CorruptFrame(format!("MJPEG frame: {e:?}")))?;
    Ok((w, h))
}

impl PixelView<'_> {
    /// Pixel (x, y) as RGB in 0..=255 (slow path: snapshots only).
    fn pixel(&self, x: usize, y: usize) -> [f32; 3] {
        let row = &self.data[y * self.stride_bytes..];
        match self.format {
            PixelFormat::Rgb24 => [row[3 * x], row[3 * x + 1], row[3 * x + 2]].map(|v| v as f32),
            PixelFormat::Grey => [row[x] as f32; 3],
            PixelFormat::Yuyv => {
                let pair = (x & !1) * 2;
                yuv_to_rgb(row[2 * x], row[pair + 1], row[pair + 3])
            }
            PixelFormat::Nv12 => {
                let uv = &self.data
                    [self.stride_bytes * self.height_px + (y / 2) * self.stride_bytes + (x & !1)..];
                yuv_to_rgb(row[x], uv[0], uv[1])
            }
            PixelFormat::Mjpeg => unreachable!("decoded before"),
        }
    }

    /// Source row `y` converted and resampled at the columns `xs` into
    /// `out` (`[xs.len(), 3]`, 0..=255; padding columns untouched).
    fn resample_row(&self, y: usize, xs: &[Tap], out: &mut [f32]) {
        let row = &self.data[y * self.stride_bytes..];
        // One loop per format so the conversion inlines into the tap loop.
        macro_rules! taps {
            (|$x:ident| $fetch:expr) => {
                for (o, tap) in out.chunks_exact_mut(3).zip(xs) {
                    if let Some((x0, x1, fx)) = *tap {
                        let a = {
                            let $x = x0;
                            $fetch
                        };
                        let b = {
                            let $x = x1;
                            $fetch
                        };
                        for c in 0..3 {
                            o[c] = a[c] + (b[c] - a[c]) * fx;
                        }
                    }
                }
            };
        }
        match self.format {
            PixelFormat::Rgb24 => {
                taps!(|x| [
                    row[3 * x] as f32,
                    row[3 * x + 1] as f32,
                    row[3 * x + 2] as f32
                ])
            }
            PixelFormat::Grey => taps!(|x| [row[x] as f32; 3]),
            PixelFormat::Yuyv => taps!(|x| {
                let pair = (x & !1) * 2;
                yuv_to_rgb(row[2 * x], row[pair + 1], row[pair + 3])
            }),
            PixelFormat::Nv12 => {
                let uv = &self.data[self.stride_bytes * (self.height_px + y / 2)..];
                taps!(|x| yuv_to_rgb(row[x], uv[x & !1], uv[(x & !1) + 1]))
            }
            PixelFormat::Mjpeg => unreachable!("decoded before"),
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn resample(
    view: PixelView<'_>,
    xs: &[Tap],
    ys: &[Tap],
    rows: &mut [Vec<f32>; 2],
    row_src: &mut [Option<usize>; 2],
    dst_w: usize,
    dst_h: usize,
    out: &mut [f32],
) {
    let plane = dst_w * dst_h;
    let pad = PAD_GREY as f32 / 255.0;
    let (r_out, rest) = out.split_at_mut(plane);
    let (g_out, b_out) = rest.split_at_mut(plane);
    for (oy, tap) in ys.iter().enumerate() {
        let line = oy * dst_w..(oy + 1) * dst_w;
        let Some((y0, y1, fy)) = *tap else {
            r_out[line.clone()].fill(pad);
            g_out[line.clone()].fill(pad);
            b_out[line].fill(pad);
            continue;
        };
        // Keep the row the previous output line used when it is still needed.
        let slot_of =
            |row_src: &[Option<usize>; 2], y: usize| row_src.iter().position(|s| *s == Some(y));
        let s0 = match slot_of(row_src, y0) {
            Some(s) => s,
            None => {
                let s = if row_src[0] == Some(y1) { 1 } else { 0 };
                view.resample_row(y0, xs, &mut rows[s]);
                row_src[s] = Some(y0);
                s
            }
        };
        let s1 = match slot_of(row_src, y1) {
            Some(s) => s,
            None => {
                let s = 1 - s0;
                view.resample_row(y1, xs, &mut rows[s]);
                row_src[s] = Some(y1);
                s
            }
        };
        let (top, bottom) = (&rows[s0], &rows[s1]);
        for (ox, tap) in xs.iter().enumerate() {
            let i = oy * dst_w + ox;
            if tap.is_none() {
                r_out[i] = pad;
                g_out[i] = pad;
                b_out[i] = pad;
                continue;
            }
            let (t, b) = (&top[3 * ox..3 * ox + 3], &bottom[3 * ox..3 * ox + 3]);
            r_out[i] = (t[0] + (b[0] - t[0]) * fy) / 255.0;
            g_out[i] = (t[1] + (b[1] - t[1]) * fy) / 255.0;
            b_out[i] = (t[2] + (b[2] - t[2]) * fy) / 255.0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yuv_limited_range_extremes() {
        assert_eq!(yuv_to_rgb(16, 128, 128), [0.0, 0.0, 0.0]);
        let white = yuv_to_rgb(235, 128, 128);
        assert!(white.iter().all(|v| (v - 255.0).abs() < 0.01), "{white:?}");
        // pure red in BT.601 limited range: Y 81, U 90, V 240
        let red = yuv_to_rgb(81, 90, 240);
        assert!(red[0] > 250.0 && red[1] < 3.0 && red[2] < 3.0, "{red:?}");
    }

    #[test]
    fn truncated_jpeg_is_corrupt() {
        let img = image::RgbImage::from_pixel(16, 16, image::Rgb([10, 200, 30]));
        let mut jpeg = Vec::new();
        image::codecs::jpeg::JpegEncoder::new(&mut jpeg)
            .encode_image(&img)
            .unwrap();
        let mut rgb = Vec::new();
        assert_eq!(decode_jpeg_into(&jpeg, &mut rgb).unwrap(), (16, 16));
        let e = decode_jpeg_into(&jpeg[..jpeg.len() / 2], &mut rgb).unwrap_err();
        assert!(e.downcast_ref::<CorruptFrame>().is_some(), "{e}");
        assert!(e.to_string().contains("truncated"), "{e}");
    }
}
