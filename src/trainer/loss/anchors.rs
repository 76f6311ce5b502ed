//! Anchor points and the two box encodings the loss moves between: `xyxy`
//! boxes and `(l, t, r, b)` side distances from an anchor (ultralytics'
//! `make_anchors`, `dist2bbox` and `bbox2dist` in `utils/tal.py`).
//!
//! All in grid units of the anchor's level (× stride for input pixels).

use anyhow::Result;
use candle_core::{Tensor, D};

/// Ultralytics' `make_anchors`: for each level of grid `(h, w)`, points
/// `(x + offset, y + offset)` row by row (y outer), in that level's grid
/// units, and the level's stride per point. The training loss uses
/// `offset = 0.5`.
pub fn make_anchors(
    shapes: &[(usize, usize)],
    strides: &[f32],
    offset: f32,
) -> (Vec<[f32; 2]>, Vec<f32>) {
    let mut points = Vec::new();
    let mut stride = Vec::new();
    for (&(h, w), &s) in shapes.iter().zip(strides) {
        for y in 0..h {
            for x in 0..w {
                points.push([x as f32 + offset, y as f32 + offset]);
                stride.push(s);
            }
        }
    }
    (points, stride)
}

/// Ultralytics' `dist2bbox(xywh=False)`: side distances `(l, t, r, b)` from
/// an anchor point to an `xyxy` box.
pub fn dist2bbox(dist: &[f32; 4], anchor: &[f32; 2]) -> [f32; 4] {
    [
        anchor[0] - dist[0],
        anchor[1] - dist[1],
        anchor[0] + dist[2],
        anchor[1] + dist[3],
    ]
}

/// Ultralytics' `bbox2dist`: `(l, t, r, b)` distances from the anchor to the
/// sides of an `xyxy` box, clamped to `[0, reg_max − 0.01]`. The loss passes
/// `reg_max − 1` (15 for 16 bins), so targets stay below the last bin.
pub fn bbox2dist(anchor: &[f32; 2], bbox: &[f32; 4], reg_max: f32) -> [f32; 4] {
    let hi = reg_max - 0.01;
    [
        (anchor[0] - bbox[0]).clamp(0.0, hi),
        (anchor[1] - bbox[1]).clamp(0.0, hi),
        (bbox[2] - anchor[0]).clamp(0.0, hi),
        (bbox[3] - anchor[1]).clamp(0.0, hi),
    ]
}

/// Tensor `dist2bbox(xywh=False)`: `distance [..., N, 4]` (l, t, r, b) and
/// `anchor_points [N, 2]` to `xyxy [..., N, 4]`.
pub fn dist2bbox_tensor(distance: &Tensor, anchor_points: &Tensor) -> Result<Tensor> {
    let lt = distance.narrow(D::Minus1, 0, 2)?;
    let rb = distance.narrow(D::Minus1, 2, 2)?;
    let x1y1 = anchor_points.broadcast_sub(&lt)?;
    let x2y2 = anchor_points.broadcast_add(&rb)?;
    Ok(Tensor::cat(&[&x1y1, &x2y2], D::Minus1)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn dist2bbox_bbox2dist_by_hand_and_round_trip() {
        // Anchor (2.5, 3.5), distances l 1, t 2, r 3, b 4:
        // box (2.5 − 1, 3.5 − 2, 2.5 + 3, 3.5 + 4) = (1.5, 1.5, 5.5, 7.5).
        let b = dist2bbox(&[1.0, 2.0, 3.0, 4.0], &[2.5, 3.5]);
        assert_eq!(b, [1.5, 1.5, 5.5, 7.5]);
        assert_eq!(bbox2dist(&[2.5, 3.5], &b, 15.0), [1.0, 2.0, 3.0, 4.0]);
        // Clamped to [0, 15 − 0.01]: far sides to 14.99, a side behind the
        // anchor to 0.
        assert_eq!(
            bbox2dist(&[0.5, 0.5], &[-20.0, 0.0, 0.25, 30.0], 15.0),
            [14.99, 0.5, 0.0, 14.99]
        );
        // Tensor version, anchors [N, 2] against [B, N, 4].
        let d = Tensor::from_vec(
            vec![1.0f32, 2.0, 3.0, 4.0, 0.0, 0.0, 0.0, 0.0],
            (1, 2, 4),
            &Device::Cpu,
        )
        .unwrap();
        let a = Tensor::from_vec(vec![2.5f32, 3.5, 0.5, 0.5], (2, 2), &Device::Cpu).unwrap();
        let got: Vec<Vec<Vec<f32>>> = dist2bbox_tensor(&d, &a).unwrap().to_vec3().unwrap();
        assert_eq!(
            got[0],
            vec![vec![1.5, 1.5, 5.5, 7.5], vec![0.5, 0.5, 0.5, 0.5]]
        );
    }

    #[test]
    fn anchors_run_level_by_level_row_by_row() {
        let (p, s) = make_anchors(&[(2, 3), (1, 1)], &[8.0, 16.0], 0.5);
        let expect = [
            [0.5, 0.5],
            [1.5, 0.5],
            [2.5, 0.5],
            [0.5, 1.5],
            [1.5, 1.5],
            [2.5, 1.5],
            [0.5, 0.5],
        ];
        assert_eq!(p, expect);
        assert_eq!(s, vec![8.0, 8.0, 8.0, 8.0, 8.0, 8.0, 16.0]);
    }
}
