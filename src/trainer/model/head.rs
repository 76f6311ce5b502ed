//! YOLOv8's decoupled `Detect` head (ultralytics `nn/modules/head.py`).
//!
//! For each level (strides 8, 16, 32) two branches run on the neck feature:
//! - `cv2`: Conv3×3 → Conv3×3 → conv1×1 (with bias) to 4·reg_max channels:
//!   for each box side (left, top, right, bottom) a distribution over
//!   reg_max distance bins (DFL; the expectation is the distance in grid
//!   cells, see [`super::anchors`]),
//! - `cv3`: Conv3×3 → Conv3×3 → conv1×1 (with bias) to nc class logits.
//!
//! Parameters: `<prefix>.cv2.<level>.<0|1|2>` and `<prefix>.cv3.<level>.<0|1|2>`
//! (ultralytics' `model.22.cv2.0.0.conv.weight` …).

use anyhow::{ensure, Context, Result};
use candle_core::Tensor;
use candle_nn::{Conv2d, VarBuilder};

use super::backbone::Features;
use super::blocks::{plain_conv, Conv};

/// Distance bins per box side (ultralytics' `reg_max`).
pub const REG_MAX: usize = 16;
/// Output strides of the three levels (P3, P4, P5).
pub const STRIDES: [usize; 3] = [8, 16, 32];

/// One branch: two 3×3 Convs and a biased 1×1 conv.
#[derive(Debug, Clone)]
pub struct Branch {
    pub(crate) c0: Conv,
    pub(crate) c1: Conv,
    pub(crate) out: Conv2d,
}

impl Branch {
    fn load(
        vb: VarBuilder,
        c_in: usize,
        hidden: usize,
        c_out: usize,
        bias_init: f64,
    ) -> Result<Self> {
        Ok(Self {
            c0: Conv::load(vb.pp(0), c_in, hidden, 3, 1)?,
            c1: Conv::load(vb.pp(1), hidden, hidden, 3, 1)?,
            out: plain_conv(vb.pp(2), hidden, c_out, bias_init)?,
        })
    }

    /// `[B, c_in, H, W]` → `[B, c_out, H, W]`.
    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let y = self.c1.forward_t(&self.c0.forward_t(x, train)?, train)?;
        // the plain 1×1 conv with bias, through the fast path
        Ok(crate::trainer::ops::conv2d(
            &y,
            self.out.weight(),
            self.out.bias(),
            1,
            0,
        )?)
    }
}

#[derive(Debug, Clone)]
pub struct DetectHead {
    pub(crate) cv2: Vec<Branch>, // box branches, one per level
    pub(crate) cv3: Vec<Branch>, // class branches, one per level
    pub(crate) nc: usize,
}

/// YOLOv8's `bias_init` for the class logits of a level with stride `s`:
/// a prior of about 5 objects per 640×640 image spread over the
/// (640/s)² cells of that level and the nc classes.
///
/// Ultralytics hard-codes 640 here whatever the training image size; we
/// keep it so that models start from the same point as theirs.
pub fn class_bias_init(nc: usize, stride: usize) -> f64 {
    let cells = (640.0 / stride as f64).powi(2);
    (5.0 / nc as f64 / cells).ln()
}

/// Initial bias of the box-distribution logits (all bins equal, 1.0).
pub const BOX_BIAS_INIT: f64 = 1.0;

impl DetectHead {
    /// `in_channels`: channels of the three neck outputs (N3, N4, N5).
    pub fn load(vb: VarBuilder, nc: usize, in_channels: [usize; 3]) -> Result<Self> {
        ensure!(nc >= 1, "detect head: nc must be at least 1, got {nc}");
        let ch0 = in_channels[0];
        let c2 = 16.max(ch0 / 4).max(4 * REG_MAX); // box branch width
        let c3 = ch0.max(nc.min(100)); // class branch width
        let mut cv2 = Vec::with_capacity(3);
        let mut cv3 = Vec::with_capacity(3);
        for (level, (&c, &s)) in in_channels.iter().zip(STRIDES.iter()).enumerate() {
            let ctx = |b: &str| format!("detect head {}.{b}.{level} (stride {s})", vb.prefix());
            cv2.push(
                Branch::load(vb.pp("cv2").pp(level), c, c2, 4 * REG_MAX, BOX_BIAS_INIT)
                    .with_context(|| ctx("cv2"))?,
            );
            cv3.push(
                Branch::load(vb.pp("cv3").pp(level), c, c3, nc, class_bias_init(nc, s))
                    .with_context(|| ctx("cv3"))?,
            );
        }
        Ok(Self { cv2, cv3, nc })
    }

    pub fn nc(&self) -> usize {
        self.nc
    }

    /// Channels per output cell: 4·reg_max box logits then nc class logits.
    pub fn no(&self) -> usize {
        4 * REG_MAX + self.nc
    }

    /// Neck features → per level `[B, 4·reg_max + nc, H/s, W/s]` raw logits
    /// (box distributions first, then classes), like ultralytics' head in
    /// training mode.
    pub fn forward_t(&self, f: &Features, train: bool) -> Result<Vec<Tensor>> {
        f.as_array()
            .iter()
            .enumerate()
            .map(|(i, x)| {
                let boxes = self.cv2[i].forward_t(x, train)?; // [B, 4·reg_max, H/s, W/s]
                let classes = self.cv3[i].forward_t(x, train)?; // [B, nc, H/s, W/s]
                Ok(Tensor::cat(&[boxes, classes], 1)?)
            })
            .collect()
    }
}
