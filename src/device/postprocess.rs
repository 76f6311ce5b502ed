//! The daemon's postprocess: model output → the detections a frame
//! reports. On top of [`crate::shared::nms`] (the `[4 + nc, N]` layout,
//! candidates, class-aware NMS) it applies per-class thresholds, area
//! limits and zones (polygons kept or excluded), and maps boxes back from
//! model-input pixels to the source frame.

use crate::shared::bbox::{BBox, Detection};
use crate::shared::letterbox::Letterbox;
use crate::shared::nms::{candidates, candidates_multi_label, nms, NmsParams};

/// Which part of the frame a [`Zone`] keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ZoneMode {
    /// Only objects inside count.
    Include,
    /// Objects inside are ignored.
    Exclude,
}

/// A polygon over the source frame. An object is inside when its foot
/// point (bottom centre of the box: where it stands) is inside the polygon.
#[derive(Debug, Clone, PartialEq)]
pub struct Zone {
    pub name: String,
    pub mode: ZoneMode,
    /// Vertices as fractions of the frame's width and height (0..1), so a
    /// zone survives a change of capture resolution.
    pub points: Vec<(f32, f32)>,
}

impl Zone {
    /// Even-odd rule; `(x, y)` in fractions of the frame.
    pub fn contains(&self, x: f32, y: f32) -> bool {
        let p = &self.points;
        let mut inside = false;
        let mut j = p.len().wrapping_sub(1);
        for i in 0..p.len() {
            let ((xi, yi), (xj, yj)) = (p[i], p[j]);
            if (yi > y) != (yj > y) && x < (xj - xi) * (y - yi) / (yj - yi) + xi {
                inside = !inside;
            }
            j = i;
        }
        inside
    }
}

/// Filters applied on top of [`NmsParams`], in source-frame pixels.
#[derive(Debug, Clone, Default)]
pub struct DetectFilter {
    /// Per-class confidence thresholds (class id → threshold) replacing the
    /// global one for that class.
    pub class_conf: Vec<(usize, f32)>,
    /// Boxes smaller or larger than this (source pixels²) are dropped.
    pub min_area_px: f32,
    pub max_area_px: Option<f32>,
    pub zones: Vec<Zone>,
}

impl DetectFilter {
    fn conf_of(&self, class_id: usize, global: f32) -> f32 {
        self.class_conf
            .iter()
            .find(|(c, _)| *c == class_id)
            .map_or(global, |(_, t)| *t)
    }

    /// Whether a box (source pixels) of a `src_w × src_h` frame passes the
    /// area and zone filters.
    pub fn keeps(&self, b: &BBox, src_w: u32, src_h: u32) -> bool {
        let area = b.area();
        if area < self.min_area_px || self.max_area_px.is_some_and(|m| area > m) {
            return false;
        }
        if self.zones.is_empty() {
            return true;
        }
        let (fx, fy) = ((b.x1 + b.x2) / 2.0 / src_w as f32, b.y2 / src_h as f32);
        let any_include = self.zones.iter().any(|z| z.mode == ZoneMode::Include);
        let included = !any_include
            || self
                .zones
                .iter()
                .any(|z| z.mode == ZoneMode::Include && z.contains(fx, fy));
        let excluded = self
            .zones
            .iter()
            .any(|z| z.mode == ZoneMode::Exclude && z.contains(fx, fy));
        included && !excluded
    }
}

/// The daemon's postprocess: candidates (per-class thresholds), area and
/// zone filters, class-aware NMS in model-input pixels (as ultralytics),
/// then boxes mapped back to the `src_w × src_h` frame and clipped.
pub fn frame_detections(
    output: &[f32],
    nc: usize,
    p: &NmsParams,
    filter: &DetectFilter,
    lb: &Letterbox,
    src_w: u32,
    src_h: u32,
) -> Vec<Detection> {
    let lowest = filter
        .class_conf
        .iter()
        .map(|(_, t)| *t)
        .fold(p.conf, f32::min);
    let cands = if p.multi_label {
        candidates_multi_label(output, nc, lowest)
    } else {
        candidates(output, nc, lowest)
    };
    let cands = cands
        .into_iter()
        .filter(|d| {
            d.score >= filter.conf_of(d.class_id, p.conf)
                && filter.keeps(&lb.to_source(&d.bbox, src_w, src_h), src_w, src_h)
        })
        .collect();
    let mut kept = nms(cands, p.iou, p.max_det);
    for d in &mut kept {
        d.bbox = lb.to_source(&d.bbox, src_w, src_h);
    }
    kept
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shared::nms::output_from_anchor_rows;
    #[test]
    fn filters_by_class_conf_area_and_zone() {
        // anchors: class 0 at 0.3 (small), class 1 at 0.3 (large), class 0 at 0.9 in the top half
        let out = output_from_anchor_rows(&[
            [10.0, 90.0, 4.0, 4.0, 0.3, 0.0],
            [50.0, 80.0, 40.0, 40.0, 0.0, 0.3],
            [50.0, 10.0, 10.0, 10.0, 0.9, 0.0],
        ]);
        let lb = Letterbox::new(100, 100, 100, 100);
        let p = NmsParams {
            conf: 0.5,
            ..NmsParams::PREDICT
        };
        let none = DetectFilter::default();
        assert_eq!(frame_detections(&out, 2, &p, &none, &lb, 100, 100).len(), 1);
        let per_class = DetectFilter {
            class_conf: vec![(1, 0.2)],
            ..Default::default()
        };
        let d = frame_detections(&out, 2, &p, &per_class, &lb, 100, 100);
        assert_eq!(d.iter().map(|d| d.class_id).collect::<Vec<_>>(), [0, 1]);
        let area = DetectFilter {
            class_conf: vec![(0, 0.1), (1, 0.1)],
            min_area_px: 20.0,
            max_area_px: Some(1000.0),
            ..Default::default()
        };
        let d = frame_detections(&out, 2, &p, &area, &lb, 100, 100);
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].score, 0.9);
        // exclude the top half: only the bottom objects remain
        let zone = DetectFilter {
            class_conf: vec![(0, 0.1), (1, 0.1)],
            zones: vec![Zone {
                name: "sky".into(),
                mode: ZoneMode::Exclude,
                points: vec![(0.0, 0.0), (1.0, 0.0), (1.0, 0.5), (0.0, 0.5)],
            }],
            ..Default::default()
        };
        let d = frame_detections(&out, 2, &p, &zone, &lb, 100, 100);
        assert_eq!(d.len(), 2);
        assert!(d.iter().all(|d| d.bbox.y2 > 50.0));
        // a letterboxed frame: boxes come back in source pixels
        let lb = Letterbox::new(200, 100, 100, 100);
        let d = frame_detections(&out, 2, &p, &none, &lb, 200, 100);
        assert_eq!(d[0].bbox, BBox::new(90.0, 0.0, 110.0, 0.0));
    }
}
