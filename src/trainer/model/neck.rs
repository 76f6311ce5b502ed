//! YOLOv8 neck (PAN-FPN): `yolov8.yaml` layers 10–21.
//!
//! Top-down: P5 is upsampled and merged with P4, that result upsampled and
//! merged with P3 (→ N3, the small-object output). Bottom-up: N3 is
//! downsampled (stride-2 Conv) and merged back to N4, N4 to N5. Every merge
//! is a channel concat followed by a C2f without shortcut. Parameters live
//! under `<prefix>.n<i>` with i the yaml layer index (layers 10, 11, 13, 14,
//! 17 and 20 are upsample/concat and have none).

use anyhow::{Context, Result};
use candle_core::Tensor;
use candle_nn::VarBuilder;

use super::backbone::Features;
use super::blocks::{upsample2x, C2f, Conv};
use super::config::Scale;

#[derive(Debug, Clone)]
pub struct Neck {
    pub(crate) n12: C2f,  // concat(up(P5), P4) → 512, ×3
    pub(crate) n15: C2f,  // concat(up(n12), P3) → 256, ×3   (output N3)
    pub(crate) n16: Conv, // 256, 3×3 s2
    pub(crate) n18: C2f,  // concat(n16, n12) → 512, ×3      (output N4)
    pub(crate) n19: Conv, // 512, 3×3 s2
    pub(crate) n21: C2f,  // concat(n19, P5) → 1024, ×3      (output N5)
    out_channels: [usize; 3],
}

impl Neck {
    /// `in_channels`: channels of the (P3, P4, P5) features it will get,
    /// e.g. [`super::Backbone::out_channels`] (or a fusion's output).
    pub fn load(vb: VarBuilder, in_channels: [usize; 3], scale: &Scale) -> Result<Self> {
        let ch = |c| scale.channels(c);
        let n = scale.repeats(3);
        let [c3, c4, c5] = in_channels;
        let layer = |i: usize| format!("neck layer {i} ({}.n{i})", vb.prefix());
        let n12 = C2f::load(vb.pp("n12"), c5 + c4, ch(512), n, false).with_context(|| layer(12))?;
        let n15 =
            C2f::load(vb.pp("n15"), ch(512) + c3, ch(256), n, false).with_context(|| layer(15))?;
        let n16 = Conv::load(vb.pp("n16"), ch(256), ch(256), 3, 2).with_context(|| layer(16))?;
        let n18 = C2f::load(vb.pp("n18"), ch(256) + ch(512), ch(512), n, false)
            .with_context(|| layer(18))?;
        let n19 = Conv::load(vb.pp("n19"), ch(512), ch(512), 3, 2).with_context(|| layer(19))?;
        let n21 =
            C2f::load(vb.pp("n21"), ch(512) + c5, ch(1024), n, false).with_context(|| layer(21))?;
        Ok(Self {
            n12,
            n15,
            n16,
            n18,
            n19,
            n21,
            out_channels: [ch(256), ch(512), ch(1024)],
        })
    }

    /// Channels of (N3, N4, N5).
    pub fn out_channels(&self) -> [usize; 3] {
        self.out_channels
    }

    /// P3 `[B, C3, H/8, W/8]`, P4 `[B, C4, H/16, W/16]`, P5 `[B, C5, H/32, W/32]`
    /// → N3, N4, N5 at the same resolutions with [`Neck::out_channels`] channels.
    pub fn forward_t(&self, f: &Features, train: bool) -> Result<Features> {
        // Top-down.
        let up = upsample2x(&f.p5)?; // [B, C5, H/16, W/16]
        let t4 = self.n12.forward_t(&Tensor::cat(&[&up, &f.p4], 1)?, train)?; // [B, ch512, H/16, W/16]
        let up = upsample2x(&t4)?; // [B, ch512, H/8, W/8]
        let n3 = self.n15.forward_t(&Tensor::cat(&[&up, &f.p3], 1)?, train)?; // [B, ch256, H/8, W/8]
                                                                              // Bottom-up.
        let down = self.n16.forward_t(&n3, train)?; // [B, ch256, H/16, W/16]
        let n4 = self.n18.forward_t(&Tensor::cat(&[&down, &t4], 1)?, train)?; // [B, ch512, H/16, W/16]
        let down = self.n19.forward_t(&n4, train)?; // [B, ch512, H/32, W/32]
        let n5 = self
            .n21
            .forward_t(&Tensor::cat(&[&down, &f.p5], 1)?, train)?; // [B, ch1024, H/32, W/32]
        Ok(Features {
            p3: n3,
            p4: n4,
            p5: n5,
        })
    }
}
