//! Distillation from the frozen RGB+IR teacher into the RGB student:
//!
//! ```text
//! pair ─ rgb ─ student (train) ─ levels, N3..N5 ─┬─ L_det (labeled pairs)
//!      └ rgb+ir ─ teacher (eval, no grad) ───────┴─ L_distill = w_f·L_feature + w_c·L_InfoNCE + w_r·L_response
//! L_total = L_det + α·L_distill
//! ```
//!
//! - [`feature`]: adapter-mapped neck features vs the teacher's, each
//!   channel normalised over the batch (PKD), foreground and background
//!   averaged separately (FGD);
//! - [`contrastive`]: InfoNCE between per-object student and teacher
//!   embeddings (off by default: flat after its first epoch, no gain at 16
//!   epochs; measured again by the experiment's `distilled_contrastive`);
//! - [`response`]: per-class Bernoulli KL of class scores, plus KL of the DFL
//!   box distributions (localisation distillation, at its own temperature);
//! - [`pseudo`]: on unlabeled pairs, the teacher's detections (it sees IR)
//!   above the threshold with the best F1 on validation become score-weighted
//!   detection targets for the student.
//!
//! The teacher's features are its neck outputs N3/N4/N5, computed from the
//! fused P3/P4/P5 (the "fused features" of the design; the student's neck
//! output is matched to the teacher's neck output, stage for stage, rather
//! than to the raw fusion output before the teacher's neck).
//!
//! The teacher is frozen: it is built from plain tensors (never `Var`s, so
//! no gradient can reach it and no optimizer holds it), run in eval mode
//! (BatchNorm statistics untouched) and its outputs are detached. The
//! adapters and projection heads (`distill.*` in checkpoints) train with
//! the student and are never exported.

pub mod contrastive;
pub mod feature;
pub mod objects;
pub mod pseudo;
pub mod response;

use crate::shared::bbox::{BBox, Detection, Label};
use crate::shared::nms::{self, NmsParams};
use crate::trainer::checkpoint;
use crate::trainer::model::{Detector, Features, Fusion, ModelConfig, ModelOutput, STRIDES};
use anyhow::{bail, ensure, Context, Result};
use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use contrastive::ContrastHeads;
use feature::{FeatureAdapters, FeatureNorm};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::PathBuf;

/// The three distillation terms (`--losses`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum DistillLoss {
    Feature,
    Contrastive,
    Response,
}

/// What `trainer distill` adds to a training run (stored in checkpoints).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DistillOptions {
    /// The teacher checkpoint (`trainer train --model teacher-*`).
    pub teacher: PathBuf,
    pub losses: Vec<DistillLoss>,
    /// α in `L_det + α·L_distill`.
    pub alpha: f64,
    pub w_feature: f64,
    pub w_contrastive: f64,
    pub w_response: f64,
    /// How feature maps are normalised and weighted (`image`: the first
    /// recipe, kept for old checkpoints and as an ablation).
    #[serde(default = "FeatureNorm::legacy")]
    pub feature_norm: FeatureNorm,
    /// `batch`: weight of the foreground mean squared error; `image`: γ in
    /// the per-cell weight `1 + γ·fg`.
    pub feature_fg: f64,
    /// `batch`: weight of the background mean squared error.
    #[serde(default)]
    pub feature_bg: f64,
    /// InfoNCE temperature τ.
    pub tau: f64,
    /// Response temperature T.
    pub temperature: f64,
    /// Weight of the DFL (box) KL inside the response term; 0 turns LD off.
    pub ld_weight: f64,
    /// Temperature of the box KL (LD's paper: 10); none: `temperature`.
    #[serde(default)]
    pub ld_temperature: Option<f64>,
    /// Teacher detections at or above this score are the objects of
    /// unlabeled pairs (pseudo-labels, contrastive term, foreground masks);
    /// none: the threshold with the best F1 on the validation pairs.
    pub teacher_conf: Option<f32>,
    /// Weight of the detection loss on the teacher's pseudo-labels of
    /// unlabeled pairs (0: unlabeled pairs add `L_distill` only).
    #[serde(default)]
    pub pseudo_weight: f64,
    /// Start the student from the teacher's RGB backbone, neck and head
    /// (the names line up) instead of from the seed.
    #[serde(default)]
    pub init_from_teacher: bool,
    /// Unlabeled RGB+IR pairs (`DIR` or `synth:N`): L_distill only.
    pub unlabeled: Option<String>,
}

impl DistillOptions {
    /// The documented defaults (also `trainer distill`'s flag defaults).
    pub const ALPHA: f64 = 1.0;
    pub const W_FEATURE: f64 = 1.0;
    pub const W_CONTRASTIVE: f64 = 0.25;
    pub const W_RESPONSE: f64 = 1.0;
    /// FGD weighs foreground twice the background; the background, where
    /// the IR-only structure RGB cannot predict lives, gets a quarter.
    pub const FEATURE_FG: f64 = 2.0;
    pub const FEATURE_BG: f64 = 0.5;
    pub const TAU: f64 = 0.1;
    pub const TEMPERATURE: f64 = 2.0;
    pub const LD_WEIGHT: f64 = 0.25;
    pub const LD_TEMPERATURE: f64 = 10.0;
    pub const PSEUDO_WEIGHT: f64 = 1.0;
    /// The default terms: contrastive is off (its loss is flat after the
    /// first epoch, no gain at 16 epochs; the `distilled_contrastive` arm
    /// measures it; `--losses` turns it on).
    pub const LOSSES: [DistillLoss; 2] = [DistillLoss::Feature, DistillLoss::Response];

    /// The default recipe, no unlabeled pairs.
    pub fn with_defaults(teacher: PathBuf) -> Self {
        Self {
            teacher,
            losses: Self::LOSSES.to_vec(),
            alpha: Self::ALPHA,
            w_feature: Self::W_FEATURE,
            w_contrastive: Self::W_CONTRASTIVE,
            w_response: Self::W_RESPONSE,
            feature_norm: FeatureNorm::Batch,
            feature_fg: Self::FEATURE_FG,
            feature_bg: Self::FEATURE_BG,
            tau: Self::TAU,
            temperature: Self::TEMPERATURE,
            ld_weight: Self::LD_WEIGHT,
            ld_temperature: Some(Self::LD_TEMPERATURE),
            teacher_conf: None,
            pseudo_weight: Self::PSEUDO_WEIGHT,
            init_from_teacher: false,
            unlabeled: None,
        }
    }

    pub fn uses(&self, l: DistillLoss) -> bool {
        self.losses.contains(&l)
    }
}

/// One batch's distillation terms.
pub struct DistillTerms {
    /// `w_f·L_feature + w_c·L_InfoNCE + w_r·L_response` (scalar, not yet × α).
    pub total: Tensor,
    pub feature: f32,
    pub contrastive: f32,
    pub response: f32,
}

pub struct Distiller {
    teacher: Detector,
    teacher_weights: HashMap<String, Tensor>,
    /// Adapters and projection heads: trained with the student, not exported.
    pub heads: VarMap,
    adapters: Option<FeatureAdapters>,
    contrast: Option<ContrastHeads>,
    opts: DistillOptions,
    nc: usize,
    /// Teacher detections at or above this score count as objects of
    /// unlabeled pairs (`teacher_conf`, or set by [`Self::calibrate`]).
    conf: f32,
}

impl Distiller {
    /// Loads the teacher from `opts.teacher` and builds the heads for a
    /// student of `student` config whose neck and backbone give
    /// `student_channels` (`[neck, backbone]`: a decoupled teacher's common
    /// part is imitated by the student's backbone, any other teacher's neck
    /// by its neck).
    pub fn new(
        opts: &DistillOptions,
        student: &ModelConfig,
        student_channels: [[usize; 3]; 2],
        device: &Device,
    ) -> Result<Self> {
        ensure!(
            !opts.losses.is_empty(),
            "--losses: name at least one of feature, contrastive, response"
        );
        ensure!(
            opts.alpha >= 0.0 && opts.alpha.is_finite(),
            "--alpha must be a finite number ≥ 0"
        );
        ensure!(opts.tau > 0.0, "--tau must be positive");
        ensure!(opts.temperature > 0.0, "--temperature must be positive");
        let path = &opts.teacher;
        let ckpt = checkpoint::load(path, device)
            .with_context(|| format!("--teacher {}", path.display()))?;
        let cfg = ckpt.meta.config.clone();
        if !cfg.is_teacher() {
            bail!(
                "--teacher {}: holds a {} RGB student, not an RGB+IR teacher (train one with `trainer train --model teacher-p`)",
                path.display(),
                cfg.scale
            );
        }
        ensure!(
            cfg.names == student.names,
            "--teacher {}: its classes {:?} differ from the data's {:?}",
            path.display(),
            cfg.names,
            student.names
        );
        let teacher_weights = ckpt.inference_weights();
        let vb = VarBuilder::from_tensors(teacher_weights.clone(), DType::F32, device);
        let teacher = Detector::load(vb, &cfg)
            .with_context(|| format!("{}: weights do not fit its model config", path.display()))?;
        let decoupled = cfg.fusion == Some(Fusion::Decoupled);
        let (student_channels, teacher_channels) = match &teacher {
            Detector::Teacher(t) if decoupled => (student_channels[1], t.fused_channels()),
            Detector::Teacher(t) => (student_channels[0], t.feature_channels()),
            Detector::Student(_) => unreachable!("checked is_teacher above"),
        };
        let heads = VarMap::new();
        let vb = VarBuilder::from_varmap(&heads, DType::F32, device);
        let adapters = opts
            .uses(DistillLoss::Feature)
            .then(|| FeatureAdapters::load(vb.pp("adapter"), student_channels, teacher_channels))
            .transpose()?;
        let contrast = opts
            .uses(DistillLoss::Contrastive)
            .then(|| {
                ContrastHeads::load(
                    vb.pp("project"),
                    student_channels,
                    teacher_channels,
                    opts.tau,
                )
            })
            .transpose()?;
        Ok(Self {
            teacher,
            teacher_weights,
            heads,
            adapters,
            contrast,
            opts: opts.clone(),
            nc: student.nc,
            conf: opts.teacher_conf.unwrap_or(pseudo::UNCALIBRATED_CONF),
        })
    }

    pub fn options(&self) -> &DistillOptions {
        &self.opts
    }

    /// The score at or above which teacher detections are objects.
    pub fn conf(&self) -> f32 {
        self.conf
    }

    pub fn teacher(&self) -> &Detector {
        &self.teacher
    }

    /// The teacher's tensors as loaded (for checks that it stays frozen).
    pub fn teacher_weights(&self) -> &HashMap<String, Tensor> {
        &self.teacher_weights
    }

    /// The teacher's outputs for a batch, in eval mode and detached.
    pub fn teacher_forward(&self, rgb: &Tensor, ir: &Tensor) -> Result<ModelOutput> {
        let out = self.teacher.forward_t(rgb, Some(ir), false)?;
        let detach3 = |f: &crate::trainer::model::Features| crate::trainer::model::Features {
            p3: f.p3.detach(),
            p4: f.p4.detach(),
            p5: f.p5.detach(),
        };
        Ok(ModelOutput {
            levels: out.levels.iter().map(|t| t.detach()).collect(),
            features: detach3(&out.features),
            fused: out.fused.as_ref().map(detach3),
            backbone: None,
            common: out.common.as_ref().map(detach3),
            aux_loss: None,
        })
    }

    /// The objects of each image: ground truth when `labels` is given, else
    /// the teacher's detections at or above [`Self::conf`].
    pub fn objects(
        &self,
        teacher: &ModelOutput,
        labels: Option<&[Vec<Label>]>,
    ) -> Result<Vec<Vec<BBox>>> {
        if let Some(labels) = labels {
            return Ok(labels
                .iter()
                .map(|ls| ls.iter().map(|l| l.bbox).collect())
                .collect());
        }
        Ok(self
            .teacher_detections(teacher)?
            .into_iter()
            .map(|ds| ds.into_iter().map(|d| d.bbox).collect())
            .collect())
    }

    /// The teacher's detections per image (after NMS) at or above
    /// [`Self::conf`], with class ids and scores.
    pub fn teacher_detections(&self, teacher: &ModelOutput) -> Result<Vec<Vec<Detection>>> {
        let pred = crate::trainer::model::decode(&teacher.levels, crate::trainer::model::REG_MAX)?
            .to_device(&Device::Cpu)?
            .to_dtype(DType::F32)?; // [B, 4 + nc, N]
        let params = NmsParams {
            conf: self.conf,
            ..NmsParams::PREDICT
        };
        (0..pred.dim(0)?)
            .map(|i| {
                let row: Vec<f32> = pred.get(i)?.flatten_all()?.to_vec1()?;
                Ok(nms::detections(&row, self.nc, &params))
            })
            .collect()
    }

    /// The distillation terms of one batch. `labels`: the batch's ground
    /// truth, or the teacher's pseudo-labels of unlabeled pairs (`None`:
    /// its detections are decoded here). `seed` picks the background
    /// negatives (deterministic per step).
    pub fn loss(
        &self,
        student: &ModelOutput,
        teacher: &ModelOutput,
        labels: Option<&[Vec<Label>]>,
        seed: u64,
    ) -> Result<DistillTerms> {
        let device = student.levels[0].device().clone();
        let objects = self.objects(teacher, labels)?;
        let (s, t) = imitated(student, teacher)?;
        let mut total = Tensor::zeros((), DType::F32, &device)?;
        let (mut feature, mut contrastive, mut response) = (0f32, 0f32, 0f32);
        if let Some(adapters) = &self.adapters {
            let fg = self.foreground(teacher, &objects)?;
            let o = &self.opts;
            let l = adapters.loss(s, t, &fg, o.feature_norm, o.feature_fg, o.feature_bg)?;
            feature = l.to_scalar()?;
            total = (total + l.affine(self.opts.w_feature, 0.0)?)?;
        }
        if let Some(heads) = &self.contrast {
            if let Some(l) = heads.loss(s, t, &objects, seed)? {
                contrastive = l.to_scalar()?;
                total = (total + l.affine(self.opts.w_contrastive, 0.0)?)?;
            }
        }
        if self.opts.uses(DistillLoss::Response) {
            let (cls, ld) = response::response_loss(
                &student.levels,
                &teacher.levels,
                self.nc,
                self.opts.temperature,
                self.opts.ld_temperature.unwrap_or(self.opts.temperature),
            )?;
            let l = (cls + ld.affine(self.opts.ld_weight, 0.0)?)?;
            response = l.to_scalar()?;
            total = (total + l.affine(self.opts.w_response, 0.0)?)?;
        }
        Ok(DistillTerms {
            total,
            feature,
            contrastive,
            response,
        })
    }

    /// Per level `[B, 1, H, W]`: max(object-box mask, teacher confidence).
    fn foreground(&self, teacher: &ModelOutput, objects: &[Vec<BBox>]) -> Result<Vec<Tensor>> {
        let box_ch = 4 * crate::trainer::model::REG_MAX;
        teacher
            .levels
            .iter()
            .zip(STRIDES)
            .map(|(lv, stride)| {
                let (_, _, h, w) = lv.dims4()?;
                let conf =
                    candle_nn::ops::sigmoid(&lv.narrow(1, box_ch, self.nc)?)?.max_keepdim(1)?;
                let mask = objects::box_mask(objects, stride, h, w, lv.device())?;
                Ok(conf.maximum(&mask)?)
            })
            .collect()
    }
}

/// The feature pairs the student imitates: a decoupled teacher's common
/// part by the student's backbone levels, otherwise neck by neck.
fn imitated<'a>(
    student: &'a ModelOutput,
    teacher: &'a ModelOutput,
) -> Result<([&'a Tensor; 3], [&'a Tensor; 3])> {
    Ok(match &teacher.common {
        Some(common) => {
            let backbone: &Features = student
                .backbone
                .as_ref()
                .context("the student output has no backbone levels")?;
            (backbone.as_array(), common.as_array())
        }
        None => (student.features.as_array(), teacher.features.as_array()),
    })
}
