//! Response distillation on the head outputs, over all anchor points.
//!
//! Classes: the head scores each class with its own sigmoid, so the
//! divergence is per-class Bernoulli KL,
//! `KL(σ(t/T) ‖ σ(s/T)) = BCE(s/T, σ(t/T)) − H(σ(t/T))`, times T² (so the
//! gradient scale does not shrink with T, as in Hinton et al.). Each anchor
//! is weighted by how confident either network is there, `max_c
//! max(σ(t), σ(s))` + a small floor: most anchors are easy background for
//! both, and an unweighted mean would drown the few that matter; the
//! student's own confidence keeps its false positives in the loss.
//!
//! Boxes (localisation distillation, LD): KL between the teacher's and the
//! student's DFL distributions (softmax over the 16 bins of each side, at
//! their own temperature T_ld, 10 in LD's paper, times T_ld²), weighted by
//! the teacher's class confidence only, since a box distribution means
//! nothing where there is no object.

use anyhow::Result;
use candle_core::Tensor;

use crate::trainer::model::{flatten_levels, REG_MAX};

/// `ln(1 + e^{−|x|})`, the stable part of BCE with logits.
fn log1p_exp_neg_abs(x: &Tensor) -> Result<Tensor> {
    Ok((x.abs()?.neg()?.exp()? + 1.0)?.log()?)
}

/// Returns (class KL term, LD term), both scalars.
pub fn response_loss(
    student_levels: &[Tensor],
    teacher_levels: &[Tensor],
    nc: usize,
    temperature: f64,
    ld_temperature: f64,
) -> Result<(Tensor, Tensor)> {
    let s = flatten_levels(student_levels)?; // [B, 64 + nc, N]
    let t = flatten_levels(teacher_levels)?.detach();
    let (b, _, n) = s.dims3()?;
    let box_ch = 4 * REG_MAX;
    let tt = temperature;

    // Classes.
    let s_cls = s.narrow(1, box_ch, nc)?; // [B, nc, N]
    let t_cls = t.narrow(1, box_ch, nc)?;
    let x = (&s_cls / tt)?;
    let p_t = candle_nn::ops::sigmoid(&(&t_cls / tt)?)?;
    let bce = ((x.relu()? - (&x * &p_t)?)? + log1p_exp_neg_abs(&x)?)?;
    let p_c = p_t.clamp(1e-6f32, 1.0 - 1e-6)?;
    let entropy = ((&p_c * p_c.log()?)?
        + (p_c.affine(-1.0, 1.0)? * p_c.affine(-1.0, 1.0)?.log()?)?)?
    .neg()?;
    let kl = (bce - entropy)?.sum_keepdim(1)?; // [B, 1, N]
    let conf_t = candle_nn::ops::sigmoid(&t_cls)?.max_keepdim(1)?; // [B, 1, N]
    let conf_s = candle_nn::ops::sigmoid(&s_cls.detach())?.max_keepdim(1)?;
    let w = (conf_t.maximum(&conf_s)? + 0.02)?;
    let cls = ((kl * &w)?.sum_all()? / w.sum_all()?)?.affine(tt * tt, 0.0)?;

    // Boxes: [B, 4, 16, N], softmax over the bins.
    let s_box = s.narrow(1, 0, box_ch)?.reshape((b, 4, REG_MAX, n))?;
    let t_box = t.narrow(1, 0, box_ch)?.reshape((b, 4, REG_MAX, n))?;
    let tl = ld_temperature;
    let log_p_s = candle_nn::ops::log_softmax(&(s_box / tl)?, 2)?;
    let log_p_t = candle_nn::ops::log_softmax(&(t_box / tl)?, 2)?;
    let kl_box = (log_p_t.exp()? * (&log_p_t - log_p_s)?)?
        .sum(2)? // [B, 4, N]
        .mean_keepdim(1)?; // [B, 1, N]
    let ld =
        ((kl_box * &conf_t)?.sum_all()? / (conf_t.sum_all()? + 1e-6)?)?.affine(tl * tl, 0.0)?;
    Ok((cls, ld))
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn levels(seed: f32) -> Vec<Tensor> {
        [(4, 4), (2, 2), (1, 1)]
            .iter()
            .map(|&(h, w)| Tensor::randn(seed, 2f32, (2, 64 + 3, h, w), &Device::Cpu).unwrap())
            .collect()
    }

    #[test]
    fn zero_when_student_equals_teacher_and_positive_otherwise() {
        let t = levels(0.0);
        let (cls, ld) = response_loss(&t, &t, 3, 2.0, 10.0).unwrap();
        assert!(cls.to_scalar::<f32>().unwrap().abs() < 1e-4);
        assert!(ld.to_scalar::<f32>().unwrap().abs() < 1e-5);
        let s = levels(1.0);
        let (cls, ld) = response_loss(&s, &t, 3, 2.0, 10.0).unwrap();
        assert!(cls.to_scalar::<f32>().unwrap() > 0.01);
        assert!(ld.to_scalar::<f32>().unwrap() > 0.01);
    }

    #[test]
    fn bernoulli_kl_matches_the_formula() {
        // one anchor, one class: s = 1, t = 3, T = 1
        let mk = |v: f32| {
            let mut x = vec![0f32; 65];
            x[64] = v;
            vec![Tensor::from_vec(x, (1, 65, 1, 1), &Device::Cpu).unwrap()]
        };
        let (cls, _) = response_loss(&mk(1.0), &mk(3.0), 1, 1.0, 1.0).unwrap();
        let sig = |x: f64| 1.0 / (1.0 + (-x).exp());
        let (p, q) = (sig(3.0), sig(1.0));
        let kl = p * (p / q).ln() + (1.0 - p) * ((1.0 - p) / (1.0 - q)).ln();
        let got = cls.to_scalar::<f32>().unwrap() as f64;
        assert!((got - kl).abs() < 1e-4, "{got} vs {kl}");
    }
}
