//! Model output → detections: the ultralytics YOLOv8 output layout
//! `[4 + nc, N]` (cx, cy, w, h in input pixels, then per-class sigmoid
//! scores), confidence filtering, class-aware NMS and a detection cap.
//! The daemon (`device::postprocess`) and the trainer's validation decode
//! model outputs the same way, so both score what the other sees.

use crate::shared::bbox::{BBox, Detection};

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

/// A `[4 + nc, N]` row-major output from one row per anchor (cx, cy, w,
/// h, then the class scores): how tests write a model's output.
#[cfg(test)]
pub(crate) fn output_from_anchor_rows<const K: usize>(rows: &[[f32; K]]) -> Vec<f32> {
    let n = rows.len();
    let mut out = vec![0.0f32; K * n];
    for (a, r) in rows.iter().enumerate() {
        for (k, v) in r.iter().enumerate() {
            out[k * n + a] = *v;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_layout_and_suppresses_duplicates() {
        // N = 3 anchors, nc = 2; anchors 0 and 1 overlap (same class), 2 is another class
        let out = output_from_anchor_rows(&[
            [10.0, 10.0, 4.0, 4.0, 0.9, 0.1],
            [10.5, 10.0, 4.0, 4.0, 0.8, 0.1],
            [10.0, 10.0, 4.0, 4.0, 0.1, 0.7],
        ]);
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
}
