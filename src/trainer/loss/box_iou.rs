//! The box term of the loss (ultralytics `BboxLoss`'s IoU part):
//! `1 − CIoU(pred, target)` per foreground anchor, on tensors so that the
//! gradient reaches the predicted boxes.
//!
//! Candle has no `atan`, which CIoU's aspect term needs; [`atan`] builds it
//! from differentiable ops (three half-angle reductions and an odd Taylor
//! polynomial, error below 1e-9 before f32 rounding).

use anyhow::Result;
use candle_core::{Tensor, D};

use crate::trainer::assign::IOU_EPS;

/// `atan` from differentiable candle ops, on any device: three half-angle
/// steps `y ← y / (1 + √(1 + y²))` bring `|y| ≤ tan(π/16) ≈ 0.199`, then
/// `atan(x) = 8 · (y − y³/3 + … − y¹¹/11)` (next term < 6e-11).
pub fn atan(x: &Tensor) -> Result<Tensor> {
    let mut y = x.clone();
    for _ in 0..3 {
        let den = ((y.sqr()? + 1.0)?.sqrt()? + 1.0)?;
        y = (y / den)?;
    }
    let y2 = y.sqr()?;
    let mut p = Tensor::full(1.0f32 / 11.0, y.shape(), y.device())?.to_dtype(y.dtype())?;
    for c in [1.0 / 9.0, 1.0 / 7.0, 1.0 / 5.0, 1.0 / 3.0, 1.0] {
        // p ← c − y² · p
        p = (&y2 * &p)?.affine(-1.0, c)?;
    }
    Ok(((y * p)? * 8.0)?)
}

/// Tensor CIoU of `xyxy` boxes `box1 [..., 4]` and `box2 [..., 4]` (same
/// shape), giving `[...]`. Ultralytics' `bbox_iou(xywh=False, CIoU=True)`
/// including its eps placement and its detached `alpha`; gradients flow into
/// both boxes.
pub fn ciou_tensor(box1: &Tensor, box2: &Tensor) -> Result<Tensor> {
    let eps = IOU_EPS as f64;
    let parts = |b: &Tensor| -> Result<[Tensor; 4]> {
        let c = |i| -> Result<Tensor> { Ok(b.narrow(D::Minus1, i, 1)?.squeeze(D::Minus1)?) };
        Ok([c(0)?, c(1)?, c(2)?, c(3)?])
    };
    let [b1x1, b1y1, b1x2, b1y2] = parts(box1)?;
    let [b2x1, b2y1, b2x2, b2y2] = parts(box2)?;
    let w1 = (&b1x2 - &b1x1)?;
    let h1 = ((&b1y2 - &b1y1)? + eps)?;
    let w2 = (&b2x2 - &b2x1)?;
    let h2 = ((&b2y2 - &b2y1)? + eps)?;
    let iw = (b1x2.minimum(&b2x2)? - b1x1.maximum(&b2x1)?)?.relu()?;
    let ih = (b1y2.minimum(&b2y2)? - b1y1.maximum(&b2y1)?)?.relu()?;
    let inter = (iw * ih)?;
    let union = ((((&w1 * &h1)? + (&w2 * &h2)?)? - &inter)? + eps)?;
    let iou = (inter / union)?;
    let cw = (b1x2.maximum(&b2x2)? - b1x1.minimum(&b2x1)?)?;
    let ch = (b1y2.maximum(&b2y2)? - b1y1.minimum(&b2y1)?)?;
    let c2 = ((cw.sqr()? + ch.sqr()?)? + eps)?;
    let dx = (((&b2x1 + &b2x2)? - &b1x1)? - &b1x2)?;
    let dy = (((&b2y1 + &b2y2)? - &b1y1)? - &b1y2)?;
    let rho2 = ((dx.sqr()? + dy.sqr()?)? / 4.0)?;
    let d = (atan(&(w2 / h2)?)? - atan(&(w1 / h1)?)?)?;
    let v = (d.sqr()? * (4.0 / (std::f64::consts::PI * std::f64::consts::PI)))?;
    let alpha = (&v / ((&v - &iou)? + (1.0 + eps))?)?.detach();
    Ok((iou - ((rho2 / c2)? + (v * alpha)?)?)?)
}

/// The box term `Σ_fg (1 − CIoU(pred, target)) · w / tss` (scalar, no
/// gain): `pred_boxes [F, 4]` and `target_boxes [F, 4]` `xyxy` in grid
/// units, `weight [F]` each anchor's target-score sum.
pub(super) fn box_term(
    pred_boxes: &Tensor,
    target_boxes: &Tensor,
    weight: &Tensor,
    target_scores_sum: f32,
) -> Result<Tensor> {
    let iou = ciou_tensor(pred_boxes, target_boxes)?; // [F]
    Ok(((iou.affine(-1.0, 1.0)? * weight)?.sum_all()? / target_scores_sum as f64)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trainer::assign::ciou;
    use candle_core::Device;

    #[test]
    fn tensor_ciou_matches_plain_and_atan_is_accurate() {
        let pairs = [
            ([0.0f32, 0.0, 4.0, 2.0], [0.0f32, 0.0, 4.0, 2.0]),
            ([0.0, 0.0, 2.0, 2.0], [4.0, 0.0, 6.0, 2.0]),
            ([0.0, 0.0, 4.0, 4.0], [0.0, 0.0, 2.0, 2.0]),
            ([1.0, 0.0, 3.0, 2.0], [0.0, 0.0, 4.0, 2.0]),
            ([0.3, 1.2, 9.5, 2.0], [-3.0, 0.5, 4.0, 12.0]),
        ];
        let a: Vec<f32> = pairs.iter().flat_map(|p| p.0).collect();
        let b: Vec<f32> = pairs.iter().flat_map(|p| p.1).collect();
        let ta = Tensor::from_vec(a, (pairs.len(), 4), &Device::Cpu).unwrap();
        let tb = Tensor::from_vec(b, (pairs.len(), 4), &Device::Cpu).unwrap();
        let got: Vec<f32> = ciou_tensor(&ta, &tb).unwrap().to_vec1().unwrap();
        for (g, (p, q)) in got.iter().zip(&pairs) {
            assert!((g - ciou(p, q)).abs() < 1e-6, "{g} vs {}", ciou(p, q));
        }
        // Hand values (see assign::tests::iou_and_ciou_by_hand).
        assert!((got[0] - 1.0).abs() < 1e-6);
        assert!((got[1] + 0.4).abs() < 1e-6);
        assert!((got[2] - 0.1875).abs() < 1e-6);
        assert!((got[3] - 0.4967518).abs() < 2e-6);

        let xs: Vec<f32> = (-400..=400).map(|i| (i as f32 * 0.05).powi(3)).collect();
        let t = Tensor::from_vec(xs.clone(), xs.len(), &Device::Cpu).unwrap();
        let at: Vec<f32> = atan(&t).unwrap().to_vec1().unwrap();
        for (x, y) in xs.iter().zip(at) {
            assert!(
                (y as f64 - (*x as f64).atan()).abs() < 1e-6,
                "atan({x}) = {y}"
            );
        }
    }
}
