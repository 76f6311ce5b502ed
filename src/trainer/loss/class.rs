//! The classification term of the loss: binary cross-entropy with logits of
//! every anchor's class scores against the assigner's soft target scores
//! (ultralytics' `BCEWithLogitsLoss(reduction="none")`, summed).

use anyhow::Result;
use candle_core::Tensor;

/// Elementwise `BCEWithLogits(x, t)` in the stable form
/// `max(x, 0) − x·t + ln(1 + e^{−|x|})` (gradient `σ(x) − t`, also at 0).
pub fn bce_with_logits(x: &Tensor, t: &Tensor) -> Result<Tensor> {
    let soft = (x.abs()?.neg()?.exp()? + 1.0)?.log()?;
    Ok(((x.relu()? - (x * t)?)? + soft)?)
}

/// The class term `Σ BCE(scores, target_scores) / tss` (scalar, no gain)
/// over all anchors, background included: `pred_scores [B, N, nc]` logits,
/// `target_scores [B, N, nc]`.
pub(super) fn class_term(
    pred_scores: &Tensor,
    target_scores: &Tensor,
    target_scores_sum: f32,
) -> Result<Tensor> {
    Ok((bce_with_logits(pred_scores, target_scores)?.sum_all()? / target_scores_sum as f64)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    #[test]
    fn bce_value_and_gradient() {
        // x = 0: ln 2 for any t, gradient σ(0) − t = 0.5 − t.
        // x = 2, t = 0.25: 2 − 0.5 + ln(1 + e⁻²) = 1.626928; gradient
        // σ(2) − 0.25 = 0.6307971. x = −30, t = 1: 30 (+ 9e-14).
        let x = Var::from_vec(vec![0f32, 0.0, 2.0, -30.0], 4, &Device::Cpu).unwrap();
        let t = Tensor::from_vec(vec![0f32, 0.8, 0.25, 1.0], 4, &Device::Cpu).unwrap();
        let l = bce_with_logits(x.as_tensor(), &t).unwrap();
        let v: Vec<f32> = l.to_vec1().unwrap();
        let expect = [
            std::f32::consts::LN_2,
            std::f32::consts::LN_2,
            1.626928,
            30.0,
        ];
        for (a, b) in v.iter().zip(expect) {
            assert!((a - b).abs() < 1e-5, "{v:?}");
        }
        let g: Vec<f32> = l
            .sum_all()
            .unwrap()
            .backward()
            .unwrap()
            .get(&x)
            .unwrap()
            .to_vec1()
            .unwrap();
        let expect = [0.5, -0.3, 0.6307971, -1.0];
        for (a, b) in g.iter().zip(expect) {
            assert!((a - b).abs() < 1e-5, "{g:?}");
        }
    }
}
