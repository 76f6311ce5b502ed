//! `curves.png` of an experiment: validation mAP50 per epoch for each arm
//! (mean over the seeds that reached that epoch), to see whether every arm
//! has converged at the budget, beside the reference points of
//! ultralytics' own training of the same model on the same data.

use crate::shared::draw::draw_text;
use crate::trainer::train::results::read_results_csv;
use anyhow::{anyhow, Result};
use image::{Rgb, RgbImage};
use plotters::prelude::*;
use std::collections::BTreeMap;
use std::path::Path;

/// ultralytics' YOLOv8 at the same scale, 1200 generated pairs, 160 px,
/// batch 16: (epoch, val mAP50), measured as issue 22 reports.
pub const ULTRALYTICS_VAL_MAP50: [(f64, f64); 5] = [
    (16.0, 0.20),
    (40.0, 0.33),
    (50.0, 0.36),
    (80.0, 0.40),
    (100.0, 0.42),
];

const PALETTE: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(23, 190, 207),
];

/// Validation mAP50 by epoch from a run's `results.csv` (epochs without
/// it left out).
pub fn val_curve(csv: &Path) -> Result<Vec<(usize, f64)>> {
    let rows = read_results_csv(csv, usize::MAX)?;
    Ok(rows
        .iter()
        .filter_map(|r| Some((r.epoch, r.map50?)))
        .collect())
}

/// Mean over seeds per epoch of each arm's curve (`curves[arm]` = one
/// curve per seed), only at epochs every seed of the arm reached.
pub fn mean_curves(
    curves: &BTreeMap<String, Vec<Vec<(usize, f64)>>>,
) -> BTreeMap<String, Vec<(f64, f64)>> {
    curves
        .iter()
        .filter(|(_, seeds)| !seeds.is_empty())
        .map(|(arm, seeds)| {
            let epochs = seeds.iter().map(|c| c.len()).min().unwrap_or(0);
            let mean = (0..epochs)
                .map(|i| {
                    let v: f64 = seeds.iter().map(|c| c[i].1).sum::<f64>() / seeds.len() as f64;
                    (seeds[0][i].0 as f64, v)
                })
                .collect();
            (arm.clone(), mean)
        })
        .collect()
}

/// Draws the curves (at most 8 arms) with a legend.
pub fn curves_png(path: &Path, curves: &BTreeMap<String, Vec<(f64, f64)>>) -> Result<()> {
    let (w, h) = (900u32, 420u32);
    let mut buf = vec![255u8; (w * h * 3) as usize];
    let x_max = curves
        .values()
        .flat_map(|c| c.last().map(|p| p.0))
        .fold(100.0f64, f64::max);
    let y_max = curves
        .values()
        .flat_map(|c| c.iter().map(|p| p.1))
        .fold(0.5f64, f64::max);
    let mut legend = Vec::new();
    {
        let root = BitMapBackend::with_buffer(&mut buf, (w, h)).into_drawing_area();
        let area = root.clone().shrink((10, 20), (640, 390));
        area.fill(&RGBColor(248, 248, 250))
            .map_err(|e| anyhow!("{e:?}"))?;
        let mut chart = ChartBuilder::on(&area)
            .margin(6)
            .build_cartesian_2d(0.0..x_max, 0.0..y_max * 1.05)
            .map_err(|e| anyhow!("{e:?}"))?;
        for (k, (arm, points)) in curves.iter().take(PALETTE.len()).enumerate() {
            let colour = PALETTE[k];
            chart
                .draw_series(LineSeries::new(
                    points.iter().copied(),
                    colour.stroke_width(2),
                ))
                .map_err(|e| anyhow!("{e:?}"))?;
            let last = points.last().map_or(f64::NAN, |p| p.1);
            legend.push((colour, format!("{arm}: {last:.3}")));
        }
        chart
            .draw_series(
                ULTRALYTICS_VAL_MAP50
                    .iter()
                    .map(|p| Cross::new(*p, 5, BLACK.stroke_width(2))),
            )
            .map_err(|e| anyhow!("{e:?}"))?;
        root.present().map_err(|e| anyhow!("{e:?}"))?;
    }
    let mut img = RgbImage::from_raw(w, h, buf).ok_or_else(|| anyhow!("plot buffer size"))?;
    let text = Rgb([20, 20, 20]);
    draw_text(
        &mut img,
        12,
        4,
        &format!(
            "val mAP50 per epoch (0..{x_max:.0}), mean over seeds; y 0..{:.2}",
            y_max * 1.05
        ),
        text,
        1,
    );
    for (k, (c, label)) in legend.iter().enumerate() {
        let y = 30 + 16 * k as i64;
        for dx in 0..14 {
            for dy in 0..3 {
                img.put_pixel(665 + dx, (y + 3 + dy) as u32, Rgb([c.0, c.1, c.2]));
            }
        }
        draw_text(&mut img, 684, y, label, text, 1);
    }
    let y = 30 + 16 * legend.len() as i64;
    draw_text(&mut img, 665, y, "x: ultralytics, same setup", text, 1);
    let tmp = path.with_extension("png.tmp");
    img.save_with_format(&tmp, image::ImageFormat::Png)?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_curves_and_averages_seeds() {
        let dir = tempfile::tempdir().unwrap();
        let csv = dir.path().join("results.csv");
        std::fs::write(
            &csv,
            "epoch,train/box_loss,metrics/mAP50(B)\n1,3.0,0.1\n2,2.9,0.3\n",
        )
        .unwrap();
        let c = val_curve(&csv).unwrap();
        assert_eq!(c, [(1, 0.1), (2, 0.3)]);
        let mut curves = BTreeMap::new();
        curves.insert("a".to_string(), vec![c.clone(), vec![(1, 0.3)]]);
        let m = mean_curves(&curves);
        assert_eq!(m["a"].len(), 1);
        assert!((m["a"][0].1 - 0.2).abs() < 1e-12);
        let png = dir.path().join("curves.png");
        curves_png(&png, &m).unwrap();
        assert!(image::open(&png).is_ok());
        std::fs::write(&csv, "epoch,x\n1,2\n").unwrap();
        assert!(val_curve(&csv).unwrap().is_empty());
    }
}
