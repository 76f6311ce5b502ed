//! The YOLOv8 detector in candle: the RGB students, and the RGB+IR teacher
//! built from the same blocks ([`teacher`], [`fusion`]).
//!
//! ```text
//! images [B, 3, H, W] in 0..1
//!   └─ Backbone (yaml layers 0–9)  → P3 [B, C3, H/8, W/8], P4 [.., H/16, ..], P5 [.., H/32, ..]
//!        └─ Neck (PAN-FPN, 10–21)  → N3, N4, N5 (same resolutions)
//!             └─ DetectHead (22)   → per level [B, 4·16 + nc, H/s, W/s] raw logits
//!                  └─ decode       → [B, 4 + nc, N]: cx, cy, w, h (pixels), class scores
//! ```
//!
//! The architecture is ultralytics' `yolov8.yaml` exactly; `student-n` is
//! YOLOv8n (3,157,184 trainable parameters at nc = 80, 3,151,904 once the
//! BatchNorms are folded as ultralytics counts it).
//!
//! Parameter names (the keys of a safetensors checkpoint of the VarMap):
//! `backbone.b<i>.…`, `neck.n<i>.…`, `head.cv2.<level>.…`,
//! `head.cv3.<level>.…`, where i is the `yolov8.yaml` layer index and the
//! rest follows ultralytics' module names (replace `backbone.b`/`neck.n` by
//! `model.` and `head.` by `model.22.` to get theirs).
//!
//! BatchNorm running statistics are `Var`s in the VarMap too (candle-nn
//! creates them through the VarBuilder and updates them in place in
//! `forward_t(.., train = true)`). They must not be handed to an optimizer:
//! use [`trainable_vars`].

pub mod anchors;
pub mod backbone;
pub mod blocks;
pub mod config;
pub mod detector;
pub mod fusion;
pub mod head;
pub mod neck;
pub mod teacher;

pub use anchors::{decode, dfl_expectation, dist2bbox, flatten_levels, make_anchors};
pub use backbone::{Backbone, Features};
pub use config::{Fusion, ModelConfig, Scale, SCALES};
pub use detector::Detector;
pub use head::{DetectHead, REG_MAX, STRIDES};
pub use neck::Neck;
pub use teacher::Teacher;

use anyhow::{ensure, Context, Result};
use candle_core::{Tensor, Var};
use candle_nn::{VarBuilder, VarMap};

/// A student detector: backbone + neck + head.
#[derive(Debug, Clone)]
pub struct YoloV8 {
    pub(crate) backbone: Backbone,
    pub(crate) neck: Neck,
    pub(crate) head: DetectHead,
    cfg: ModelConfig,
}

/// What [`YoloV8::forward_t`] returns.
#[derive(Debug, Clone)]
pub struct ModelOutput {
    /// Raw head outputs for strides 8, 16, 32: `[B, 4·REG_MAX + nc, H/s, W/s]`
    /// (box-distribution logits first, then class logits).
    pub levels: Vec<Tensor>,
    /// The neck outputs N3, N4, N5 (the features distillation matches).
    pub features: Features,
    /// Teachers: the fused P3, P4, P5 the neck consumed.
    pub fused: Option<Features>,
    /// Students: the backbone's P3, P4, P5 (what imitates a decoupled
    /// teacher's common part).
    pub backbone: Option<Features>,
    /// Decoupled teachers: the common part of each level (mean of the two
    /// streams' shared projections), what students imitate.
    pub common: Option<Features>,
    /// Decoupled teachers in training: the similarity + orthogonality loss
    /// of the split (scalar), added to `L_det`.
    pub aux_loss: Option<Tensor>,
}

impl YoloV8 {
    /// Builds the model from `vb`: from a `VarBuilder::from_varmap` to
    /// create fresh (initialised) weights, or from a checkpoint to load them.
    /// Input: 3-channel RGB.
    pub fn load(vb: VarBuilder, cfg: &ModelConfig) -> Result<Self> {
        let scale = cfg.validate()?;
        let backbone = Backbone::load(vb.pp("backbone"), 3, &scale)?;
        let neck = Neck::load(vb.pp("neck"), backbone.out_channels(), &scale)?;
        let head =
            DetectHead::load(vb.pp("head"), cfg.nc, neck.out_channels()).with_context(|| {
                format!(
                    "building the {} head for nc = {} ({:?})",
                    cfg.scale, cfg.nc, cfg.names
                )
            })?;
        Ok(Self {
            backbone,
            neck,
            head,
            cfg: cfg.clone(),
        })
    }

    pub fn config(&self) -> &ModelConfig {
        &self.cfg
    }

    pub fn nc(&self) -> usize {
        self.head.nc()
    }

    /// Channels of the neck outputs N3, N4, N5.
    pub fn feature_channels(&self) -> [usize; 3] {
        self.neck.out_channels()
    }

    /// Channels of the backbone outputs P3, P4, P5.
    pub fn backbone_channels(&self) -> [usize; 3] {
        self.backbone.out_channels()
    }

    /// `x`: `[B, 3, H, W]`, values 0..1, H and W multiples of 32.
    /// `train` = true: BatchNorm uses batch statistics and updates its
    /// running statistics; false: inference.
    pub fn forward_t(&self, x: &Tensor, train: bool) -> Result<ModelOutput> {
        let (_, c, h, w) = x.dims4().context("model input must be [B, C, H, W]")?;
        ensure!(
            c == self.backbone.in_channels,
            "model input has {c} channels, the backbone expects {}",
            self.backbone.in_channels
        );
        ensure!(
            h % 32 == 0 && w % 32 == 0 && h > 0 && w > 0,
            "model input is {h}×{w}; height and width must be positive multiples of 32 (the largest stride)"
        );
        let p = self.backbone.forward_t(x, train)?;
        let features = self.neck.forward_t(&p, train)?;
        let levels = self.head.forward_t(&features, train)?;
        Ok(ModelOutput {
            levels,
            features,
            fused: None,
            backbone: Some(p),
            common: None,
            aux_loss: None,
        })
    }

    /// Inference: `[B, 3, H, W]` → `[B, 4 + nc, N]` (cx, cy, w, h in input
    /// pixels, then sigmoid class scores), what the ONNX export computes.
    pub fn predict(&self, x: &Tensor) -> Result<Tensor> {
        decode(&self.forward_t(x, false)?.levels, REG_MAX)
    }
}

/// True for BatchNorm running statistics (`…running_mean`, `…running_var`).
pub fn is_running_stat(name: &str) -> bool {
    name.ends_with("running_mean") || name.ends_with("running_var")
}

/// The variables an optimizer should update: every Var in `varmap` except
/// BatchNorm running statistics, which candle-nn keeps as Vars in the same
/// VarMap (they get no gradient — BatchNorm updates them itself — but an
/// optimizer with weight decay must not touch them either). Sorted by name
/// so the order is reproducible.
pub fn trainable_vars(varmap: &VarMap) -> Vec<Var> {
    let data = varmap.data().lock().expect("VarMap mutex poisoned");
    let mut named: Vec<(&String, &Var)> =
        data.iter().filter(|(k, _)| !is_running_stat(k)).collect();
    named.sort_by(|a, b| a.0.cmp(b.0));
    named.into_iter().map(|(_, v)| v.clone()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trainer::ops::max_abs_diff;
    use candle_core::{DType, Device, IndexOp};

    fn build(scale: &str, nc: usize, imgsz: usize) -> (VarMap, YoloV8) {
        let names: Vec<String> = (0..nc).map(|i| format!("c{i}")).collect();
        let cfg = ModelConfig {
            scale: scale.into(),
            nc,
            names,
            imgsz,
            fusion: None,
        };
        let varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
        let model = YoloV8::load(vb, &cfg).unwrap();
        (varmap, model)
    }

    #[test]
    fn output_shapes_for_all_scales_sizes_and_class_counts() {
        for scale in ["student-p", "student-n"] {
            for imgsz in [64, 128] {
                for nc in 1..=3 {
                    let (_, model) = build(scale, nc, imgsz);
                    let x = Tensor::rand(0f32, 1f32, (1, 3, imgsz, imgsz), &Device::Cpu).unwrap();
                    let out = model.forward_t(&x, false).unwrap();
                    let ch = model.neck.out_channels();
                    for (l, s) in STRIDES.iter().enumerate() {
                        let g = imgsz / s;
                        assert_eq!(
                            out.levels[l].dims(),
                            [1, 64 + nc, g, g],
                            "{scale} {imgsz} nc={nc}"
                        );
                        assert_eq!(out.features.as_array()[l].dims(), [1, ch[l], g, g]);
                    }
                    let n: usize = STRIDES.iter().map(|s| (imgsz / s).pow(2)).sum();
                    let y = decode(&out.levels, REG_MAX).unwrap();
                    assert_eq!(y.dims(), [1, 4 + nc, n]);
                    if scale == "student-p" && imgsz == 128 {
                        assert_eq!(n, 336);
                    }
                }
            }
        }
    }

    #[test]
    fn student_n_has_yolov8n_parameter_count() {
        let (varmap, _) = build("student-n", 80, 640);
        let data = varmap.data().lock().unwrap();
        let count = |pred: &dyn Fn(&str) -> bool| -> usize {
            data.iter()
                .filter(|(k, _)| pred(k))
                .map(|(_, v)| v.as_tensor().elem_count())
                .sum()
        };
        let trainable = count(&|k| !is_running_stat(k));
        // Ultralytics' yolov8n.yaml summary: 3,157,200 parameters of which
        // 3,157,184 have gradients; the other 16 are DFL's fixed arange
        // conv, which we keep as a constant instead of a parameter.
        assert_eq!(trainable, 3_157_184);
        // yolov8n.pt (fused, as `model.info()` reports it): each BatchNorm's
        // weight + bias become one conv bias, plus DFL's 16.
        let bn_channels = count(&|k| k.ends_with("running_mean"));
        assert_eq!(trainable - bn_channels + REG_MAX, 3_151_904);
        drop(data);
        let vars: usize = trainable_vars(&varmap)
            .iter()
            .map(|v| v.as_tensor().elem_count())
            .sum();
        assert_eq!(vars, trainable);
    }

    #[test]
    fn parameter_names_follow_the_yaml_layers() {
        let (varmap, _) = build("student-p", 2, 64);
        let data = varmap.data().lock().unwrap();
        for name in [
            "backbone.b0.conv.weight",
            "backbone.b0.bn.running_mean",
            "backbone.b2.m.0.cv1.conv.weight",
            "backbone.b9.cv2.bn.running_var",
            "neck.n12.cv1.conv.weight",
            "neck.n21.cv2.bn.bias",
            "head.cv2.0.2.bias",
            "head.cv3.2.1.bn.weight",
        ] {
            assert!(data.contains_key(name), "missing {name}");
        }
    }

    #[test]
    fn head_bias_init_matches_yolov8() {
        let (varmap, _) = build("student-p", 2, 64);
        let data = varmap.data().lock().unwrap();
        let bias = |k: &str| data[k].as_tensor().to_vec1::<f32>().unwrap();
        assert!(bias("head.cv2.1.2.bias").iter().all(|&b| b == 1.0));
        for (l, s) in STRIDES.iter().enumerate() {
            let expect = (5.0f64 / 2.0 / (640.0 / *s as f64).powi(2)).ln() as f32;
            let b = bias(&format!("head.cv3.{l}.2.bias"));
            assert_eq!(b.len(), 2);
            assert!(
                b.iter().all(|&v| (v - expect).abs() < 1e-6),
                "{b:?} vs {expect}"
            );
        }
        // Stride 8, nc 80: ln(5 / 80 / 6400) ≈ -11.5366
        assert!((head::class_bias_init(80, 8) - (-11.536_6)).abs() < 1e-3);
    }

    #[test]
    fn train_mode_updates_running_stats_and_eval_does_not() {
        let (varmap, model) = build("student-p", 1, 64);
        let key = "backbone.b0.bn.running_mean";
        let get = || {
            varmap.data().lock().unwrap()[key]
                .as_tensor()
                .copy()
                .unwrap()
        };
        let before = get();
        let x = Tensor::rand(0f32, 1f32, (2, 3, 64, 64), &Device::Cpu).unwrap();
        model.forward_t(&x, false).unwrap();
        assert_eq!(max_abs_diff(&before, &get()), 0.0);
        model.forward_t(&x, true).unwrap();
        assert!(
            max_abs_diff(&before, &get()) > 0.0,
            "train step left running_mean unchanged"
        );
        assert!(trainable_vars(&varmap).len() < varmap.all_vars().len());
    }

    #[test]
    fn bad_inputs_are_reported() {
        let (_, model) = build("student-p", 1, 64);
        let x = Tensor::zeros((1, 3, 48, 64), DType::F32, &Device::Cpu).unwrap();
        let e = model.forward_t(&x, false).unwrap_err().to_string();
        assert!(e.contains("48×64"), "{e}");
        let x = Tensor::zeros((1, 1, 64, 64), DType::F32, &Device::Cpu).unwrap();
        assert!(model
            .forward_t(&x, false)
            .unwrap_err()
            .to_string()
            .contains("1 channels"));
    }

    #[test]
    fn checkpoint_round_trip_and_missing_tensor_error() {
        let (varmap, model) = build("student-p", 2, 64);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ckpt.safetensors");
        varmap.save(&path).unwrap();
        let cfg = model.config().clone();
        let vb = unsafe {
            VarBuilder::from_mmaped_safetensors(&[&path], DType::F32, &Device::Cpu).unwrap()
        };
        let loaded = YoloV8::load(vb, &cfg).unwrap();
        let x = Tensor::rand(0f32, 1f32, (1, 3, 64, 64), &Device::Cpu).unwrap();
        assert_eq!(
            max_abs_diff(&model.predict(&x).unwrap(), &loaded.predict(&x).unwrap()),
            0.0
        );

        // A checkpoint for another class count names the tensor and layer.
        let cfg3 = ModelConfig {
            nc: 3,
            names: vec!["a".into(), "b".into(), "c".into()],
            ..cfg.clone()
        };
        let vb = unsafe {
            VarBuilder::from_mmaped_safetensors(&[&path], DType::F32, &Device::Cpu).unwrap()
        };
        let e = format!("{:#}", YoloV8::load(vb, &cfg3).unwrap_err());
        assert!(e.contains("head.cv3.0") && e.contains("shape"), "{e}");

        // A missing tensor is named.
        let mut tensors = candle_core::safetensors::load(&path, &Device::Cpu).unwrap();
        tensors.remove("neck.n16.bn.running_var");
        let vb = VarBuilder::from_tensors(tensors, DType::F32, &Device::Cpu);
        let e = format!("{:#}", YoloV8::load(vb, &cfg).unwrap_err());
        assert!(
            e.contains("neck.n16.bn.running_var") && e.contains("neck layer 16"),
            "{e}"
        );
    }

    #[test]
    fn make_anchors_by_hand() {
        let (points, strides) =
            make_anchors(&[(2, 3), (1, 1)], &[8, 16], 0.5, &Device::Cpu).unwrap();
        assert_eq!(
            points.to_vec2::<f32>().unwrap(),
            [
                [0.5, 0.5],
                [1.5, 0.5],
                [2.5, 0.5],
                [0.5, 1.5],
                [1.5, 1.5],
                [2.5, 1.5],
                [0.5, 0.5]
            ]
        );
        assert_eq!(
            strides.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            [8., 8., 8., 8., 8., 8., 16.]
        );
    }

    #[test]
    fn decode_peaked_distributions_by_hand() {
        // Levels for a 64×64 input: 8×8, 4×4, 2×2 cells; nc = 2.
        let dev = Device::Cpu;
        let nc = 2;
        let mut levels = Vec::new();
        for s in STRIDES {
            let g = 64 / s;
            // Box logits: a large logit at bin 3 for l/t, bin 5 for r/b
            // (softmax ≈ one-hot), so distances 3, 3, 5, 5 cells.
            let mut v = vec![0f32; (64 + nc) * g * g];
            for side in 0..4 {
                let bin = if side < 2 { 3 } else { 5 };
                for cell in 0..g * g {
                    v[(side * REG_MAX + bin) * g * g + cell] = 40.0;
                }
            }
            // Class logits: 0 → 0.5 and ln(3) → 0.75.
            for cell in 0..g * g {
                v[(64 + 1) * g * g + cell] = 3f32.ln();
            }
            levels.push(Tensor::from_vec(v, (1, 64 + nc, g, g), &dev).unwrap());
        }
        let y = decode(&levels, REG_MAX).unwrap();
        assert_eq!(y.dims(), [1, 6, 64 + 16 + 4]);
        // Anchor (1, 2) of the stride-8 level is index 2·8 + 1 = 17, at
        // (1.5, 2.5) cells: x1 = 1.5-3, x2 = 1.5+5 → cx = 2.5 cells, w = 8.
        let col = y.i((0, .., 17)).unwrap().to_vec1::<f32>().unwrap();
        let expect = [2.5 * 8.0, 3.5 * 8.0, 8.0 * 8.0, 8.0 * 8.0, 0.5, 0.75];
        for (a, e) in col.iter().zip(expect) {
            assert!((a - e).abs() < 1e-4, "{col:?} vs {expect:?}");
        }
        // First anchor of the stride-32 level (index 80): (0.5, 0.5) cells.
        let col = y.i((0, .., 80)).unwrap().to_vec1::<f32>().unwrap();
        let expect = [1.5 * 32.0, 1.5 * 32.0, 8.0 * 32.0, 8.0 * 32.0, 0.5, 0.75];
        for (a, e) in col.iter().zip(expect) {
            assert!((a - e).abs() < 1e-3, "{col:?} vs {expect:?}");
        }
    }

    #[test]
    fn dist2bbox_xyxy_and_uniform_dfl() {
        let dev = Device::Cpu;
        // Uniform logits → expectation (0 + … + 15) / 16 = 7.5.
        let d = dfl_expectation(
            &Tensor::zeros((1, 64, 1), DType::F32, &dev).unwrap(),
            REG_MAX,
        )
        .unwrap();
        assert!(d
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()
            .iter()
            .all(|&v| (v - 7.5).abs() < 1e-5));
        let dist = Tensor::from_vec(vec![1f32, 2., 3., 4.], (1, 4, 1), &dev).unwrap();
        let anchors = Tensor::from_vec(vec![10f32, 20.], (1, 2), &dev).unwrap();
        let xyxy = dist2bbox(&dist, &anchors, false)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        assert_eq!(xyxy, [9., 18., 13., 24.]);
        let xywh = dist2bbox(&dist, &anchors, true)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        assert_eq!(xywh, [11., 21., 4., 6.]);
    }
}
