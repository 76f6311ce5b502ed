//! YOLOv8 backbone: `yolov8.yaml` layers 0–9 (CSPDarknet with C2f and SPPF).
//!
//! Parameters live under `<prefix>.b<i>` with i the yaml layer index, so a
//! student uses `backbone.b0 … backbone.b9` and a later RGB+IR teacher can
//! load two of these (e.g. `backbone_rgb`, `backbone_ir` with 3 and 1 input
//! channels) and fuse their features before the shared neck.

use anyhow::{Context, Result};
use candle_core::Tensor;
use candle_nn::VarBuilder;

use super::blocks::{C2f, Conv, Sppf};
use super::config::Scale;

/// The three feature maps the neck consumes.
#[derive(Debug, Clone)]
pub struct Features {
    /// `[B, C3, H/8, W/8]`
    pub p3: Tensor,
    /// `[B, C4, H/16, W/16]`
    pub p4: Tensor,
    /// `[B, C5, H/32, W/32]`
    pub p5: Tensor,
}

impl Features {
    pub fn as_array(&self) -> [&Tensor; 3] {
        [&self.p3, &self.p4, &self.p5]
    }
}

/// Layers 0–9. Channel numbers in comments are yolov8.yaml's (before the
/// scale's width multiplier).
#[derive(Debug, Clone)]
pub struct Backbone {
    pub(crate) b0: Conv, // 64, 3×3 s2   → P1/2
    pub(crate) b1: Conv, // 128, 3×3 s2  → P2/4
    pub(crate) b2: C2f,  // 128, ×3, shortcut
    pub(crate) b3: Conv, // 256, 3×3 s2  → P3/8
    pub(crate) b4: C2f,  // 256, ×6, shortcut   (output P3)
    pub(crate) b5: Conv, // 512, 3×3 s2  → P4/16
    pub(crate) b6: C2f,  // 512, ×6, shortcut   (output P4)
    pub(crate) b7: Conv, // 1024, 3×3 s2 → P5/32
    pub(crate) b8: C2f,  // 1024, ×3, shortcut
    pub(crate) b9: Sppf, // 1024, k = 5         (output P5)
    pub(crate) in_channels: usize,
    out_channels: [usize; 3],
}

impl Backbone {
    /// `in_channels`: 3 for RGB, 1 for a thermal (IR) image.
    pub fn load(vb: VarBuilder, in_channels: usize, scale: &Scale) -> Result<Self> {
        let ch = |c| scale.channels(c);
        let n = |r| scale.repeats(r);
        let layer = |i: usize| format!("backbone layer {i} ({}.b{i})", vb.prefix());
        let b0 = Conv::load(vb.pp("b0"), in_channels, ch(64), 3, 2).with_context(|| layer(0))?;
        let b1 = Conv::load(vb.pp("b1"), ch(64), ch(128), 3, 2).with_context(|| layer(1))?;
        let b2 = C2f::load(vb.pp("b2"), ch(128), ch(128), n(3), true).with_context(|| layer(2))?;
        let b3 = Conv::load(vb.pp("b3"), ch(128), ch(256), 3, 2).with_context(|| layer(3))?;
        let b4 = C2f::load(vb.pp("b4"), ch(256), ch(256), n(6), true).with_context(|| layer(4))?;
        let b5 = Conv::load(vb.pp("b5"), ch(256), ch(512), 3, 2).with_context(|| layer(5))?;
        let b6 = C2f::load(vb.pp("b6"), ch(512), ch(512), n(6), true).with_context(|| layer(6))?;
        let b7 = Conv::load(vb.pp("b7"), ch(512), ch(1024), 3, 2).with_context(|| layer(7))?;
        let b8 =
            C2f::load(vb.pp("b8"), ch(1024), ch(1024), n(3), true).with_context(|| layer(8))?;
        let b9 = Sppf::load(vb.pp("b9"), ch(1024), ch(1024), 5).with_context(|| layer(9))?;
        Ok(Self {
            b0,
            b1,
            b2,
            b3,
            b4,
            b5,
            b6,
            b7,
            b8,
            b9,
            in_channels,
            out_channels: [ch(256), ch(512), ch(1024)],
        })
    }

    /// Channels of (P3, P4, P5).
    pub fn out_channels(&self) -> [usize; 3] {
        self.out_channels
    }

    /// `[B, in_channels, H, W]` (H, W multiples of 32) → P3, P4, P5.
    pub fn forward_t(&self, x: &Tensor, train: bool) -> Result<Features> {
        let x = self.b0.forward_t(x, train)?; // [B, C1, H/2, W/2]
        let x = self.b1.forward_t(&x, train)?; // [B, C2, H/4, W/4]
        let x = self.b2.forward_t(&x, train)?;
        let x = self.b3.forward_t(&x, train)?; // [B, C3, H/8, W/8]
        let p3 = self.b4.forward_t(&x, train)?;
        let x = self.b5.forward_t(&p3, train)?; // [B, C4, H/16, W/16]
        let p4 = self.b6.forward_t(&x, train)?;
        let x = self.b7.forward_t(&p4, train)?; // [B, C5, H/32, W/32]
        let x = self.b8.forward_t(&x, train)?;
        let p5 = self.b9.forward_t(&x, train)?;
        Ok(Features { p3, p4, p5 })
    }
}
