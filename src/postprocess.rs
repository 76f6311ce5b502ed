//! Model output → detections: the ultralytics YOLOv8 output layout
//! `[4 + nc, N]` (cx, cy, w, h in input pixels, then per-class sigmoid
//! scores), confidence filtering, class-aware NMS and a detection cap.

use crate::bbox::{BBox, Detection};

#[derive(Debug, Clone, Copy)]
pub struct NmsParams {
    /// Global confidence threshold.
    pub conf: f32,
    pub iou: f32,
    pub max_det: usize,
    /// Every class at or above `conf` is a candidate (ultralytics'
    /// validation), not only each anchor's best class.
    pub multi_label: bool,
}

impl NmsParams {
    /// Ultralytics' validation settings: every candidate counts for mAP.
    pub const VAL: NmsParams = NmsParams {
        conf: 0.001,
        iou: 0.7,
        max_det: 300,
        multi_label: true,
    };
    /// Ultralytics' prediction defaults.
    pub const PREDICT: NmsParams = NmsParams {
        conf: 0.25,
        iou: 0.45,
        max_det: 300,
        multi_label: false,
    };
}

/// The box of anchor `a` (of `n`) with class `class_id` and `score`.
fn detection_at(output: &[f32], n: usize, a: usize, class_id: usize, score: f32) -> Detection {
    let (cx, cy, w, h) = (
        output[a],
        output[n + a],
        output[2 * n + a],
        output[3 * n + a],
    );
    Detection {
        class_id,
        score,
        bbox: BBox::from_cxcywh(cx, cy, w, h),
    }
}

/// Candidates of one image from a `[4 + nc, N]` row-major output: the best
/// class of each anchor when its score reaches `conf`.
pub fn candidates(output: &[f32], nc: usize, conf: f32) -> Vec<Detection> {
    let n = output.len() / (4 + nc);
    assert_eq!(output.len(), (4 + nc) * n, "output is not [4 + nc, N]");
    let mut out = Vec::new();
    for a in 0..n {
        let (mut best, mut best_c) = (f32::MIN, 0);
        for c in 0..nc {
            let s = output[(4 + c) * n + a];
            if s > best {
                best = s;
                best_c = c;
            }
        }
        if best >= conf && best.is_finite() {
            out.push(detection_at(output, n, a, best_c, best));
        }
    }
    out
}

/// Class-aware greedy NMS: keeps the highest-scoring box of each cluster of
/// same-class boxes overlapping above `iou`; at most `max_det`, by score.
pub fn nms(mut dets: Vec<Detection>, iou: f32, max_det: usize) -> Vec<Detection> {
    dets.sort_by(|a, b| b.score.total_cmp(&a.score));
    let mut kept: Vec<Detection> = Vec::new();
    for d in dets {
        if kept.len() >= max_det {
            break;
        }
        if kept
            .iter()
            .all(|k| k.class_id != d.class_id || k.bbox.iou(&d.bbox) <= iou)
        {
            kept.push(d);
        }
    }
    kept
}

/// Every (anchor, class) pair scoring at least `conf`.
pub fn candidates_multi_label(output: &[f32], nc: usize, conf: f32) -> Vec<Detection> {
    let n = output.len() / (4 + nc);
    assert_eq!(output.len(), (4 + nc) * n, "output is not [4 + nc, N]");
    let mut out = Vec::new();
    for a in 0..n {
        for c in 0..nc {
            let s = output[(4 + c) * n + a];
            if s >= conf && s.is_finite() {
                out.push(detection_at(output, n, a, c, s));
            }
        }
    }
    out
}

/// Candidates + NMS in one call.
pub fn detections(output: &[f32], nc: usize, p: &NmsParams) -> Vec<Detection> {
    let cands = if p.multi_label {
        candidates_multi_label(output, nc, p.conf)
    } else {
        candidates(output, nc, p.conf)
    };
    nms(cands, p.iou, p.max_det)
}

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
    lb: &crate::preprocess::Letterbox,
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

    #[test]
    fn decodes_layout_and_suppresses_duplicates() {
        // N = 3 anchors, nc = 2; anchors 0 and 1 overlap (same class), 2 is another class
        let n = 3;
        let mut out = vec![0.0f32; 6 * n];
        let rows = [
            [10.0, 10.0, 4.0, 4.0, 0.9, 0.1],
            [10.5, 10.0, 4.0, 4.0, 0.8, 0.1],
            [10.0, 10.0, 4.0, 4.0, 0.1, 0.7],
        ];
        for (a, r) in rows.iter().enumerate() {
            for (k, v) in r.iter().enumerate() {
                out[k * n + a] = *v;
            }
        }
        let d = detections(
            &out,
            2,
            &NmsParams {
                conf: 0.25,
                iou: 0.45,
                max_det: 10,
                multi_label: false,
            },
        );
        assert_eq!(d.len(), 2);
        assert_eq!((d[0].class_id, d[0].score), (0, 0.9));
        assert_eq!(d[0].bbox, BBox::new(8.0, 8.0, 12.0, 12.0));
        assert_eq!(d[1].class_id, 1);
        let capped = detections(
            &out,
            2,
            &NmsParams {
                conf: 0.25,
                iou: 0.45,
                max_det: 1,
                multi_label: false,
            },
        );
        assert_eq!(capped.len(), 1);
        // multi-label: every class above conf is a candidate, not just the best
        assert_eq!(candidates_multi_label(&out, 2, 0.05).len(), 6);
        assert_eq!(candidates(&out, 2, 0.05).len(), 3);
    }

    #[test]
    fn filters_by_class_conf_area_and_zone() {
        // anchors: class 0 at 0.3 (small), class 1 at 0.3 (large), class 0 at 0.9 in the top half
        let n = 3;
        let mut out = vec![0.0f32; 6 * n];
        let rows = [
            [10.0, 90.0, 4.0, 4.0, 0.3, 0.0],
            [50.0, 80.0, 40.0, 40.0, 0.0, 0.3],
            [50.0, 10.0, 10.0, 10.0, 0.9, 0.0],
        ];
        for (a, r) in rows.iter().enumerate() {
            for (k, v) in r.iter().enumerate() {
                out[k * n + a] = *v;
            }
        }
        let lb = crate::preprocess::Letterbox::new(100, 100, 100, 100);
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
        let lb = crate::preprocess::Letterbox::new(200, 100, 100, 100);
        let d = frame_detections(&out, 2, &p, &none, &lb, 200, 100);
        assert_eq!(d[0].bbox, BBox::new(90.0, 0.0, 110.0, 0.0));
    }
}
