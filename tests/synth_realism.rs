//! Measurable properties of the generated scenes that later work relies on:
//! at night objects are faint but present in RGB (contrast about 1–3× the
//! noise), by day they are clear, and in IR they stand out in every
//! condition.

use irdistill::shared::bbox::BBox;
use irdistill::shared::condition::Condition;
use irdistill::shared::synth::{camera, raster, Generator, SynthConfig};

/// Mean of channel-averaged values inside `b` (shrunk to its core).
fn mean_in(img: &[f32], w: usize, b: &BBox, shrink: f32) -> f32 {
    let h = img.len() / w;
    let (cx, cy) = b.center();
    let (hw, hh) = (b.width() * shrink / 2.0, b.height() * shrink / 2.0);
    let (mut s, mut n) = (0.0, 0);
    for y in (cy - hh) as usize..((cy + hh) as usize + 1).min(h) {
        for x in (cx - hw) as usize..((cx + hw) as usize + 1).min(w) {
            s += img[y * w + x];
            n += 1;
        }
    }
    s / n.max(1) as f32
}

/// Mean in a ring 2–4 px outside `b`, clipped to the frame.
fn ring_mean(img: &[f32], w: usize, h: usize, b: &BBox) -> f32 {
    let (mut s, mut n) = (0.0, 0);
    let (x0, y0) = (
        (b.x1 - 4.0).max(0.0) as usize,
        (b.y1 - 4.0).max(0.0) as usize,
    );
    let (x1, y1) = (
        ((b.x2 + 4.0) as usize).min(w - 1),
        ((b.y2 + 4.0) as usize).min(h - 1),
    );
    for y in y0..=y1 {
        for x in x0..=x1 {
            let (fx, fy) = (x as f32 + 0.5, y as f32 + 0.5);
            let outside = fx < b.x1 - 2.0 || fx > b.x2 + 2.0 || fy < b.y1 - 2.0 || fy > b.y2 + 2.0;
            if outside {
                s += img[y * w + x];
                n += 1;
            }
        }
    }
    s / n.max(1) as f32
}

/// Median over objects of |object − surroundings| / noise std, in RGB, for
/// one condition. Noise std is measured from two renders of the same scene
/// with different sensor-noise seeds.
fn rgb_contrast_to_noise(condition: Condition) -> f32 {
    let gen = Generator::new(
        SynthConfig {
            conditions: vec![condition],
            ..Default::default()
        },
        3,
    )
    .unwrap();
    let mut ratios = Vec::new();
    for i in 0..40 {
        let mut scene = gen.scene(i);
        let layers = raster::paint(&scene);
        let a = camera::render_rgb(&scene, &layers);
        scene.noise_seed ^= 0xdead_beef;
        let b = camera::render_rgb(&scene, &layers);
        let (w, h) = (a.width() as usize, a.height() as usize);
        let grey = |img: &image::RgbImage| -> Vec<f32> {
            img.pixels()
                .map(|p| (p.0[0] as f32 + p.0[1] as f32 + p.0[2] as f32) / 3.0)
                .collect()
        };
        let (ga, gb) = (grey(&a), grey(&b));
        let clean: Vec<f32> = ga.iter().zip(&gb).map(|(x, y)| (x + y) / 2.0).collect();
        let diff: Vec<f32> = ga.iter().zip(&gb).map(|(x, y)| x - y).collect();
        for l in &layers.labels {
            if l.bbox.width() < 6.0 || l.bbox.height() < 10.0 {
                continue;
            }
            let obj = mean_in(&clean, w, &l.bbox, 0.4);
            let bg = ring_mean(&clean, w, h, &l.bbox);
            // local noise: std of the difference image over the box, / sqrt(2)
            let d_mean = mean_in(&diff, w, &l.bbox, 1.0);
            let d_sq: Vec<f32> = diff.iter().map(|d| (d - d_mean) * (d - d_mean)).collect();
            let sigma = (mean_in(&d_sq, w, &l.bbox, 1.0) / 2.0).sqrt().max(0.3);
            ratios.push((obj - bg).abs() / sigma);
        }
    }
    ratios.sort_by(f32::total_cmp);
    ratios[ratios.len() / 2]
}

#[test]
fn night_objects_are_faint_but_present_in_rgb() {
    let night = rgb_contrast_to_noise(Condition::Night);
    let day = rgb_contrast_to_noise(Condition::Day);
    eprintln!("median object contrast / noise std: night {night:.2}, day {day:.2}");
    assert!(
        (1.0..=3.5).contains(&night),
        "night contrast-to-noise {night:.2} outside ~1–3"
    );
    assert!(
        day > 3.0 * night,
        "day {day:.2} should be far clearer than night {night:.2}"
    );
}

#[test]
fn objects_stand_out_in_ir_in_every_condition() {
    for condition in Condition::ALL {
        let gen = Generator::new(
            SynthConfig {
                conditions: vec![condition],
                ..Default::default()
            },
            5,
        )
        .unwrap();
        let mut contrasts = Vec::new();
        for i in 0..30 {
            let p = gen.pair(i).pair;
            let (w, h) = (p.ir.width() as usize, p.ir.height() as usize);
            let ir: Vec<f32> = p.ir.pixels().map(|v| v.0[0] as f32).collect();
            for l in p
                .labels
                .iter()
                .filter(|l| l.bbox.height() >= 10.0 && l.bbox.width() >= 6.0)
            {
                contrasts
                    .push((mean_in(&ir, w, &l.bbox, 0.4) - ring_mean(&ir, w, h, &l.bbox)).abs());
            }
        }
        contrasts.sort_by(f32::total_cmp);
        let median = contrasts[contrasts.len() / 2];
        eprintln!("{condition}: median IR object contrast {median:.1} grey levels");
        // IR noise is about 3.5 grey levels: objects must be well above it
        assert!(median > 12.0, "{condition}: IR contrast {median:.1}");
    }
}

#[test]
fn misregistration_is_bounded_by_the_setting() {
    let mut config = SynthConfig::default();
    config.scene.max_misregistration_px = 0;
    let gen = Generator::new(config, 9).unwrap();
    assert!((0..20).all(|i| gen.scene(i).ir_shift_px == (0, 0)));
    let gen = Generator::new(SynthConfig::default(), 9).unwrap();
    let shifts: Vec<_> = (0..50).map(|i| gen.scene(i).ir_shift_px).collect();
    assert!(shifts.iter().all(|&(x, y)| x.abs() <= 2 && y.abs() <= 2));
    assert!(shifts.iter().any(|&s| s != (0, 0)));
}

#[test]
fn scenes_vary_in_object_size_and_count() {
    let gen = Generator::new(SynthConfig::default(), 2).unwrap();
    let (mut min_h, mut max_h, mut empty, mut crowded) = (f32::MAX, 0.0f32, 0, 0);
    for i in 0..300 {
        let labels = raster::paint(&gen.scene(i)).labels;
        empty += labels.is_empty() as usize;
        crowded += (labels.len() >= 5) as usize;
        for l in &labels {
            min_h = min_h.min(l.bbox.height().max(l.bbox.width()));
            max_h = max_h.max(l.bbox.height().max(l.bbox.width()));
        }
    }
    eprintln!(
        "largest side min {min_h:.1} max {max_h:.1}, {empty} empty, {crowded} with ≥5 objects"
    );
    assert!(
        min_h <= 10.0 && max_h >= 256.0 / 3.5,
        "sizes {min_h}..{max_h}"
    );
    assert!(
        empty >= 5 && crowded >= 20,
        "empty {empty}, crowded {crowded}"
    );
}
