//! YOLOv8's building blocks (ultralytics `nn/modules/conv.py`, `block.py`):
//! [`Conv`] (conv + BatchNorm + SiLU), [`Bottleneck`], [`C2f`], [`Sppf`],
//! plus the plain biased 1×1 conv the head ends with ([`plain_conv`]).
//!
//! Parameter names inside each block follow ultralytics' state dict
//! (`conv.weight`, `bn.running_mean`, `cv1.…`, `m.0.…`), so a path such as
//! `backbone.b2.m.0.cv1.conv.weight` here is `model.2.m.0.cv1.conv.weight`
//! there.

use anyhow::{Context, Result};
use candle_core::Tensor;
use candle_nn::{BatchNorm, BatchNormConfig, Conv2d, Conv2dConfig, Init, VarBuilder};

/// BatchNorm settings of every YOLOv8 Conv (ultralytics' `initialize_weights`
/// sets eps 1e-3 and momentum 0.03 on all BatchNorm2d).
pub const BN_EPS: f64 = 1e-3;
pub const BN_MOMENTUM: f64 = 0.03;

/// PyTorch's default `nn.Conv2d` initialisation (kaiming-uniform with
/// a = √5), which is what ultralytics trains from: U(-1/√fan_in, 1/√fan_in)
/// for the weights and for the bias alike.
pub fn torch_default_init(fan_in: usize) -> Init {
    let bound = 1.0 / (fan_in as f64).sqrt();
    Init::Uniform {
        lo: -bound,
        up: bound,
    }
}

/// `Conv` in ultralytics: conv2d (no bias, "same" padding k/2) →
/// BatchNorm2d → SiLU.
#[derive(Debug, Clone)]
pub struct Conv {
    pub(crate) conv: Conv2d,
    pub(crate) bn: BatchNorm,
    pub(crate) c_in: usize,
    pub(crate) c_out: usize,
    pub(crate) k: usize,
    pub(crate) stride: usize,
}

impl Conv {
    /// Weights `conv.weight` `[c_out, c_in, k, k]`; `bn.{weight,bias,running_mean,running_var}` `[c_out]`.
    pub fn load(
        vb: VarBuilder,
        c_in: usize,
        c_out: usize,
        k: usize,
        stride: usize,
    ) -> Result<Self> {
        let weight = vb
            .pp("conv")
            .get_with_hints(
                (c_out, c_in, k, k),
                "weight",
                torch_default_init(c_in * k * k),
            )
            .with_context(|| format!("conv weight {}", vb.pp("conv").prefix()))?;
        let cfg = Conv2dConfig {
            padding: k / 2,
            stride,
            ..Default::default()
        };
        let conv = Conv2d::new(weight, None, cfg);
        let bn_cfg = BatchNormConfig {
            eps: BN_EPS,
            momentum: BN_MOMENTUM,
            remove_mean: true,
            affine: true,
        };
        let bn = candle_nn::batch_norm(c_out, bn_cfg, vb.pp("bn"))
            .with_context(|| format!("batch norm {}", vb.pp("bn").prefix()))?;
        Ok(Self {
            conv,
            bn,
            c_in,
            c_out,
            k,
            stride,
        })
    }

    /// `[B, c_in, H, W]` → `[B, c_out, H/stride, W/stride]`.
    /// `train` = true normalises with batch statistics and updates the
    /// running ones (in place, in the VarMap); false uses the running ones.
    pub fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let y = crate::trainer::ops::conv2d(x, self.conv.weight(), None, self.stride, self.k / 2)?;
        Ok(crate::trainer::ops::bn_silu::batch_norm_silu(
            &y, &self.bn, train,
        )?)
    }
}

/// Two 3×3 Convs (expansion e = 1.0 as C2f builds them) with a residual
/// connection when `shortcut` and the channel counts agree.
#[derive(Debug, Clone)]
pub struct Bottleneck {
    pub(crate) cv1: Conv,
    pub(crate) cv2: Conv,
    pub(crate) add: bool,
}

impl Bottleneck {
    pub fn load(vb: VarBuilder, c_in: usize, c_out: usize, shortcut: bool) -> Result<Self> {
        let hidden = c_out; // e = 1.0
        let cv1 = Conv::load(vb.pp("cv1"), c_in, hidden, 3, 1)?;
        let cv2 = Conv::load(vb.pp("cv2"), hidden, c_out, 3, 1)?;
        Ok(Self {
            cv1,
            cv2,
            add: shortcut && c_in == c_out,
        })
    }

    /// `[B, c_in, H, W]` → `[B, c_out, H, W]`.
    pub fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let y = self.cv2.forward_t(&self.cv1.forward_t(x, train)?, train)?;
        Ok(if self.add { (x + y)? } else { y })
    }
}

/// C2f: a 1×1 Conv to 2·c channels split in two halves; the second half
/// runs through `n` Bottlenecks, every intermediate output is kept, and a
/// final 1×1 Conv mixes all (2 + n)·c of them. c = c_out / 2.
#[derive(Debug, Clone)]
pub struct C2f {
    pub(crate) cv1: Conv,
    pub(crate) cv2: Conv,
    pub(crate) m: Vec<Bottleneck>,
    /// Hidden width c (each half).
    pub(crate) c: usize,
}

impl C2f {
    pub fn load(
        vb: VarBuilder,
        c_in: usize,
        c_out: usize,
        n: usize,
        shortcut: bool,
    ) -> Result<Self> {
        let c = c_out / 2; // e = 0.5
        let cv1 = Conv::load(vb.pp("cv1"), c_in, 2 * c, 1, 1)?;
        let cv2 = Conv::load(vb.pp("cv2"), (2 + n) * c, c_out, 1, 1)?;
        let m = (0..n)
            .map(|i| Bottleneck::load(vb.pp("m").pp(i), c, c, shortcut))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self { cv1, cv2, m, c })
    }

    /// `[B, c_in, H, W]` → `[B, c_out, H, W]`.
    pub fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let y = self.cv1.forward_t(x, train)?; // [B, 2c, H, W]
        let mut ys = vec![y.narrow(1, 0, self.c)?, y.narrow(1, self.c, self.c)?];
        for m in &self.m {
            let next = m.forward_t(ys.last().expect("two halves"), train)?; // [B, c, H, W]
            ys.push(next);
        }
        let cat = Tensor::cat(&ys, 1)?; // [B, (2 + n)·c, H, W]
        self.cv2.forward_t(&cat, train)
    }
}

/// SPPF: 1×1 Conv to c_in/2, three chained 5×5 stride-1 max pools, concat
/// of the four, 1×1 Conv to c_out. Same receptive fields as SPP(5, 9, 13),
/// cheaper.
#[derive(Debug, Clone)]
pub struct Sppf {
    pub(crate) cv1: Conv,
    pub(crate) cv2: Conv,
    pub(crate) k: usize,
}

impl Sppf {
    pub fn load(vb: VarBuilder, c_in: usize, c_out: usize, k: usize) -> Result<Self> {
        let hidden = c_in / 2;
        let cv1 = Conv::load(vb.pp("cv1"), c_in, hidden, 1, 1)?;
        let cv2 = Conv::load(vb.pp("cv2"), 4 * hidden, c_out, 1, 1)?;
        Ok(Self { cv1, cv2, k })
    }

    /// `[B, c_in, H, W]` → `[B, c_out, H, W]`.
    pub fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let y = self.cv1.forward_t(x, train)?; // [B, c_in/2, H, W]
        let mut ys = vec![y];
        for _ in 0..3 {
            let pooled = max_pool_same(ys.last().expect("cv1 output"), self.k)?;
            ys.push(pooled);
        }
        self.cv2.forward_t(&Tensor::cat(&ys, 1)?, train) // [B, 2·c_in, H, W] → [B, c_out, H, W]
    }
}

/// k×k max pool, stride 1, padding k/2: `[B, C, H, W]` → `[B, C, H, W]`.
///
/// PyTorch pads max pools with -∞; candle's `max_pool2d` has no padding, so
/// we pad by repeating the border. That gives the same maxima: each padded
/// cell copies a border cell that lies inside the same window (the window
/// always contains its own, in-range centre and is contiguous).
pub fn max_pool_same(x: &Tensor, k: usize) -> Result<Tensor> {
    // Separable running maxima over k shifted views instead of
    // `max_pool2d_with_stride(k, 1)`: candle 0.11 has no backward for
    // stride-1 max pooling, while `maximum` and `narrow` differentiate.
    // Edge-replicating padding gives the same maxima as -inf padding.
    let p = k / 2;
    let (_, _, h, w) = x.dims4()?;
    let rows = x.pad_with_same(2, p, p)?; // [B, C, H + 2p, W]
    let mut y = rows.narrow(2, 0, h)?;
    for i in 1..k {
        y = y.maximum(&rows.narrow(2, i, h)?)?;
    }
    let cols = y.pad_with_same(3, p, p)?; // [B, C, H, W + 2p]
    let mut out = cols.narrow(3, 0, w)?;
    for j in 1..k {
        out = out.maximum(&cols.narrow(3, j, w)?)?;
    }
    Ok(out)
}

/// Nearest-neighbour 2× upsampling: `[B, C, H, W]` → `[B, C, 2H, 2W]`.
pub fn upsample2x(x: &Tensor) -> Result<Tensor> {
    let (_, _, h, w) = x.dims4()?;
    Ok(x.upsample_nearest2d(2 * h, 2 * w)?)
}

/// A plain 1×1 conv with bias (the last layer of each head branch, no
/// BatchNorm). The bias starts at `bias_init` (YOLOv8's `bias_init`), the
/// weight at PyTorch's default.
pub fn plain_conv(vb: VarBuilder, c_in: usize, c_out: usize, bias_init: f64) -> Result<Conv2d> {
    let weight = vb
        .get_with_hints((c_out, c_in, 1, 1), "weight", torch_default_init(c_in))
        .with_context(|| format!("conv weight {}.weight", vb.prefix()))?;
    let bias = vb
        .get_with_hints(c_out, "bias", Init::Const(bias_init))
        .with_context(|| format!("conv bias {}.bias", vb.prefix()))?;
    Ok(Conv2d::new(weight, Some(bias), Conv2dConfig::default()))
}
