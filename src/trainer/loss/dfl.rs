//! Distribution focal loss (ultralytics `DFLoss`) and the DFL expectation
//! that turns the per-side bin logits into side distances.
//!
//! Each box side is a distribution over `reg_max` bins (grid units
//! `0..reg_max`); the decoded distance is its expectation, and the loss pulls
//! the two bins around the target distance up in proportion to how close
//! the target is to each.

use anyhow::{ensure, Context, Result};
use candle_core::{Tensor, D};

/// Softmax over the last dimension; the max is detached (it cancels).
fn softmax_last(x: &Tensor) -> Result<Tensor> {
    let max = x.max_keepdim(D::Minus1)?.detach();
    let e = x.broadcast_sub(&max)?.exp()?;
    Ok(e.broadcast_div(&e.sum_keepdim(D::Minus1)?)?)
}

/// Log-softmax over the last dimension; the max is detached (it cancels).
fn log_softmax_last(x: &Tensor) -> Result<Tensor> {
    let max = x.max_keepdim(D::Minus1)?.detach();
    let d = x.broadcast_sub(&max)?;
    let lse = d.exp()?.sum_keepdim(D::Minus1)?.log()?;
    Ok(d.broadcast_sub(&lse)?)
}

/// The DFL expectation: `[..., 4·reg_max]` logits to `[..., 4]` distances,
/// `Σ_i softmax(bins)_i · i` per side.
pub fn dfl_decode(pred_distri: &Tensor, reg_max: usize) -> Result<Tensor> {
    let dims = pred_distri.dims().to_vec();
    let c = *dims.last().context("dfl_decode: scalar input")?;
    ensure!(
        c == 4 * reg_max,
        "dfl_decode: last dim {c} is not 4 × {reg_max}"
    );
    let rows = pred_distri.elem_count() / reg_max;
    let p = softmax_last(&pred_distri.reshape((rows, reg_max))?)?;
    let proj = Tensor::arange(0u32, reg_max as u32, pred_distri.device())?
        .to_dtype(pred_distri.dtype())?
        .reshape((reg_max, 1))?;
    let mut out_dims = dims;
    *out_dims.last_mut().unwrap() = 4;
    Ok(p.matmul(&proj)?.reshape(out_dims)?)
}

/// Ultralytics' `DFLoss` per anchor: `pred_dist [F, 4·reg_max]` logits and
/// `target_ltrb [F]` side distances (grid units; clamped to
/// `[0, reg_max − 1 − 0.01]`). A target `d` between bins `l = ⌊d⌋` and
/// `l + 1` gives `(l + 1 − d) · CE(l) + (d − l) · CE(l + 1)` per side; the
/// four sides are averaged. Returns `[F]`.
pub fn dfl_loss(pred_dist: &Tensor, target_ltrb: &[[f32; 4]], reg_max: usize) -> Result<Tensor> {
    let f = target_ltrb.len();
    ensure!(
        pred_dist.dims() == [f, 4 * reg_max],
        "dfl_loss: pred_dist {:?} for {f} targets of 4 × {reg_max} bins",
        pred_dist.dims()
    );
    ensure!(reg_max >= 2, "dfl_loss: reg_max must be at least 2");
    let w = Tensor::from_vec(
        bin_weights(target_ltrb, reg_max),
        (f, 4 * reg_max),
        pred_dist.device(),
    )?
    .to_dtype(pred_dist.dtype())?;
    let logp =
        log_softmax_last(&pred_dist.reshape((f * 4, reg_max))?)?.reshape((f, 4 * reg_max))?;
    Ok((logp * w)?.sum(1)?.neg()?)
}

/// The cross-entropy weights of [`dfl_loss`], `[F·4·reg_max]` row-major:
/// per side, the two bins around the clamped target, each weighted by its
/// closeness and a quarter for the mean over the four sides.
fn bin_weights(target_ltrb: &[[f32; 4]], reg_max: usize) -> Vec<f32> {
    let mut w = vec![0f32; target_ltrb.len() * 4 * reg_max];
    let hi = reg_max as f32 - 1.0 - 0.01;
    for (i, t) in target_ltrb.iter().flatten().enumerate() {
        let t = t.clamp(0.0, hi);
        let tl = t as usize; // t ≥ 0: truncation is floor, as `.long()`
        let wl = (tl + 1) as f32 - t;
        w[i * reg_max + tl] = wl / 4.0;
        w[i * reg_max + tl + 1] = (1.0 - wl) / 4.0;
    }
    w
}

/// The DFL term `Σ_fg DFL(dist, target) · w / tss` (scalar, no gain):
/// `pred_dist [F, 4·reg_max]` the foreground logits, `target_ltrb [F]` their
/// side distances in grid units, `weight [F]` each anchor's target-score sum.
pub(super) fn dfl_term(
    pred_dist: &Tensor,
    target_ltrb: &[[f32; 4]],
    reg_max: usize,
    weight: &Tensor,
    target_scores_sum: f32,
) -> Result<Tensor> {
    let per_anchor = dfl_loss(pred_dist, target_ltrb, reg_max)?; // [F]
    Ok(((per_anchor * weight)?.sum_all()? / target_scores_sum as f64)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// Logits of one side: 0 except ln 4 at bin 3 and ln 2 at bin 4, so
    /// e^logit sums to 14 + 4 + 2 = 20 and p = 1/20, 4/20 (bin 3), 2/20 (bin 4).
    fn crafted_side() -> Vec<f32> {
        let mut v = vec![0f32; 16];
        v[3] = 4f32.ln();
        v[4] = 2f32.ln();
        v
    }

    #[test]
    fn dfl_by_hand() {
        let row: Vec<f32> = (0..4).flat_map(|_| crafted_side()).collect();
        let uniform = vec![0f32; 64];
        let x = Tensor::from_vec([row.clone(), uniform].concat(), (2, 64), &Device::Cpu).unwrap();
        // Target 3.3: bins 3 and 4 with weights 0.7 and 0.3.
        // Crafted: CE(3) = ln 20 − ln 4 = ln 5, CE(4) = ln 20 − ln 2 = ln 10:
        // 0.7 ln 5 + 0.3 ln 10 = 1.1266065 + 0.6907755 = 1.8173821 per side.
        // Uniform logits: CE = ln 16 for every bin: 2.7725887.
        let got: Vec<f32> = dfl_loss(&x, &[[3.3; 4], [3.3; 4]], 16)
            .unwrap()
            .to_vec1()
            .unwrap();
        assert!((got[0] - 1.8173821).abs() < 1e-5, "{got:?}");
        assert!((got[1] - 2.7725887).abs() < 1e-5, "{got:?}");
        // Sides averaged: targets 3 (CE ln 5 = 1.6094379), 4 (ln 10 =
        // 2.3025851), 0 (ln 20 = 2.9957323), 3.3 (1.8173821): mean 2.1812844.
        let x0 = x.narrow(0, 0, 1).unwrap();
        let got: Vec<f32> = dfl_loss(&x0, &[[3.0, 4.0, 0.0, 3.3]], 16)
            .unwrap()
            .to_vec1()
            .unwrap();
        assert!((got[0] - 2.1812844).abs() < 1e-5, "{got:?}");
        // Expectation of the crafted side: (3·4 + 4·2 + (120 − 3 − 4)·1)/20 =
        // 133/20 = 6.65; uniform: 7.5.
        let d: Vec<Vec<f32>> = dfl_decode(&x, 16).unwrap().to_vec2().unwrap();
        for v in &d[0] {
            assert!((v - 6.65).abs() < 1e-5, "{d:?}");
        }
        for v in &d[1] {
            assert!((v - 7.5).abs() < 1e-5, "{d:?}");
        }
    }
}
