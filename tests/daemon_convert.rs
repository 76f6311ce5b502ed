//! The fused conversion + letterbox against reference conversions: each
//! camera format converted whole-frame to RGB by a plain reference (the
//! textbook BT.601 limited-range formulas, written here independently),
//! then letterboxed by `preprocess::letterbox_into` (the trainer's
//! letterbox), must give the same tensor as `Converter` does in one pass.

use image::{Rgb, RgbImage};
use irdistill::device::capture::{Frame, PixelFormat};
use irdistill::device::convert::{Converter, CorruptFrame};
use irdistill::shared::letterbox::{letterbox_into, Letterbox};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// A textured test picture: gradients, saturated blocks and noise, so
/// chroma siting and row/column mix-ups show.
fn picture(w: u32, h: u32, seed: u64) -> RgbImage {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    RgbImage::from_fn(w, h, |x, y| {
        let n: i32 = rng.random_range(-20..20);
        let base = [
            (x * 255 / w) as i32,
            (y * 255 / h) as i32,
            if (x / 7 + y / 5) % 2 == 0 { 230 } else { 20 },
        ];
        Rgb(base.map(|v| (v + n).clamp(0, 255) as u8))
    })
}

fn reference_yuv_to_rgb(y: u8, u: u8, v: u8) -> [u8; 3] {
    let (y, u, v) = (y as f64 - 16.0, u as f64 - 128.0, v as f64 - 128.0);
    let r = 1.164 * y + 1.596 * v;
    let g = 1.164 * y - 0.392 * u - 0.813 * v;
    let b = 1.164 * y + 2.017 * u;
    [r, g, b].map(|c| c.round().clamp(0.0, 255.0) as u8)
}

fn rgb_to_yuv(p: [u8; 3]) -> [u8; 3] {
    let [r, g, b] = p.map(|v| v as f64);
    [
        16.0 + 0.257 * r + 0.504 * g + 0.098 * b,
        128.0 - 0.148 * r - 0.291 * g + 0.439 * b,
        128.0 + 0.439 * r - 0.368 * g - 0.071 * b,
    ]
    .map(|c| c.round().clamp(0.0, 255.0) as u8)
}

/// YUYV bytes of `img` with `pad` bytes of garbage after each row, and the
/// reference RGB decoding of exactly those bytes.
fn yuyv(img: &RgbImage, pad: usize) -> (Frame, RgbImage) {
    let (w, h) = (img.width() as usize, img.height() as usize);
    let stride = w * 2 + pad;
    let mut data = vec![0xAAu8; stride * h];
    let mut reference = RgbImage::new(w as u32, h as u32);
    for y in 0..h {
        for x in (0..w).step_by(2) {
            let a = rgb_to_yuv(img.get_pixel(x as u32, y as u32).0);
            let b = rgb_to_yuv(img.get_pixel(x as u32 + 1, y as u32).0);
            let (u, v) = (a[1], b[2]);
            let o = y * stride + x * 2;
            data[o..o + 4].copy_from_slice(&[a[0], u, b[0], v]);
            reference.put_pixel(x as u32, y as u32, Rgb(reference_yuv_to_rgb(a[0], u, v)));
            reference.put_pixel(
                x as u32 + 1,
                y as u32,
                Rgb(reference_yuv_to_rgb(b[0], u, v)),
            );
        }
    }
    (frame(PixelFormat::Yuyv, w, h, stride, data), reference)
}

fn nv12(img: &RgbImage) -> (Frame, RgbImage) {
    let (w, h) = (img.width() as usize, img.height() as usize);
    let mut data = vec![0u8; w * h + w * h.div_ceil(2)];
    let yuv: Vec<[u8; 3]> = img.pixels().map(|p| rgb_to_yuv(p.0)).collect();
    for (i, p) in yuv.iter().enumerate() {
        data[i] = p[0];
    }
    let mut reference = RgbImage::new(w as u32, h as u32);
    for y in 0..h {
        for x in 0..w {
            // chroma of the 2x2 block's top-left pixel
            let c = yuv[(y & !1) * w + (x & !1)];
            let o = w * h + (y / 2) * w + (x & !1);
            data[o] = c[1];
            data[o + 1] = c[2];
            reference.put_pixel(
                x as u32,
                y as u32,
                Rgb(reference_yuv_to_rgb(yuv[y * w + x][0], c[1], c[2])),
            );
        }
    }
    (frame(PixelFormat::Nv12, w, h, w, data), reference)
}

fn frame(format: PixelFormat, w: usize, h: usize, stride: usize, data: Vec<u8>) -> Frame {
    Frame {
        format,
        width_px: w as u32,
        height_px: h as u32,
        stride_bytes: stride as u32,
        data,
        sequence: 0,
        captured_at: std::time::SystemTime::now(),
    }
}

/// Max |a − b| over two tensors.
fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

fn fused(frame: &Frame, s: u32) -> Vec<f32> {
    let mut out = vec![f32::NAN; 3 * (s * s) as usize];
    Converter::new()
        .letterbox_frame(frame, s, s, &mut out)
        .unwrap();
    assert!(out.iter().all(|v| v.is_finite() && (0.0..=1.0).contains(v)));
    out
}

fn reference(rgb: &RgbImage, s: u32) -> Vec<f32> {
    let lb = Letterbox::new(rgb.width(), rgb.height(), s, s);
    let mut out = vec![0.0; 3 * (s * s) as usize];
    letterbox_into(rgb, &lb, &mut out);
    out
}

#[test]
fn rgb24_is_bit_identical_to_letterbox_into() {
    for (w, h, s) in [
        (640, 480, 256),
        (320, 256, 128),
        (97, 203, 64),
        (100, 100, 160),
    ] {
        let img = picture(w, h, 1);
        let f = frame(
            PixelFormat::Rgb24,
            w as usize,
            h as usize,
            3 * w as usize,
            img.as_raw().clone(),
        );
        assert_eq!(fused(&f, s), reference(&img, s), "{w}x{h} -> {s}");
    }
}

#[test]
fn grey_matches_reference() {
    let img = picture(320, 240, 2);
    let grey: Vec<u8> = img.pixels().map(|p| p.0[1]).collect();
    let rgb = RgbImage::from_fn(320, 240, |x, y| Rgb([grey[(y * 320 + x) as usize]; 3]));
    let f = frame(PixelFormat::Grey, 320, 240, 320, grey);
    assert_eq!(fused(&f, 128), reference(&rgb, 128));
}

#[test]
fn yuyv_matches_reference_with_row_padding() {
    // the reference rounds RGB to bytes, the fused path does not: ≤ 0.5/255 + coefficient rounding
    for (w, h, s, pad) in [(640, 480, 256, 0), (320, 180, 128, 64), (160, 120, 320, 8)] {
        let img = picture(w, h, 3);
        let (f, rgb) = yuyv(&img, pad);
        let d = max_diff(&fused(&f, s), &reference(&rgb, s));
        assert!(
            d <= 1.5 / 255.0,
            "{w}x{h} pad {pad} -> {s}: max diff {} /255",
            d * 255.0
        );
    }
}

#[test]
fn nv12_matches_reference() {
    for (w, h, s) in [(640, 480, 256), (322, 182, 128), (64, 47, 64)] {
        let img = picture(w, h, 4);
        let (f, rgb) = nv12(&img);
        let d = max_diff(&fused(&f, s), &reference(&rgb, s));
        assert!(
            d <= 1.5 / 255.0,
            "{w}x{h} -> {s}: max diff {} /255",
            d * 255.0
        );
    }
}

#[test]
fn mjpeg_matches_decoded_reference() {
    let img = picture(400, 300, 5);
    let mut jpeg = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, 90)
        .encode_image(&img)
        .unwrap();
    // The reference decoder: the image crate's own JPEG path.
    let decoded = image::load_from_memory_with_format(&jpeg, image::ImageFormat::Jpeg)
        .unwrap()
        .to_rgb8();
    // V4L2 buffers are often zero-padded after the end-of-image marker.
    let mut padded = jpeg.clone();
    padded.extend_from_slice(&[0; 100]);
    let f = frame(PixelFormat::Mjpeg, 0, 0, 0, padded);
    let d = max_diff(&fused(&f, 192), &reference(&decoded, 192));
    // decoders may differ by a level in chroma upsampling
    assert!(d <= 2.0 / 255.0, "max diff {} /255", d * 255.0);
    let mut c = Converter::new();
    let mut out = vec![0.0; 3 * 192 * 192];
    c.letterbox_frame(&f, 192, 192, &mut out).unwrap();
    assert_eq!(c.source_size(), (400, 300));
}

#[test]
fn bad_frames_are_corrupt_not_panics() {
    let mut c = Converter::new();
    let mut out = vec![0.0; 3 * 64 * 64];
    let img = picture(64, 48, 6);
    let mut jpeg = Vec::new();
    image::codecs::jpeg::JpegEncoder::new(&mut jpeg)
        .encode_image(&img)
        .unwrap();
    let cases = [
        frame(
            PixelFormat::Mjpeg,
            64,
            48,
            0,
            jpeg[..jpeg.len() * 2 / 3].to_vec(),
        ),
        frame(PixelFormat::Mjpeg, 64, 48, 0, vec![0xFF, 0xD8, 0xFF, 0xD9]),
        frame(PixelFormat::Mjpeg, 64, 48, 0, b"not a jpeg at all".to_vec()),
        frame(PixelFormat::Yuyv, 64, 48, 128, vec![0; 128 * 47]),
        frame(PixelFormat::Nv12, 64, 48, 64, vec![0; 64 * 48]),
        frame(PixelFormat::Rgb24, 64, 48, 100, vec![0; 100 * 48]),
        frame(PixelFormat::Grey, 0, 48, 0, vec![]),
    ];
    for f in &cases {
        let e = c.letterbox_frame(f, 64, 64, &mut out).unwrap_err();
        assert!(
            e.downcast_ref::<CorruptFrame>().is_some(),
            "{:?}: {e}",
            f.format
        );
    }
    // and the converter still works afterwards
    let ok = frame(PixelFormat::Rgb24, 64, 48, 192, img.as_raw().clone());
    c.letterbox_frame(&ok, 64, 64, &mut out).unwrap();
    assert_eq!(out, reference(&img, 64));
}

#[test]
fn synthetic_encoder_round_trips_through_the_converter() {
    // The synthetic camera's YUYV/NV12 encoder is the converter's inverse.
    use irdistill::device::capture::synthetic::encode_rgb_into;
    let img = RgbImage::from_fn(320, 240, |x, y| {
        Rgb([(x * 255 / 320) as u8, (y * 255 / 240) as u8, 128])
    });
    for format in [PixelFormat::Yuyv, PixelFormat::Nv12] {
        let mut f = Frame::empty();
        encode_rgb_into(&img, format, &mut f).unwrap();
        let d = max_diff(&fused(&f, 128), &reference(&img, 128));
        // a smooth picture: only rounding and chroma averaging remain
        assert!(d <= 3.0 / 255.0, "{format:?}: max diff {} /255", d * 255.0);
    }
}
