//! Contact sheet for judging the generator by eye: one row per pair,
//! `RGB | IR | RGB with label boxes`, with the condition and name above.

use crate::shared::draw::{class_colour, draw_box, draw_text};
use crate::shared::pair::FramePair;
use image::{Rgb, RgbImage};

const GAP_PX: u32 = 4;
const HEADER_PX: u32 = 12;

/// Builds the sheet for `pairs` (all of one size).
pub fn contact_sheet(pairs: &[&FramePair], names: &[String]) -> RgbImage {
    let (w, h) = pairs
        .first()
        .map(|p| (p.width_px(), p.height_px()))
        .unwrap_or((1, 1));
    let sheet_w = 3 * w + 4 * GAP_PX;
    let row_h = h + HEADER_PX + GAP_PX;
    let mut sheet = RgbImage::from_pixel(
        sheet_w,
        pairs.len() as u32 * row_h + GAP_PX,
        Rgb([24, 24, 28]),
    );
    for (r, pair) in pairs.iter().enumerate() {
        let top = r as u32 * row_h + GAP_PX;
        let condition = pair.condition.map(|c| c.as_str()).unwrap_or("?");
        let title = format!(
            "{}  {}  {} objects",
            pair.name,
            condition,
            pair.labels.len()
        );
        draw_text(
            &mut sheet,
            GAP_PX as i64,
            top as i64 + 2,
            &title,
            Rgb([230, 230, 230]),
            1,
        );
        let y = top + HEADER_PX;
        let mut boxed = pair.rgb.clone();
        for l in &pair.labels {
            draw_box(&mut boxed, &l.bbox, class_colour(l.class_id), 1);
            let label = names.get(l.class_id).map(String::as_str).unwrap_or("?");
            if l.bbox.height() >= 14.0 {
                draw_text(
                    &mut boxed,
                    l.bbox.x1 as i64,
                    l.bbox.y1 as i64 - 9,
                    label,
                    class_colour(l.class_id),
                    1,
                );
            }
        }
        let ir_rgb = image::DynamicImage::ImageLuma8(pair.ir.clone()).to_rgb8();
        image::imageops::replace(&mut sheet, &pair.rgb, GAP_PX as i64, y as i64);
        image::imageops::replace(&mut sheet, &ir_rgb, (2 * GAP_PX + w) as i64, y as i64);
        image::imageops::replace(&mut sheet, &boxed, (3 * GAP_PX + 2 * w) as i64, y as i64);
    }
    sheet
}
