//! BatchNorm (training mode) followed by SiLU, as one op with a
//! hand-written backward.
//!
//! candle-nn's training-mode BatchNorm transposes the map to channels-first
//! rows, copies it, and builds the normalisation from a dozen element-wise
//! ops; SiLU then runs on the transposed (strided) result; autograd walks
//! all of them back. On large early maps that is most of a step's
//! non-gemm time. Here the forward is one pass for the statistics and one
//! for `y = silu(γ·x̂ + β)`, and the backward two passes:
//!
//! ```text
//! x̂ = (x − μ_c)·r_c          r_c = 1/√(σ²_c + eps), statistics over (B, H, W)
//! g = ∂L/∂y · silu'(γ_c·x̂ + β_c)
//! ∂L/∂β_c = Σ g     ∂L/∂γ_c = Σ g·x̂
//! ∂L/∂x   = γ_c·r_c·(g − Σg/M − x̂·Σ(g·x̂)/M)      M = B·H·W
//! ```
//!
//! Running statistics are updated exactly as candle-nn does (momentum,
//! unbiased variance), so checkpoints do not depend on the path taken.

use super::{contiguous_f32, storage_f32};
use candle_core::{CpuStorage, CustomOp3, DType, Layout, Result, Shape, Tensor, Var};
use candle_nn::BatchNorm;
use rayon::prelude::*;
use std::sync::Arc;

/// `[B, C, H, W]` → `silu(batch_norm(x))`, training mode when `train`
/// (batch statistics, running statistics updated), else running ones.
pub fn batch_norm_silu(x: &Tensor, bn: &BatchNorm, train: bool) -> Result<Tensor> {
    use candle_nn::ModuleT;
    let fast = train
        && !super::reference_ops()
        && x.device().is_cpu()
        && x.dtype() == DType::F32
        && x.rank() == 4
        && bn.weight_and_bias().is_some();
    if !fast {
        return bn.forward_t(x, train)?.silu();
    }
    let (gamma, beta) = bn.weight_and_bias().expect("checked above");
    let x = x.contiguous()?;
    let (b, c, h, w) = x.dims4()?;
    if bn.running_mean().dim(0)? != c {
        candle_core::bail!(
            "batch norm: {} features, input {:?}",
            bn.running_mean().dim(0)?,
            x.dims()
        );
    }
    let stats = channel_stats(&x)?;
    update_running_stats(bn, &stats, b * h * w)?;
    let inv_std: Vec<f32> = stats
        .var
        .iter()
        .map(|v| (1.0 / (v + bn.eps()).sqrt()) as f32)
        .collect();
    let op = BnSilu {
        mean: Arc::new(stats.mean.iter().map(|&m| m as f32).collect()),
        inv_std: Arc::new(inv_std),
    };
    x.apply_op3(gamma, beta, op)
}

/// Per-channel mean and biased variance over (B, H, W).
struct ChannelStats {
    mean: Vec<f64>,
    var: Vec<f64>,
}

fn channel_stats(x: &Tensor) -> Result<ChannelStats> {
    let (b, c, h, w) = x.dims4()?;
    let (storage, layout) = x.storage_and_layout();
    let data = storage_f32(&storage, layout, "batch_norm_silu")?;
    // (Σx, Σx²) per (image, channel) plane in f64, then per channel
    let plane_sums: Vec<(f64, f64)> = data
        .par_chunks(h * w)
        .map(|p| {
            p.iter().fold((0.0, 0.0), |(s, s2), &v| {
                let v = v as f64;
                (s + v, s2 + v * v)
            })
        })
        .collect();
    let m = (b * h * w) as f64;
    let mut mean = vec![0.0; c];
    let mut var = vec![0.0; c];
    for ch in 0..c {
        let (s, s2) = (0..b).fold((0.0, 0.0), |(s, s2), i| {
            let (a, a2) = plane_sums[i * c + ch];
            (s + a, s2 + a2)
        });
        mean[ch] = s / m;
        var[ch] = (s2 / m - mean[ch] * mean[ch]).max(0.0);
    }
    Ok(ChannelStats { mean, var })
}

/// running ← (1 − momentum)·running + momentum·batch (variance unbiased),
/// in place: the running statistics are Vars of the model's VarMap.
fn update_running_stats(bn: &BatchNorm, stats: &ChannelStats, m: usize) -> Result<()> {
    let momentum = bn.momentum();
    let unbias = if m > 1 {
        m as f64 / (m as f64 - 1.0)
    } else {
        1.0
    };
    let dev = bn.running_mean().device();
    let c = stats.mean.len();
    let batch_mean = Tensor::from_vec(stats.mean.iter().map(|&v| v as f32).collect(), c, dev)?;
    let batch_var = Tensor::from_vec(stats.var.iter().map(|&v| v as f32).collect(), c, dev)?;
    let rm = bn.running_mean();
    let rv = bn.running_var();
    let new_mean = ((rm * (1.0 - momentum))? + (batch_mean * momentum)?)?;
    let new_var = ((rv * (1.0 - momentum))? + (batch_var * (momentum * unbias))?)?;
    Var::from_tensor(rm)?.set(&new_mean)?;
    Var::from_tensor(rv)?.set(&new_var)?;
    Ok(())
}

/// The fused op, with this batch's statistics baked in (they are computed
/// from `x` before the op runs; the backward accounts for their dependence
/// on `x` analytically).
struct BnSilu {
    mean: Arc<Vec<f32>>,
    inv_std: Arc<Vec<f32>>,
}

fn sigmoid(z: f32) -> f32 {
    1.0 / (1.0 + exp_f32(-z))
}

/// e^x in plain arithmetic, so that the loops over it vectorise (libm's
/// `expf` is one call per element: a tenth of a training step). Cephes'
/// `expf` reduction and polynomial, within a few ulp of `exp`; `x` is
/// clamped to [-87, 88] (e^88 ≈ 1.7e38), where sigmoid is 0 or 1 anyway.
#[inline(always)]
pub(crate) fn exp_f32(x: f32) -> f32 {
    // 1.5·2²³: adding it rounds to an integer (in the low mantissa bits)
    // without a call to roundf, which the baseline x86-64 target lacks.
    const ROUND: f32 = 12_582_912.0;
    let x = x.clamp(-87.0, 88.0);
    let t = x * std::f32::consts::LOG2_E + ROUND;
    let n = t - ROUND;
    // x − n·ln2 in two parts, for accuracy
    let r = x - n * 0.693_359_4 + n * 2.121_944_4e-4;
    let p = ((((1.987_569_2e-4 * r + 1.398_199_9e-3) * r + 8.333_452e-3) * r + 4.166_579_6e-2) * r
        + 1.666_666_5e-1)
        * r
        + 0.5;
    let e = p * r * r + r + 1.0;
    // 2ⁿ from the exponent bits: n is in [-126, 127]
    let n_int = (t.to_bits() as i32) - (ROUND.to_bits() as i32);
    e * f32::from_bits(((n_int + 127) as u32) << 23)
}

/// Σ v, in f32 lanes (vectorised) flushed to f64 every 2048 elements.
fn lane_sum(v: &[f32]) -> f64 {
    lane_dot(v, v, |a, _| a)
}

/// Σ f(a_i, b_i), in f32 lanes flushed to f64 every 2048 elements.
#[inline(always)]
fn lane_dot(a: &[f32], b: &[f32], f: impl Fn(f32, f32) -> f32) -> f64 {
    const LANES: usize = 8;
    let mut total = 0f64;
    for (ab, bb) in a.chunks(2048).zip(b.chunks(2048)) {
        let mut acc = [0f32; LANES];
        let (ac, bc) = (ab.chunks_exact(LANES), bb.chunks_exact(LANES));
        let tail: f32 = ac
            .remainder()
            .iter()
            .zip(bc.remainder())
            .map(|(&x, &y)| f(x, y))
            .sum();
        for (xa, xb) in ac.zip(bc) {
            for l in 0..LANES {
                acc[l] += f(xa[l], xb[l]);
            }
        }
        total += acc.iter().map(|&v| v as f64).sum::<f64>() + tail as f64;
    }
    total
}

impl CustomOp3 for BnSilu {
    fn name(&self) -> &'static str {
        "irdistill-batch-norm-silu"
    }

    fn cpu_fwd(
        &self,
        sx: &CpuStorage,
        lx: &Layout,
        sg: &CpuStorage,
        lg: &Layout,
        sb: &CpuStorage,
        lb: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = contiguous_f32(sx, lx, "batch_norm_silu")?;
        let (gamma, beta) = (
            contiguous_f32(sg, lg, "batch_norm_silu")?,
            contiguous_f32(sb, lb, "batch_norm_silu")?,
        );
        let (_, c, h, w) = lx.shape().dims4()?;
        let mut y = vec![0f32; x.len()];
        y.par_chunks_mut(h * w)
            .zip(x.par_chunks(h * w))
            .enumerate()
            .for_each(|(plane, (yp, xp))| {
                let ch = plane % c;
                let scale = gamma[ch] * self.inv_std[ch];
                let shift = beta[ch] - self.mean[ch] * scale;
                for (yv, &xv) in yp.iter_mut().zip(xp) {
                    let z = xv * scale + shift;
                    *yv = z * sigmoid(z);
                }
            });
        Ok((CpuStorage::F32(y), lx.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        gamma: &Tensor,
        beta: &Tensor,
        _res: &Tensor,
        grad_res: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (b, c, h, w) = x.dims4()?;
        let grad_res = grad_res.contiguous()?;
        let (gamma_v, beta_v) = (gamma.to_vec1::<f32>()?, beta.to_vec1::<f32>()?);
        let (xs, xl) = x.storage_and_layout();
        let (gs, gl) = grad_res.storage_and_layout();
        let (xd, gd) = (
            storage_f32(&xs, xl, "batch_norm_silu")?,
            storage_f32(&gs, gl, "batch_norm_silu")?,
        );
        let hw = h * w;

        // Pass 1: g = grad·silu'(z) per element; Σg and Σg·x̂ per plane.
        let mut g = vec![0f32; xd.len()];
        let plane_sums: Vec<(f64, f64)> = g
            .par_chunks_mut(hw)
            .zip(xd.par_chunks(hw).zip(gd.par_chunks(hw)))
            .enumerate()
            .map(|(plane, (gp, (xp, dp)))| {
                let ch = plane % c;
                let (mu, r) = (self.mean[ch], self.inv_std[ch]);
                let (ga, be) = (gamma_v[ch], beta_v[ch]);
                for ((gv, &xv), &dv) in gp.iter_mut().zip(xp).zip(dp) {
                    let z = ga * ((xv - mu) * r) + be;
                    let sg = sigmoid(z);
                    *gv = dv * sg * (1.0 + z * (1.0 - sg));
                }
                let s1 = lane_sum(gp);
                let s2 = lane_dot(gp, xp, |g, x| g * ((x - mu) * r));
                (s1, s2)
            })
            .collect();
        let mut sum_g = vec![0f64; c];
        let mut sum_gx = vec![0f64; c];
        for (plane, (s1, s2)) in plane_sums.iter().enumerate() {
            sum_g[plane % c] += s1;
            sum_gx[plane % c] += s2;
        }

        // Pass 2: ∂L/∂x in place of g.
        let m = (b * hw) as f64;
        g.par_chunks_mut(hw)
            .zip(xd.par_chunks(hw))
            .enumerate()
            .for_each(|(plane, (gp, xp))| {
                let ch = plane % c;
                let (mu, r) = (self.mean[ch], self.inv_std[ch]);
                let k = gamma_v[ch] * r;
                let mean_g = (sum_g[ch] / m) as f32;
                let mean_gx = (sum_gx[ch] / m) as f32;
                for (gv, &xv) in gp.iter_mut().zip(xp) {
                    let xh = (xv - mu) * r;
                    *gv = k * (*gv - mean_g - xh * mean_gx);
                }
            });
        drop((xs, gs));
        let dev = x.device();
        let dx = Tensor::from_vec(g, (b, c, h, w), dev)?;
        let to_f32 = |v: &[f64]| v.iter().map(|&s| s as f32).collect::<Vec<f32>>();
        let dgamma = Tensor::from_vec(to_f32(&sum_gx), c, dev)?;
        let dbeta = Tensor::from_vec(to_f32(&sum_g), c, dev)?;
        Ok((Some(dx), Some(dgamma), Some(dbeta)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trainer::ops::max_abs_diff;
    use candle_core::Device;
    use candle_nn::{BatchNormConfig, VarBuilder, VarMap};

    /// The vectorisable exp: a few ulp from exp over the range it keeps,
    /// and a sigmoid that saturates cleanly beyond it.
    #[test]
    fn exp_f32_is_accurate() {
        let mut worst = 0f64;
        for i in 0..=200_000 {
            let x = (-87.0 + 175.0 * i as f64 / 200_000.0) as f32;
            let exact = (x as f64).exp();
            let rel = ((exp_f32(x) as f64) - exact).abs() / exact;
            worst = worst.max(rel);
        }
        assert!(worst < 5e-7, "worst relative error {worst}");
        assert_eq!(exp_f32(0.0), 1.0);
        assert!(sigmoid(200.0) == 1.0 && sigmoid(-200.0) < 1e-37);
        assert!(sigmoid(f32::NEG_INFINITY) >= 0.0 && sigmoid(f32::INFINITY) == 1.0);
    }

    fn bn(vm: &VarMap, c: usize) -> BatchNorm {
        let vb = VarBuilder::from_varmap(vm, DType::F32, &Device::Cpu);
        let cfg = BatchNormConfig {
            eps: 1e-3,
            momentum: 0.03,
            remove_mean: true,
            affine: true,
        };
        candle_nn::batch_norm(c, cfg, vb).unwrap()
    }

    /// Values, gradients (x, γ, β) and running statistics against
    /// candle-nn's BatchNorm followed by candle's SiLU.
    #[test]
    fn matches_candle_batch_norm_then_silu() -> Result<()> {
        use candle_nn::ModuleT;
        let dev = Device::Cpu;
        for (b, c, h, w) in [(2, 3, 5, 4), (4, 2, 1, 1), (1, 5, 7, 3)] {
            let (mut vm_ref, mut vm_fast) = (VarMap::new(), VarMap::new());
            let (bn_ref, bn_fast) = (bn(&vm_ref, c), bn(&vm_fast, c));
            // non-trivial affine parameters, equal in both
            let gamma = Tensor::randn(1f32, 0.5, c, &dev)?;
            let beta = Tensor::randn(0f32, 0.5, c, &dev)?;
            for vm in [&mut vm_ref, &mut vm_fast] {
                vm.set_one("weight", &gamma)?;
                vm.set_one("bias", &beta)?;
            }
            let x = Var::randn(0.5f32, 2., (b, c, h, w), &dev)?;
            let up = Tensor::randn(0f32, 1., (b, c, h, w), &dev)?;

            let y_ref = bn_ref.forward_t(&x, true)?.silu()?;
            let y_fast = batch_norm_silu(&x, &bn_fast, true)?;
            assert!(max_abs_diff(&y_ref, &y_fast) < 1e-4);
            assert!(max_abs_diff(bn_ref.running_mean(), bn_fast.running_mean()) < 1e-5);
            assert!(max_abs_diff(bn_ref.running_var(), bn_fast.running_var()) < 1e-4);

            let gr = (y_ref * &up)?.sum_all()?.backward()?;
            let gf = (y_fast * &up)?.sum_all()?.backward()?;
            let (gw_r, gw_f) = (
                bn_ref.weight_and_bias().unwrap(),
                bn_fast.weight_and_bias().unwrap(),
            );
            let pairs = [
                (gr.get(&x).unwrap(), gf.get(&x).unwrap()),
                (gr.get(gw_r.0).unwrap(), gf.get(gw_f.0).unwrap()),
                (gr.get(gw_r.1).unwrap(), gf.get(gw_f.1).unwrap()),
            ];
            for (i, (a, bb)) in pairs.iter().enumerate() {
                let d = max_abs_diff(a, bb);
                assert!(
                    d < 1e-3,
                    "gradient {i} differs by {d} for {:?}",
                    (b, c, h, w)
                );
            }
        }
        Ok(())
    }

    #[test]
    fn eval_mode_is_candles_own() -> Result<()> {
        use candle_nn::ModuleT;
        let vm = VarMap::new();
        let b = bn(&vm, 2);
        let x = Tensor::randn(0f32, 1., (1, 2, 3, 3), &Device::Cpu)?;
        let d = max_abs_diff(
            &b.forward_t(&x, false)?.silu()?,
            &batch_norm_silu(&x, &b, false)?,
        );
        assert_eq!(d, 0.0);
        Ok(())
    }
}
