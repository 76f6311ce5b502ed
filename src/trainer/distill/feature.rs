//! Feature distillation: at each of P3/P4/P5 a 1×1 conv adapter f maps the
//! student's neck feature to the teacher's channels, and the squared error
//! `‖n(f(F_student)) − n(F_teacher)‖²` per cell is averaged with more
//! weight on the foreground.
//!
//! [`FeatureNorm::Batch`] (the default) follows PKD and FGD: n(·)
//! standardises each channel over the whole batch and all positions (the
//! two networks' activations differ in scale per channel, and matching raw
//! magnitudes would mostly teach the adapter those scales, while a per-image
//! normalisation blows the noise of a near-empty map up to unit variance
//! and makes it the target); then the foreground cells and the background
//! cells are averaged separately, `w_fg·mean_fg + w_bg·mean_bg`, so a few
//! objects are not drowned by the background, where the IR-only structure
//! that RGB cannot predict lives. [`FeatureNorm::Image`] is the first
//! recipe (per image and channel over H×W, one mean with per-cell weight
//! `1 + γ·fg`), kept as an ablation and for its checkpoints.

use crate::trainer::model::blocks::plain_conv;
use anyhow::Result;
use candle_core::{Module, Tensor};
use candle_nn::{Conv2d, VarBuilder};
use serde::{Deserialize, Serialize};

/// How feature maps are normalised and the cells weighted (`--feature-norm`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum FeatureNorm {
    /// Per channel over the batch (PKD); foreground and background means.
    Batch,
    /// Per image and channel over H×W; one mean weighted `1 + γ·fg`.
    Image,
}

impl FeatureNorm {
    /// What checkpoints written before this option distilled with.
    pub fn legacy() -> Self {
        FeatureNorm::Image
    }
}

pub struct FeatureAdapters {
    /// One 1×1 conv (with bias) per level, student C → teacher C.
    adapters: Vec<Conv2d>,
}

impl FeatureAdapters {
    pub fn load(vb: VarBuilder, student: [usize; 3], teacher: [usize; 3]) -> Result<Self> {
        let adapters = (0..3)
            .map(|l| plain_conv(vb.pp(l), student[l], teacher[l], 0.0))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self { adapters })
    }

    /// `student[l]`: `[B, Cs, H, W]`; `teacher[l]`: `[B, Ct, H, W]` (detached);
    /// `fg[l]`: `[B, 1, H, W]` in [0, 1]. Mean over the levels; `w_fg`, `w_bg`
    /// as [`FeatureNorm`] says.
    pub fn loss(
        &self,
        student: [&Tensor; 3],
        teacher: [&Tensor; 3],
        fg: &[Tensor],
        norm: FeatureNorm,
        w_fg: f64,
        w_bg: f64,
    ) -> Result<Tensor> {
        let mut total: Option<Tensor> = None;
        for l in 0..3 {
            let mapped = self.adapters[l].forward(student[l])?; // [B, Ct, H, W]
            let level = match norm {
                FeatureNorm::Batch => {
                    let diff = (standardise_batch(&mapped)? - standardise_batch(teacher[l])?)?;
                    let per_cell = diff.sqr()?.mean_keepdim(1)?; // [B, 1, H, W]
                    let fg_mean = weighted_mean(&per_cell, &fg[l])?;
                    let bg_mean = weighted_mean(&per_cell, &fg[l].affine(-1.0, 1.0)?)?;
                    (fg_mean.affine(w_fg, 0.0)? + bg_mean.affine(w_bg, 0.0)?)?
                }
                FeatureNorm::Image => {
                    let diff = (standardise(&mapped)? - standardise(teacher[l])?)?;
                    let per_cell = diff.sqr()?.mean_keepdim(1)?;
                    weighted_mean(&per_cell, &fg[l].affine(w_fg, 1.0)?)? // 1 + γ·fg
                }
            };
            total = Some(match total {
                None => level,
                Some(t) => (t + level)?,
            });
        }
        Ok((total.expect("three levels") / 3.0)?)
    }
}

/// `Σ x·w / Σ w` (0 when the weights are all 0).
fn weighted_mean(x: &Tensor, w: &Tensor) -> Result<Tensor> {
    Ok(((x * w)?.sum_all()? / (w.sum_all()? + 1e-6)?)?)
}

/// Per image and channel over H×W: `(x − mean) / (std + ε)`.
pub fn standardise(x: &Tensor) -> Result<Tensor> {
    let (b, c, h, w) = x.dims4()?;
    let flat = x.reshape((b, c, h * w))?;
    let centred = flat.broadcast_sub(&flat.mean_keepdim(2)?)?;
    let std = (centred.sqr()?.mean_keepdim(2)? + 1e-6)?.sqrt()?;
    Ok(centred.broadcast_div(&std)?.reshape((b, c, h, w))?)
}

/// Per channel over the batch and all positions (PKD):
/// `(x − mean_c) / (std_c + ε)`.
pub fn standardise_batch(x: &Tensor) -> Result<Tensor> {
    let (b, c, h, w) = x.dims4()?;
    let per_channel = x.transpose(0, 1)?.reshape((c, b * h * w))?; // [C, B·H·W]
    let mean = per_channel.mean_keepdim(1)?.reshape((1, c, 1, 1))?;
    let centred = x.broadcast_sub(&mean)?;
    let var = centred
        .transpose(0, 1)?
        .reshape((c, b * h * w))?
        .sqr()?
        .mean_keepdim(1)?
        .reshape((1, c, 1, 1))?;
    Ok(centred.broadcast_div(&(var + 1e-6)?.sqrt()?)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};
    use candle_nn::VarMap;

    fn identity_adapters(varmap: &VarMap) -> FeatureAdapters {
        let vb = VarBuilder::from_varmap(varmap, DType::F32, &Device::Cpu);
        let ad = FeatureAdapters::load(vb, [4, 4, 4], [4, 4, 4]).unwrap();
        for (name, var) in varmap.data().lock().unwrap().iter() {
            if name.ends_with("weight") {
                let eye = Tensor::eye(4, DType::F32, &Device::Cpu)
                    .unwrap()
                    .reshape((4, 4, 1, 1))
                    .unwrap();
                var.set(&eye).unwrap();
            }
        }
        ad
    }

    #[test]
    fn standardised_maps_and_zero_loss_on_a_perfect_match() {
        let x = Tensor::randn(3f32, 2f32, (2, 4, 5, 5), &Device::Cpu).unwrap();
        let n = standardise(&x).unwrap().reshape((2, 4, 25)).unwrap();
        let mean = n.mean(2).unwrap().abs().unwrap().max_all().unwrap();
        assert!(mean.to_scalar::<f32>().unwrap() < 1e-5);
        let var = n.sqr().unwrap().mean(2).unwrap().to_vec2::<f32>().unwrap();
        assert!(var.iter().flatten().all(|v| (v - 1.0).abs() < 1e-3));

        // per channel over the batch: zero mean, unit variance per channel
        let nb = standardise_batch(&x).unwrap();
        let per_c = nb.transpose(0, 1).unwrap().reshape((4, 50)).unwrap();
        let m = per_c.mean(1).unwrap().to_vec1::<f32>().unwrap();
        let v = per_c
            .sqr()
            .unwrap()
            .mean(1)
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        assert!(m.iter().all(|m| m.abs() < 1e-5), "{m:?}");
        assert!(v.iter().all(|v| (v - 1.0).abs() < 1e-3), "{v:?}");
        // … but not per image: the images keep their differences
        let first = nb
            .get(0)
            .unwrap()
            .mean_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        let second = nb
            .get(1)
            .unwrap()
            .mean_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!((first + second).abs() < 1e-4);

        // scale and shift per channel do not matter; identity adapter → 0 loss
        let varmap = VarMap::new();
        let ad = identity_adapters(&varmap);
        let t = (x.affine(2.0, 1.0)).unwrap();
        let fg = vec![Tensor::ones((2, 1, 5, 5), DType::F32, &Device::Cpu).unwrap(); 3];
        for norm in [FeatureNorm::Batch, FeatureNorm::Image] {
            let l = ad
                .loss([&x, &x, &x], [&t, &t, &t], &fg, norm, 2.0, 0.5)
                .unwrap();
            assert!(l.to_scalar::<f32>().unwrap() < 1e-6, "{norm:?}");
            let other = Tensor::randn(0f32, 1f32, (2, 4, 5, 5), &Device::Cpu).unwrap();
            let l = ad
                .loss([&x, &x, &x], [&other, &other, &other], &fg, norm, 2.0, 0.5)
                .unwrap();
            assert!(l.to_scalar::<f32>().unwrap() > 0.5, "{norm:?}");
        }
    }

    #[test]
    fn foreground_and_background_are_averaged_separately() {
        let varmap = VarMap::new();
        let ad = identity_adapters(&varmap);
        let x = Tensor::randn(0f32, 1f32, (1, 4, 4, 4), &Device::Cpu).unwrap();
        let t = Tensor::randn(0f32, 1f32, (1, 4, 4, 4), &Device::Cpu).unwrap();
        // one foreground cell of 16
        let mut m = vec![0f32; 16];
        m[5] = 1.0;
        let fg = vec![Tensor::from_vec(m, (1, 1, 4, 4), &Device::Cpu).unwrap(); 3];
        let loss = |w_fg, w_bg| {
            ad.loss(
                [&x, &x, &x],
                [&t, &t, &t],
                &fg,
                FeatureNorm::Batch,
                w_fg,
                w_bg,
            )
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
        };
        let diff = (standardise_batch(&x).unwrap() - standardise_batch(&t).unwrap()).unwrap();
        let per_cell: Vec<f32> = diff
            .sqr()
            .unwrap()
            .mean_keepdim(1)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let fg_only = per_cell[5];
        let bg_only = (per_cell.iter().sum::<f32>() - per_cell[5]) / 15.0;
        assert!((loss(1.0, 0.0) - fg_only).abs() < 1e-4);
        assert!((loss(0.0, 1.0) - bg_only).abs() < 1e-4);
        assert!((loss(2.0, 0.5) - (2.0 * fg_only + 0.5 * bg_only)).abs() < 1e-4);
    }
}
