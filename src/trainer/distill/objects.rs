//! Where the objects are, for the distillation losses: per image a list of
//! boxes (ground truth, or the teacher's confident detections on unlabeled
//! pairs), the pyramid level each box is pooled from, and foreground masks
//! per level.

use crate::shared::bbox::BBox;
use crate::trainer::model::STRIDES;
use anyhow::Result;
use candle_core::{Device, Tensor};

/// The level an object of this size is pooled from: the finest level whose
/// 8×8-cell window still covers the box's longer side (P3 up to 64 px, P4
/// up to 128 px, P5 beyond), as FPN assigns RoIs by size.
pub fn level_of(b: &BBox) -> usize {
    let side = b.width().max(b.height());
    STRIDES
        .iter()
        .position(|&s| side <= 8.0 * s as f32)
        .unwrap_or(STRIDES.len() - 1)
}

/// Cells `(y, x)` of a `h × w` grid with stride `s` whose centres lie in
/// `b`; at least the cell holding the box centre, so tiny boxes pool
/// something.
pub fn cells_in(b: &BBox, s: usize, h: usize, w: usize) -> Vec<(usize, usize)> {
    let s = s as f32;
    let mut cells = Vec::new();
    for y in 0..h {
        let cy = (y as f32 + 0.5) * s;
        if cy < b.y1 || cy > b.y2 {
            continue;
        }
        for x in 0..w {
            let cx = (x as f32 + 0.5) * s;
            if cx >= b.x1 && cx <= b.x2 {
                cells.push((y, x));
            }
        }
    }
    if cells.is_empty() {
        let (cx, cy) = b.center();
        let x = ((cx / s).floor().max(0.0) as usize).min(w - 1);
        let y = ((cy / s).floor().max(0.0) as usize).min(h - 1);
        cells.push((y, x));
    }
    cells
}

/// `[B, 1, h, w]` mask: 1 where a cell centre lies in one of that image's
/// boxes, else 0.
pub fn box_mask(
    boxes: &[Vec<BBox>],
    stride: usize,
    h: usize,
    w: usize,
    device: &Device,
) -> Result<Tensor> {
    let mut m = vec![0f32; boxes.len() * h * w];
    for (i, img) in boxes.iter().enumerate() {
        for b in img {
            for (y, x) in cells_in(b, stride, h, w) {
                m[i * h * w + y * w + x] = 1.0;
            }
        }
    }
    Ok(Tensor::from_vec(m, (boxes.len(), 1, h, w), device)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_by_size_and_cells() {
        assert_eq!(level_of(&BBox::new(0., 0., 20., 40.)), 0);
        assert_eq!(level_of(&BBox::new(0., 0., 100., 40.)), 1);
        assert_eq!(level_of(&BBox::new(0., 0., 300., 40.)), 2);
        // a 16×16 box at (8, 8) on stride 8 covers the centres (12, 12), (20, 12), …
        let c = cells_in(&BBox::new(8., 8., 24., 24.), 8, 4, 4);
        assert_eq!(c, [(1, 1), (1, 2), (2, 1), (2, 2)]);
        // a tiny box between centres still gets its centre cell
        assert_eq!(cells_in(&BBox::new(1., 1., 2., 2.), 8, 4, 4), [(0, 0)]);
        let m = box_mask(
            &[vec![BBox::new(8., 8., 24., 24.)], vec![]],
            8,
            4,
            4,
            &Device::Cpu,
        )
        .unwrap();
        assert_eq!(m.sum_all().unwrap().to_scalar::<f32>().unwrap(), 4.0);
    }
}
