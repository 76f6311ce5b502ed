//! Feature distillation: at each of P3/P4/P5 a 1×1 conv adapter f maps the
//! student's neck feature to the teacher's channels, and
//! `‖n(f(F_student)) − n(F_teacher)‖²` is averaged with more weight on the
//! foreground.
//!
//! n(·) standardises each channel of each image over its H×W positions
//! (zero mean, unit variance, as PKD does): the two networks' activations
//! differ in scale per channel, and matching raw magnitudes would mostly
//! teach the adapter those scales. The weight per cell is `1 + γ·fg` with
//! fg in [0, 1] from the object boxes and the teacher's confidence.

use crate::trainer::model::blocks::plain_conv;
use anyhow::Result;
use candle_core::{Module, Tensor};
use candle_nn::{Conv2d, VarBuilder};

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
    /// `fg[l]`: `[B, 1, H, W]` in [0, 1]. Mean over levels of the weighted
    /// per-element squared error.
    pub fn loss(
        &self,
        student: [&Tensor; 3],
        teacher: [&Tensor; 3],
        fg: &[Tensor],
        fg_gain: f64,
    ) -> Result<Tensor> {
        let mut total: Option<Tensor> = None;
        for l in 0..3 {
            let mapped = self.adapters[l].forward(student[l])?; // [B, Ct, H, W]
            let diff = (standardise(&mapped)? - standardise(teacher[l])?)?;
            let per_cell = diff.sqr()?.mean_keepdim(1)?; // [B, 1, H, W]
            let weight = (fg[l].affine(fg_gain, 1.0))?; // 1 + γ·fg
            let level = ((per_cell * &weight)?.sum_all()? / weight.sum_all()?)?;
            total = Some(match total {
                None => level,
                Some(t) => (t + level)?,
            });
        }
        Ok((total.expect("three levels") / 3.0)?)
    }
}

/// Per image and channel over H×W: `(x − mean) / (std + ε)`.
pub fn standardise(x: &Tensor) -> Result<Tensor> {
    let (b, c, h, w) = x.dims4()?;
    let flat = x.reshape((b, c, h * w))?;
    let centred = flat.broadcast_sub(&flat.mean_keepdim(2)?)?;
    let std = (centred.sqr()?.mean_keepdim(2)? + 1e-6)?.sqrt()?;
    Ok(centred.broadcast_div(&std)?.reshape((b, c, h, w))?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};
    use candle_nn::VarMap;

    #[test]
    fn standardised_maps_and_zero_loss_on_a_perfect_match() {
        let x = Tensor::randn(3f32, 2f32, (2, 4, 5, 5), &Device::Cpu).unwrap();
        let n = standardise(&x).unwrap().reshape((2, 4, 25)).unwrap();
        let mean = n.mean(2).unwrap().abs().unwrap().max_all().unwrap();
        assert!(mean.to_scalar::<f32>().unwrap() < 1e-5);
        let var = n.sqr().unwrap().mean(2).unwrap().to_vec2::<f32>().unwrap();
        assert!(var.iter().flatten().all(|v| (v - 1.0).abs() < 1e-3));

        // scale and shift per channel do not matter; identity adapter → 0 loss
        let varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
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
        let t = (x.affine(2.0, 1.0)).unwrap();
        let fg = vec![Tensor::ones((2, 1, 5, 5), DType::F32, &Device::Cpu).unwrap(); 3];
        let l = ad.loss([&x, &x, &x], [&t, &t, &t], &fg, 2.0).unwrap();
        assert!(l.to_scalar::<f32>().unwrap() < 1e-6);
        let other = Tensor::randn(0f32, 1f32, (2, 4, 5, 5), &Device::Cpu).unwrap();
        let l = ad
            .loss([&x, &x, &x], [&other, &other, &other], &fg, 2.0)
            .unwrap();
        assert!(l.to_scalar::<f32>().unwrap() > 0.5);
    }
}
