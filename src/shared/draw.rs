//! Drawing on frames: box outlines, filled rectangles and 8×8 bitmap text
//! (public-domain font8x8 glyphs), for previews and annotated snapshots.

use crate::shared::bbox::BBox;
use font8x8::{UnicodeFonts, BASIC_FONTS};
use image::{Rgb, RgbImage};

/// A distinct colour per class id.
pub fn class_colour(class_id: usize) -> Rgb<u8> {
    const PALETTE: [[u8; 3]; 8] = [
        [255, 64, 64],
        [64, 200, 255],
        [255, 200, 0],
        [120, 255, 90],
        [255, 90, 255],
        [255, 140, 40],
        [160, 120, 255],
        [40, 255, 200],
    ];
    Rgb(PALETTE[class_id % PALETTE.len()])
}

/// Fills the rectangle `[x0, x1) × [y0, y1)`, clipped to the image.
pub fn fill_rect(img: &mut RgbImage, x0: i64, y0: i64, x1: i64, y1: i64, colour: Rgb<u8>) {
    let (w, h) = (img.width() as i64, img.height() as i64);
    for y in y0.max(0)..y1.min(h) {
        for x in x0.max(0)..x1.min(w) {
            img.put_pixel(x as u32, y as u32, colour);
        }
    }
}

/// Draws the outline of `bbox` (pixels) `thickness` pixels wide, inside it.
pub fn draw_box(img: &mut RgbImage, bbox: &BBox, colour: Rgb<u8>, thickness: i64) {
    let (x0, y0) = (bbox.x1.round() as i64, bbox.y1.round() as i64);
    let (x1, y1) = (
        (bbox.x2.round() as i64).max(x0 + 1),
        (bbox.y2.round() as i64).max(y0 + 1),
    );
    let t = thickness.max(1);
    fill_rect(img, x0, y0, x1, y0 + t, colour);
    fill_rect(img, x0, y1 - t, x1, y1, colour);
    fill_rect(img, x0, y0, x0 + t, y1, colour);
    fill_rect(img, x1 - t, y0, x1, y1, colour);
}

/// Draws a straight line from `a` to `b` (pixels), `thickness` wide.
pub fn draw_line(
    img: &mut RgbImage,
    a: (f32, f32),
    b: (f32, f32),
    colour: Rgb<u8>,
    thickness: i64,
) {
    let t = thickness.max(1);
    let steps = (b.0 - a.0).abs().max((b.1 - a.1).abs()).ceil().max(1.0) as i64;
    for i in 0..=steps {
        let f = i as f32 / steps as f32;
        let (x, y) = (a.0 + (b.0 - a.0) * f, a.1 + (b.1 - a.1) * f);
        let (x, y) = (x.round() as i64 - t / 2, y.round() as i64 - t / 2);
        fill_rect(img, x, y, x + t, y + t, colour);
    }
}

/// Width in pixels of `text` drawn at `scale`.
pub fn text_width(text: &str, scale: u32) -> i64 {
    text.chars().count() as i64 * 8 * scale as i64
}

/// Draws `text` with its top-left corner at `(x, y)`; characters the font
/// lacks are drawn as `?`.
pub fn draw_text(img: &mut RgbImage, x: i64, y: i64, text: &str, colour: Rgb<u8>, scale: u32) {
    let s = scale.max(1) as i64;
    for (k, ch) in text.chars().enumerate() {
        let glyph = BASIC_FONTS
            .get(ch)
            .or_else(|| BASIC_FONTS.get('?'))
            .unwrap_or([0; 8]);
        let gx = x + k as i64 * 8 * s;
        for (row, bits) in glyph.iter().enumerate() {
            for col in 0..8 {
                if bits & (1 << col) != 0 {
                    let px = gx + col as i64 * s;
                    let py = y + row as i64 * s;
                    fill_rect(img, px, py, px + s, py + s, colour);
                }
            }
        }
    }
}

/// Draws `text` on a filled background: a readable label on any image.
pub fn draw_label(img: &mut RgbImage, x: i64, y: i64, text: &str, fg: Rgb<u8>, bg: Rgb<u8>) {
    fill_rect(img, x, y, x + text_width(text, 1) + 2, y + 10, bg);
    draw_text(img, x + 1, y + 1, text, fg, 1);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn box_outline_stays_inside_and_clips() {
        let mut img = RgbImage::new(10, 10);
        draw_box(
            &mut img,
            &BBox::new(2.0, 2.0, 6.0, 6.0),
            Rgb([255, 0, 0]),
            1,
        );
        assert_eq!(img.get_pixel(2, 2).0, [255, 0, 0]);
        assert_eq!(img.get_pixel(5, 5).0, [255, 0, 0]);
        assert_eq!(img.get_pixel(3, 3).0, [0, 0, 0]);
        assert_eq!(img.get_pixel(6, 6).0, [0, 0, 0]);
        // partly outside: no panic
        draw_box(
            &mut img,
            &BBox::new(-5.0, -5.0, 50.0, 50.0),
            Rgb([0, 255, 0]),
            2,
        );
        draw_text(&mut img, 8, 8, "Ab", Rgb([1, 1, 1]), 2);
    }

    #[test]
    fn text_sets_pixels() {
        let mut img = RgbImage::new(20, 10);
        draw_text(&mut img, 0, 0, "H", Rgb([9, 9, 9]), 1);
        assert!(img.pixels().any(|p| p.0 == [9, 9, 9]));
    }
}
