//! RGB+IR fusion blocks of the teacher, one per pyramid level (P3, P4, P5).
//!
//! The default, [`CcaFusion`], follows CCAFusion (Li et al., IEEE TCSVT
//! 2024, "Cross-Modal Coordinate Attention"):
//!
//! ```text
//! A(x)   coordinate attention: pool along W → [B,C,H,1], along H → [B,C,W,1],
//!        concat → [B,C,H+W,1] → 1×1 conv C→m, BN, h-swish → split →
//!        1×1 conv m→C + sigmoid each → a_h [B,C,H,1], a_w [B,C,1,W];
//!        A = a_h ⊙ a_w   [B,C,H,W]
//! A_ir  = A(x_ir), A_rgb = A(x_rgb)          one A (shared weights) for both
//! Co    = softmax over channels of (A_ir + A_rgb)
//! ir'   = x_ir ⊙ A_ir + (1 − A_ir) ⊙ x_rgb   cross gating: what IR does not
//! rgb'  = x_rgb ⊙ A_rgb + (1 − A_rgb) ⊙ x_ir  attend to, RGB fills in
//! out   = Conv3×3(Conv1×1(2C→C)(concat[ir' + x_ir ⊙ Co, rgb' + x_rgb ⊙ Co]))
//! ```
//!
//! m = max(8, C/32) as in the paper's coordinate attention. Where the paper
//! leaves "then conv layers" open we use one YOLO `Conv` (1×1, 2C→C, BN,
//! SiLU) followed by one 3×3 `Conv` (C→C): the smallest stack that both
//! mixes the two gated streams and gives the fused map some spatial
//! context before the neck.
//!
//! The ablation variants: [`Fusion::Concat`] (concat, one 1×1 `Conv`),
//! [`Fusion::Add`] (a plain sum, no parameters), [`Fusion::Early`]
//! (4-channel input, one backbone: no fusion block at all) and
//! [`Fusion::Decoupled`] ([`DecoupledFusion`]: a common part both streams
//! share and a private IR part, after the modality focusing hypothesis,
//! Xue et al. ICLR 2023: cross-modal feature distillation fails where the
//! teacher leans on what only the other modality sees).

use anyhow::{bail, Context, Result};
use candle_core::{Tensor, D};
use candle_nn::{BatchNorm, BatchNormConfig, Conv2d, Module, ModuleT, VarBuilder};

use super::blocks::{plain_conv, Conv, BN_EPS, BN_MOMENTUM};
use super::config::Fusion;

/// h-swish(x) = x · ReLU6(x + 3) / 6 (MobileNetV3), as coordinate attention uses.
fn hard_swish(x: &Tensor) -> Result<Tensor> {
    let gate = ((x + 3.0)?.clamp(0f32, 6f32)? / 6.0)?;
    Ok((x * gate)?)
}

/// Coordinate attention: `[B, C, H, W]` → attention map `[B, C, H, W]` in (0, 1).
#[derive(Debug, Clone)]
pub struct CoordAttention {
    squeeze: Conv2d, // 1×1, C → m (bias)
    bn: BatchNorm,
    to_h: Conv2d, // 1×1, m → C (bias)
    to_w: Conv2d, // 1×1, m → C (bias)
}

impl CoordAttention {
    /// Hidden width of the squeeze: max(8, C / 32).
    pub fn hidden(c: usize) -> usize {
        (c / 32).max(8)
    }

    pub fn load(vb: VarBuilder, c: usize) -> Result<Self> {
        let m = Self::hidden(c);
        let bn_cfg = BatchNormConfig {
            eps: BN_EPS,
            momentum: BN_MOMENTUM,
            remove_mean: true,
            affine: true,
        };
        Ok(Self {
            squeeze: plain_conv(vb.pp("squeeze"), c, m, 0.0)?,
            bn: candle_nn::batch_norm(m, bn_cfg, vb.pp("bn"))
                .with_context(|| format!("batch norm {}", vb.pp("bn").prefix()))?,
            to_h: plain_conv(vb.pp("to_h"), m, c, 0.0)?,
            to_w: plain_conv(vb.pp("to_w"), m, c, 0.0)?,
        })
    }

    /// `x`: `[B, C, H, W]` → A = a_h ⊙ a_w, `[B, C, H, W]`.
    pub fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let (_, _, h, w) = x.dims4()?;
        let along_h = x.mean_keepdim(3)?; // [B, C, H, 1] (pooled along W)
        let along_w = x.mean_keepdim(2)?.transpose(2, 3)?; // [B, C, W, 1]
        let y = Tensor::cat(&[&along_h, &along_w], 2)?; // [B, C, H+W, 1]
        let y = self.squeeze.forward(&y)?; // [B, m, H+W, 1]
        let y = hard_swish(&self.bn.forward_t(&y, train)?)?;
        let y_h = y.narrow(2, 0, h)?; // [B, m, H, 1]
        let y_w = y.narrow(2, h, w)?.transpose(2, 3)?; // [B, m, 1, W]
        let a_h = candle_nn::ops::sigmoid(&self.to_h.forward(&y_h)?)?; // [B, C, H, 1]
        let a_w = candle_nn::ops::sigmoid(&self.to_w.forward(&y_w)?)?; // [B, C, 1, W]
        Ok(a_h.broadcast_mul(&a_w)?) // [B, C, H, W]
    }
}

/// CCAFusion of one level (see the module docs).
#[derive(Debug, Clone)]
pub struct CcaFusion {
    attention: CoordAttention,
    mix: Conv,    // 1×1, 2C → C
    refine: Conv, // 3×3, C → C
}

impl CcaFusion {
    pub fn load(vb: VarBuilder, c: usize) -> Result<Self> {
        Ok(Self {
            attention: CoordAttention::load(vb.pp("att"), c)?,
            mix: Conv::load(vb.pp("mix"), 2 * c, c, 1, 1)?,
            refine: Conv::load(vb.pp("refine"), c, c, 3, 1)?,
        })
    }

    /// `x_rgb`, `x_ir`: `[B, C, H, W]` each → fused `[B, C, H, W]`.
    pub fn forward_t(&self, x_rgb: &Tensor, x_ir: &Tensor, train: bool) -> Result<Tensor> {
        let a_ir = self.attention.forward_t(x_ir, train)?;
        let a_rgb = self.attention.forward_t(x_rgb, train)?;
        let co = candle_nn::ops::softmax(&(&a_ir + &a_rgb)?, 1)?; // over channels
        let ir_gated = ((x_ir * &a_ir)? + a_ir.affine(-1.0, 1.0)?.mul(x_rgb)?)?;
        let rgb_gated = ((x_rgb * &a_rgb)? + a_rgb.affine(-1.0, 1.0)?.mul(x_ir)?)?;
        let ir_out = (ir_gated + (x_ir * &co)?)?;
        let rgb_out = (rgb_gated + (x_rgb * &co)?)?;
        let cat = Tensor::cat(&[ir_out, rgb_out], 1)?; // [B, 2C, H, W]
        let y = self.mix.forward_t(&cat, train)?; // [B, C, H, W]
        self.refine.forward_t(&y, train)
    }
}

/// The decoupled fusion of one level:
///
/// ```text
/// c_rgb = common(x_rgb), c_ir = common(x_ir)   one 1×1 Conv (BN, SiLU) for both
/// p_ir  = private(x_ir)                          1×1 Conv on IR only
/// c     = (c_rgb + c_ir) / 2                     the common part
/// out   = Conv3×3(Conv1×1(2C→C)(concat[c, p_ir]))
/// L_aux = mean_cells(1 − cos(c_rgb, c_ir)) + mean_cells(cos(c, p_ir)²)
/// ```
///
/// The similarity term pulls the two streams' shared projections together
/// (so c is what RGB can predict), the orthogonality term keeps the IR-only
/// part uncorrelated with it; cosines are over channels, per cell.
#[derive(Debug, Clone)]
pub struct DecoupledFusion {
    common: Conv,  // 1×1, C → C, both streams
    private: Conv, // 1×1, C → C, IR
    mix: Conv,     // 1×1, 2C → C
    refine: Conv,  // 3×3, C → C
}

/// What a decoupled level gives besides the fused map.
pub struct DecoupledParts {
    /// `[B, C, H, W]`: the common part c.
    pub common: Tensor,
    /// Scalar: similarity + orthogonality loss of this level.
    pub aux_loss: Tensor,
}

/// Cosine over channels per cell: `[B, C, H, W]` twice → `[B, 1, H, W]`.
fn cosine(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    let dot = (a * b)?.sum_keepdim(1)?;
    let na = (a.sqr()?.sum_keepdim(1)? + 1e-8)?.sqrt()?;
    let nb = (b.sqr()?.sum_keepdim(1)? + 1e-8)?.sqrt()?;
    Ok((dot / (na * nb)?)?)
}

impl DecoupledFusion {
    pub fn load(vb: VarBuilder, c: usize) -> Result<Self> {
        Ok(Self {
            common: Conv::load(vb.pp("common"), c, c, 1, 1)?,
            private: Conv::load(vb.pp("private"), c, c, 1, 1)?,
            mix: Conv::load(vb.pp("mix"), 2 * c, c, 1, 1)?,
            refine: Conv::load(vb.pp("refine"), c, c, 3, 1)?,
        })
    }

    /// `x_rgb`, `x_ir`: `[B, C, H, W]` each → fused `[B, C, H, W]` and the parts.
    pub fn forward_parts(
        &self,
        x_rgb: &Tensor,
        x_ir: &Tensor,
        train: bool,
    ) -> Result<(Tensor, DecoupledParts)> {
        let c_rgb = self.common.forward_t(x_rgb, train)?;
        let c_ir = self.common.forward_t(x_ir, train)?;
        let p_ir = self.private.forward_t(x_ir, train)?;
        let common = ((&c_rgb + &c_ir)? * 0.5)?;
        let sim = cosine(&c_rgb, &c_ir)?.affine(-1.0, 1.0)?.mean_all()?;
        let orth = cosine(&common, &p_ir)?.sqr()?.mean_all()?;
        let y = self
            .mix
            .forward_t(&Tensor::cat(&[&common, &p_ir], 1)?, train)?;
        let fused = self.refine.forward_t(&y, train)?;
        Ok((
            fused,
            DecoupledParts {
                common,
                aux_loss: (sim + orth)?,
            },
        ))
    }
}

/// One level's fusion block.
#[derive(Debug, Clone)]
pub enum FusionBlock {
    Cca(Box<CcaFusion>),
    /// concat → 1×1 Conv (2C → C).
    Concat(Conv),
    Add,
    Decoupled(Box<DecoupledFusion>),
}

impl FusionBlock {
    /// The block for `kind` at a level with `c` channels per stream.
    /// [`Fusion::Early`] has no fusion blocks (an error here).
    pub fn load(vb: VarBuilder, kind: Fusion, c: usize) -> Result<Self> {
        Ok(match kind {
            Fusion::Cca => FusionBlock::Cca(Box::new(CcaFusion::load(vb, c)?)),
            Fusion::Concat => FusionBlock::Concat(Conv::load(vb.pp("mix"), 2 * c, c, 1, 1)?),
            Fusion::Add => FusionBlock::Add,
            Fusion::Decoupled => FusionBlock::Decoupled(Box::new(DecoupledFusion::load(vb, c)?)),
            Fusion::Early => bail!("early fusion has no per-level fusion blocks"),
        })
    }

    /// `[B, C, H, W]` twice → `[B, C, H, W]`, and a decoupled block's parts.
    pub fn forward_parts(
        &self,
        x_rgb: &Tensor,
        x_ir: &Tensor,
        train: bool,
    ) -> Result<(Tensor, Option<DecoupledParts>)> {
        Ok(match self {
            FusionBlock::Cca(f) => (f.forward_t(x_rgb, x_ir, train)?, None),
            FusionBlock::Concat(conv) => (
                conv.forward_t(&Tensor::cat(&[x_rgb, x_ir], D::Minus(3))?, train)?,
                None,
            ),
            FusionBlock::Add => ((x_rgb + x_ir)?, None),
            FusionBlock::Decoupled(f) => {
                let (fused, parts) = f.forward_parts(x_rgb, x_ir, train)?;
                (fused, Some(parts))
            }
        })
    }

    /// `[B, C, H, W]` twice → `[B, C, H, W]`.
    pub fn forward_t(&self, x_rgb: &Tensor, x_ir: &Tensor, train: bool) -> Result<Tensor> {
        Ok(self.forward_parts(x_rgb, x_ir, train)?.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};
    use candle_nn::VarMap;

    fn vb(varmap: &VarMap) -> VarBuilder<'_> {
        VarBuilder::from_varmap(varmap, DType::F32, &Device::Cpu)
    }

    #[test]
    fn coordinate_attention_is_separable_and_bounded() {
        let varmap = VarMap::new();
        let att = CoordAttention::load(vb(&varmap), 16).unwrap();
        let x = Tensor::randn(0f32, 1f32, (2, 16, 6, 5), &Device::Cpu).unwrap();
        let a = att.forward_t(&x, false).unwrap();
        assert_eq!(a.dims(), [2, 16, 6, 5]);
        let v: Vec<f32> = a.flatten_all().unwrap().to_vec1().unwrap();
        assert!(v.iter().all(|&x| x > 0.0 && x < 1.0));
        // A = a_h ⊙ a_w is rank one per (batch, channel): the 2×2 minors vanish.
        let t = a.get(0).unwrap().get(3).unwrap().to_vec2::<f32>().unwrap();
        for i in 1..6 {
            for j in 1..5 {
                let minor = t[0][0] * t[i][j] - t[0][j] * t[i][0];
                assert!(minor.abs() < 1e-6, "minor {minor}");
            }
        }
        assert_eq!(CoordAttention::hidden(32), 8);
        assert_eq!(CoordAttention::hidden(512), 16);
    }

    #[test]
    fn cca_fusion_shapes_gradients_and_modality_dependence() {
        let varmap = VarMap::new();
        let f = FusionBlock::load(vb(&varmap), Fusion::Cca, 16).unwrap();
        let rgb = Tensor::randn(0f32, 1f32, (2, 16, 4, 4), &Device::Cpu).unwrap();
        let ir = Tensor::randn(0f32, 1f32, (2, 16, 4, 4), &Device::Cpu).unwrap();
        let y = f.forward_t(&rgb, &ir, true).unwrap();
        assert_eq!(y.dims(), [2, 16, 4, 4]);
        // every parameter that shapes the output gets a gradient
        let grads = y.sqr().unwrap().sum_all().unwrap().backward().unwrap();
        let data = varmap.data().lock().unwrap();
        for (name, var) in data.iter() {
            if crate::trainer::model::is_running_stat(name) {
                continue;
            }
            let g = grads
                .get(var.as_tensor())
                .unwrap_or_else(|| panic!("no gradient for {name}"));
            let n = g
                .abs()
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            assert!(n > 0.0, "zero gradient for {name}");
        }
        drop(data);
        // the output depends on both modalities
        let y2 = f.forward_t(&rgb, &ir.zeros_like().unwrap(), false).unwrap();
        let y1 = f.forward_t(&rgb, &ir, false).unwrap();
        let d = (y1 - y2).unwrap().abs().unwrap().sum_all().unwrap();
        assert!(d.to_scalar::<f32>().unwrap() > 0.0);
    }

    #[test]
    fn concat_and_add_variants() {
        let varmap = VarMap::new();
        let rgb = Tensor::ones((1, 8, 2, 2), DType::F32, &Device::Cpu).unwrap();
        let ir = Tensor::ones((1, 8, 2, 2), DType::F32, &Device::Cpu).unwrap();
        let add = FusionBlock::load(vb(&varmap), Fusion::Add, 8).unwrap();
        let s: f32 = add
            .forward_t(&rgb, &ir, false)
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar()
            .unwrap();
        assert_eq!(s, 64.0);
        let cat = FusionBlock::load(vb(&varmap).pp("c"), Fusion::Concat, 8).unwrap();
        assert_eq!(
            cat.forward_t(&rgb, &ir, false).unwrap().dims(),
            [1, 8, 2, 2]
        );
        assert!(FusionBlock::load(vb(&varmap), Fusion::Early, 8).is_err());
    }
}
