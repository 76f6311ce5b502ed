//! The RGB+IR teacher: two backbones of the student's kind (RGB with 3
//! input channels, IR with 1), fused at P3/P4/P5, then the student's neck
//! and head. With `early` fusion: one backbone on the 4-channel RGB+IR
//! stack instead.
//!
//! ```text
//! rgb [B, 3, H, W] ─ Backbone (backbone_rgb) ─ P3 P4 P5 ─┐
//!                                                      fusion.{0,1,2} ─ F3 F4 F5 ─ Neck ─ N3 N4 N5 ─ DetectHead
//! ir  [B, 1, H, W] ─ Backbone (backbone_ir)  ─ P3 P4 P5 ─┘
//! ```
//!
//! Parameter names: `backbone_rgb.b<i>…`, `backbone_ir.b<i>…`,
//! `fusion.<level>.…`, `neck.n<i>…`, `head.…` (early fusion: `backbone.b<i>…`).

use anyhow::{ensure, Context, Result};
use candle_core::Tensor;
use candle_nn::VarBuilder;

use super::backbone::{Backbone, Features};
use super::config::{Fusion, ModelConfig};
use super::fusion::{DecoupledParts, FusionBlock};
use super::head::DetectHead;
use super::neck::Neck;
use super::ModelOutput;

#[derive(Debug, Clone)]
pub struct Teacher {
    /// The RGB backbone, or the single 4-channel one for early fusion.
    rgb: Backbone,
    ir: Option<Backbone>,
    fusion: Vec<FusionBlock>,
    neck: Neck,
    head: DetectHead,
    kind: Fusion,
    cfg: ModelConfig,
}

impl Teacher {
    pub fn load(vb: VarBuilder, cfg: &ModelConfig) -> Result<Self> {
        let scale = cfg.validate()?;
        let kind = cfg
            .fusion_kind()
            .with_context(|| format!("{} is not a teacher scale", cfg.scale))?;
        let (rgb, ir, fusion) = if kind == Fusion::Early {
            (
                Backbone::load(vb.pp("backbone"), 4, &scale)?,
                None,
                Vec::new(),
            )
        } else {
            let rgb = Backbone::load(vb.pp("backbone_rgb"), 3, &scale)?;
            let ir = Backbone::load(vb.pp("backbone_ir"), 1, &scale)?;
            let fusion = rgb
                .out_channels()
                .iter()
                .enumerate()
                .map(|(l, &c)| {
                    FusionBlock::load(vb.pp("fusion").pp(l), kind, c)
                        .with_context(|| format!("{kind} fusion block of level {l} (fusion.{l})"))
                })
                .collect::<Result<Vec<_>>>()?;
            (rgb, Some(ir), fusion)
        };
        let neck = Neck::load(vb.pp("neck"), rgb.out_channels(), &scale)?;
        let head = DetectHead::load(vb.pp("head"), cfg.nc, neck.out_channels())?;
        Ok(Self {
            rgb,
            ir,
            fusion,
            neck,
            head,
            kind,
            cfg: cfg.clone(),
        })
    }

    pub fn config(&self) -> &ModelConfig {
        &self.cfg
    }

    pub fn fusion(&self) -> Fusion {
        self.kind
    }

    /// Channels of the neck outputs (what distillation matches).
    pub fn feature_channels(&self) -> [usize; 3] {
        self.neck.out_channels()
    }

    /// Channels of the fused levels P3, P4, P5 (a decoupled teacher's
    /// common part has as many).
    pub fn fused_channels(&self) -> [usize; 3] {
        self.rgb.out_channels()
    }

    /// `rgb`: `[B, 3, H, W]`, `ir`: `[B, 1, H, W]`, both 0..1 and aligned.
    pub fn forward_t(&self, rgb: &Tensor, ir: &Tensor, train: bool) -> Result<ModelOutput> {
        let (b, c, h, w) = rgb
            .dims4()
            .context("teacher RGB input must be [B, 3, H, W]")?;
        let (bi, ci, hi, wi) = ir
            .dims4()
            .context("teacher IR input must be [B, 1, H, W]")?;
        ensure!(
            c == 3 && ci == 1 && (b, h, w) == (bi, hi, wi),
            "teacher inputs must be RGB [B, 3, H, W] and IR [B, 1, H, W] of one size; got {:?} and {:?}",
            rgb.dims(),
            ir.dims()
        );
        ensure!(
            h % 32 == 0 && w % 32 == 0 && h > 0 && w > 0,
            "teacher input is {h}×{w}; height and width must be positive multiples of 32"
        );
        let (fused, parts) = match &self.ir {
            // [B, 4, H, W] in
            None => (
                self.rgb.forward_t(&Tensor::cat(&[rgb, ir], 1)?, train)?,
                None,
            ),
            Some(ir_backbone) => {
                let p_rgb = self.rgb.forward_t(rgb, train)?;
                let p_ir = ir_backbone.forward_t(ir, train)?;
                let [f3, f4, f5] = [0, 1, 2].map(|l| {
                    self.fusion[l].forward_parts(p_rgb.as_array()[l], p_ir.as_array()[l], train)
                });
                let (f3, f4, f5) = (f3?, f4?, f5?);
                let fused = Features {
                    p3: f3.0,
                    p4: f4.0,
                    p5: f5.0,
                };
                (fused, decoupled_parts([f3.1, f4.1, f5.1])?)
            }
        };
        let features = self.neck.forward_t(&fused, train)?;
        let levels = self.head.forward_t(&features, train)?;
        let (common, aux_loss) = parts.unzip();
        Ok(ModelOutput {
            levels,
            features,
            fused: Some(fused),
            backbone: None,
            common,
            aux_loss,
        })
    }
}

/// A decoupled teacher's common parts per level and its auxiliary loss
/// (mean over the levels); none for the other fusions.
fn decoupled_parts(parts: [Option<DecoupledParts>; 3]) -> Result<Option<(Features, Tensor)>> {
    let [Some(a), Some(b), Some(c)] = parts else {
        return Ok(None);
    };
    let aux = ((a.aux_loss + b.aux_loss)? + c.aux_loss)?.affine(1.0 / 3.0, 0.0)?;
    let common = Features {
        p3: a.common,
        p4: b.common,
        p5: c.common,
    };
    Ok(Some((common, aux)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trainer::model::{Detector, REG_MAX, STRIDES};
    use candle_core::{DType, Device};
    use candle_nn::VarMap;

    fn build(fusion: Fusion) -> (VarMap, Detector) {
        let mut cfg = ModelConfig::new("teacher-p", &["person", "car"], 64);
        cfg.fusion = Some(fusion);
        let varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
        let model = Detector::load(vb, &cfg).unwrap();
        (varmap, model)
    }

    fn inputs() -> (Tensor, Tensor) {
        (
            Tensor::rand(0f32, 1f32, (2, 3, 64, 64), &Device::Cpu).unwrap(),
            Tensor::rand(0f32, 1f32, (2, 1, 64, 64), &Device::Cpu).unwrap(),
        )
    }

    #[test]
    fn every_fusion_gives_student_shaped_outputs_that_depend_on_ir() {
        for fusion in [
            Fusion::Cca,
            Fusion::Concat,
            Fusion::Add,
            Fusion::Early,
            Fusion::Decoupled,
        ] {
            let (_, model) = build(fusion);
            assert!(model.needs_ir());
            let (rgb, ir) = inputs();
            let out = model.forward_t(&rgb, Some(&ir), false).unwrap();
            for (l, s) in STRIDES.iter().enumerate() {
                assert_eq!(
                    out.levels[l].dims(),
                    [2, 4 * REG_MAX + 2, 64 / s, 64 / s],
                    "{fusion}"
                );
            }
            let fused = out.fused.as_ref().unwrap();
            assert_eq!(fused.p3.dims(), [2, 32, 8, 8], "{fusion}");
            // train mode: fresh weights with eval-mode BatchNorm (running
            // variance 1) shrink activations to nothing within a few layers
            let y = model.forward_t(&rgb, Some(&ir), true).unwrap().levels[0].clone();
            let zeros = ir.zeros_like().unwrap();
            let y0 = model.forward_t(&rgb, Some(&zeros), true).unwrap().levels[0].clone();
            let d: f32 = (y - y0)
                .unwrap()
                .abs()
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar()
                .unwrap();
            assert!(d > 0.0, "{fusion}: output ignores the IR image");
            let e = model.forward_t(&rgb, None, false).unwrap_err().to_string();
            assert!(e.contains("IR"), "{e}");
        }
    }

    #[test]
    fn decoupled_teachers_give_common_parts_and_a_split_loss() {
        let (varmap, model) = build(Fusion::Decoupled);
        assert!(varmap
            .data()
            .lock()
            .unwrap()
            .contains_key("fusion.1.private.conv.weight"));
        let (rgb, ir) = inputs();
        let out = model.forward_t(&rgb, Some(&ir), true).unwrap();
        let common = out.common.as_ref().expect("common parts");
        assert_eq!(common.p3.dims(), out.fused.as_ref().unwrap().p3.dims());
        // 1 − cos ∈ [0, 2] and cos² ∈ [0, 1]
        let aux = out.aux_loss.as_ref().expect("split loss");
        let v = aux.to_scalar::<f32>().unwrap();
        assert!(v.is_finite() && (0.0..=3.0).contains(&v), "{v}");
        // the split loss trains the fusion blocks
        let grads = aux.backward().unwrap();
        let data = varmap.data().lock().unwrap();
        let w = data["fusion.0.common.conv.weight"].as_tensor();
        assert!(grads.get(w).is_some());
        drop(data);
        // the other fusions have neither
        let (_, cca) = build(Fusion::Cca);
        let out = cca.forward_t(&rgb, Some(&ir), true).unwrap();
        assert!(out.common.is_none() && out.aux_loss.is_none());
    }

    #[test]
    fn parameter_layout_per_fusion() {
        let (varmap, _) = build(Fusion::Cca);
        let data = varmap.data().lock().unwrap();
        for name in [
            "backbone_rgb.b0.conv.weight",
            "backbone_ir.b0.conv.weight",
            "fusion.0.att.squeeze.weight",
            "fusion.2.mix.conv.weight",
            "fusion.1.refine.bn.running_var",
            "neck.n21.cv2.conv.weight",
            "head.cv3.2.2.bias",
        ] {
            assert!(data.contains_key(name), "missing {name}");
        }
        // the IR stem takes one channel, the RGB stem three
        assert_eq!(data["backbone_ir.b0.conv.weight"].dims()[1], 1);
        assert_eq!(data["backbone_rgb.b0.conv.weight"].dims()[1], 3);
        drop(data);
        let (varmap, _) = build(Fusion::Early);
        let data = varmap.data().lock().unwrap();
        assert_eq!(data["backbone.b0.conv.weight"].dims()[1], 4);
        assert!(!data.keys().any(|k| k.starts_with("fusion")));
        drop(data);
        let (varmap, _) = build(Fusion::Add);
        assert!(!varmap
            .data()
            .lock()
            .unwrap()
            .keys()
            .any(|k| k.starts_with("fusion")));
    }

    #[test]
    fn students_take_no_fusion_and_teachers_name_bad_inputs() {
        let mut cfg = ModelConfig::new("student-p", &["a"], 64);
        cfg.fusion = Some(Fusion::Add);
        assert!(cfg
            .validate()
            .unwrap_err()
            .to_string()
            .contains("only teacher"));
        let (_, model) = build(Fusion::Cca);
        let (rgb, _) = inputs();
        let bad_ir = Tensor::zeros((2, 1, 32, 32), DType::F32, &Device::Cpu).unwrap();
        let e = model
            .forward_t(&rgb, Some(&bad_ir), false)
            .unwrap_err()
            .to_string();
        assert!(e.contains("one size"), "{e}");
        let e = model.into_student("t.safetensors").unwrap_err().to_string();
        assert!(e.contains("teacher") && e.contains("t.safetensors"), "{e}");
    }
}
