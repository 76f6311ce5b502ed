//! A trained detector of either kind, so the training loop, validation and
//! checkpoints handle students and teachers alike.

use anyhow::{Context, Result};
use candle_core::Tensor;
use candle_nn::VarBuilder;

use super::{decode, ModelConfig, ModelOutput, Teacher, YoloV8, REG_MAX};

#[derive(Debug, Clone)]
// Both boxed: the models are large structs of layer handles, and the enum
// is moved around by value.
pub enum Detector {
    /// RGB only: what is exported and deployed.
    Student(Box<YoloV8>),
    /// RGB+IR, for training and distillation only.
    Teacher(Box<Teacher>),
}

impl Detector {
    /// A student or a teacher, as `cfg.scale` says.
    pub fn load(vb: VarBuilder, cfg: &ModelConfig) -> Result<Self> {
        Ok(if cfg.is_teacher() {
            Detector::Teacher(Box::new(Teacher::load(vb, cfg)?))
        } else {
            Detector::Student(Box::new(YoloV8::load(vb, cfg)?))
        })
    }

    pub fn config(&self) -> &ModelConfig {
        match self {
            Detector::Student(m) => m.config(),
            Detector::Teacher(t) => t.config(),
        }
    }

    /// True when the model needs the IR image too.
    pub fn needs_ir(&self) -> bool {
        matches!(self, Detector::Teacher(_))
    }

    /// `rgb` `[B, 3, H, W]`; `ir` `[B, 1, H, W]` (teachers only; ignored by students).
    pub fn forward_t(&self, rgb: &Tensor, ir: Option<&Tensor>, train: bool) -> Result<ModelOutput> {
        match self {
            Detector::Student(m) => m.forward_t(rgb, train),
            Detector::Teacher(t) => {
                let ir = ir.context("the teacher needs the IR image of each pair")?;
                t.forward_t(rgb, ir, train)
            }
        }
    }

    /// Inference: `[B, 4 + nc, N]` (cx, cy, w, h in input pixels, class scores).
    pub fn predict(&self, rgb: &Tensor, ir: Option<&Tensor>) -> Result<Tensor> {
        decode(&self.forward_t(rgb, ir, false)?.levels, REG_MAX)
    }

    /// The student, or an error naming what was given instead.
    pub fn into_student(self, what: &str) -> Result<YoloV8> {
        match self {
            Detector::Student(m) => Ok(*m),
            Detector::Teacher(t) => anyhow::bail!(
                "{what} is a {} RGB+IR teacher ({} fusion); only RGB students can be exported or run on RGB alone — distill one with `trainer distill`",
                t.config().scale,
                t.fusion()
            ),
        }
    }
}
