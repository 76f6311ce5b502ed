//! `results.png`: training curves (losses, validation mAP, learning rate)
//! drawn with plotters; titles with the crate's bitmap font, so no system
//! font is needed.

use super::results::EpochRow;
use crate::shared::draw::draw_text;
use anyhow::{anyhow, Result};
use image::{Rgb, RgbImage};
use plotters::prelude::*;
use std::path::Path;

const PANEL_W: u32 = 300;
const PANEL_H: u32 = 200;
const TITLE_H: u32 = 14;

type Series = (&'static str, fn(&EpochRow) -> Option<f64>);

const PANELS: [Series; 6] = [
    ("train box loss", |r| Some(r.box_loss)),
    ("train cls loss", |r| Some(r.cls_loss)),
    ("train dfl loss", |r| Some(r.dfl_loss)),
    ("val mAP50", |r| r.map50),
    ("val mAP50-95", |r| r.map),
    ("learning rate", |r| Some(r.lr)),
];

/// Draws the six panels in a 3×2 grid.
pub fn results_png(path: &Path, rows: &[EpochRow]) -> Result<()> {
    let (w, h) = (3 * PANEL_W, 2 * (PANEL_H + TITLE_H));
    let mut buf = vec![255u8; (w * h * 3) as usize];
    let mut titles = Vec::new();
    {
        let root = BitMapBackend::with_buffer(&mut buf, (w, h)).into_drawing_area();
        for (k, (name, get)) in PANELS.iter().enumerate() {
            let (col, row) = ((k % 3) as u32, (k / 3) as u32);
            let x0 = (col * PANEL_W) as i32;
            let y0 = (row * (PANEL_H + TITLE_H) + TITLE_H) as i32;
            let area = root
                .clone()
                .shrink((x0 + 6, y0), (PANEL_W - 12, PANEL_H - 6));
            let points: Vec<(f64, f64)> = rows
                .iter()
                .filter_map(|r| {
                    get(r)
                        .filter(|v| v.is_finite())
                        .map(|v| (r.epoch as f64, v))
                })
                .collect();
            let (lo, hi) = points
                .iter()
                .fold((f64::MAX, f64::MIN), |(l, h), p| (l.min(p.1), h.max(p.1)));
            titles.push((
                x0 + 6,
                y0 - TITLE_H as i32 + 3,
                match points.last() {
                    Some(p) => format!("{name}: {:.4} ({:.3}..{:.3})", p.1, lo, hi),
                    None => format!("{name}: -"),
                },
            ));
            area.fill(&RGBColor(248, 248, 250))
                .map_err(|e| anyhow!("{e:?}"))?;
            if points.is_empty() {
                continue;
            }
            let pad = ((hi - lo) * 0.08).max(1e-9);
            let x_max = (rows.last().map_or(1, |r| r.epoch) as f64).max(2.0);
            let mut chart = ChartBuilder::on(&area)
                .margin(4)
                .build_cartesian_2d(1.0..x_max, (lo - pad)..(hi + pad))
                .map_err(|e| anyhow!("{e:?}"))?;
            chart
                .draw_series(LineSeries::new(
                    points.iter().copied(),
                    RGBColor(31, 119, 180).stroke_width(2),
                ))
                .map_err(|e| anyhow!("{e:?}"))?;
            chart
                .draw_series(
                    points
                        .iter()
                        .map(|p| Circle::new(*p, 2, RGBColor(31, 119, 180).filled())),
                )
                .map_err(|e| anyhow!("{e:?}"))?;
        }
        root.present().map_err(|e| anyhow!("{e:?}"))?;
    }
    let mut img = RgbImage::from_raw(w, h, buf).ok_or_else(|| anyhow!("plot buffer size"))?;
    for (x, y, text) in titles {
        draw_text(&mut img, x as i64, y as i64, &text, Rgb([20, 20, 20]), 1);
    }
    let tmp = path.with_extension("png.tmp");
    img.save_with_format(&tmp, image::ImageFormat::Png)?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}
