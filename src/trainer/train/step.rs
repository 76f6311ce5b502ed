//! The parts of one optimizer step beside the detection loss: `α·L_distill`
//! from the frozen teacher (on the labeled batch, and on an unlabeled one
//! when given), the check that stops a diverging run, and where the step's
//! time goes (`trainer bench`).

use super::inputs::batch_inputs;
use super::loader::Batch;
use crate::trainer::distill::Distiller;
use crate::trainer::loss::DetectionLoss;
use crate::trainer::model::{Detector, ModelOutput};
use anyhow::{bail, Context, Result};
use candle_core::{Device, Tensor};
use serde::Serialize;
use std::time::Instant;

/// Where a training step's time goes, in milliseconds.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct StepTimes {
    /// Model forward (and the teacher's, when distilling).
    pub forward_ms: f64,
    /// Detection loss (assigner included) and distillation losses.
    pub loss_ms: f64,
    pub backward_ms: f64,
    /// Optimizer step and EMA update.
    pub optimizer_ms: f64,
}

pub(super) fn ms_since(t0: Instant) -> f64 {
    t0.elapsed().as_secs_f64() * 1e3
}

/// What the distillation part of one step reads: the distiller, the
/// student and the labeled batch with the student's output on it.
pub(super) struct DistillStep<'a> {
    pub distiller: &'a Distiller,
    /// The student being trained (forwarded again on unlabeled pairs).
    pub student: &'a Detector,
    /// `L_det`, also of the teacher's pseudo-labels on unlabeled pairs.
    pub det_loss: &'a DetectionLoss,
    /// Weight α of `L_distill` beside `L_det`.
    pub alpha: f64,
    /// Seeds the losses' sampling; differs from step to step.
    pub seed: u64,
    pub imgsz: usize,
    pub device: &'a Device,
    /// The labeled batch (its labels guide the losses).
    pub batch: &'a Batch,
    /// Its RGB `[B, 3, S, S]` and IR `[B, 1, S, S]` images.
    pub rgb: &'a Tensor,
    pub ir: Option<&'a Tensor>,
    /// The student's train-mode output on `rgb`.
    pub student_out: &'a ModelOutput,
}

impl DistillStep<'_> {
    /// Adds `α·B·L_distill` of the labeled batch to `total`; adds the
    /// distillation value (before α) to `value`, its (feature, contrastive,
    /// response) terms to `term_sums`, and moves the teacher's forward time
    /// from `loss_ms` to `forward_ms` of `times`.
    pub(super) fn add_labeled(
        &self,
        total: Tensor,
        value: &mut f64,
        term_sums: &mut [f64; 4],
        times: &mut StepTimes,
    ) -> Result<Tensor> {
        let ir = self
            .ir
            .context("distillation needs the IR image of each pair")?;
        let t1 = Instant::now();
        let teacher = self.distiller.teacher_forward(self.rgb, ir)?;
        let teacher_ms = ms_since(t1);
        times.forward_ms += teacher_ms;
        times.loss_ms -= teacher_ms;
        let terms = self.distiller.loss(
            self.student_out,
            &teacher,
            Some(&self.batch.labels),
            self.seed,
        )?;
        *value += terms.total.to_scalar::<f32>()? as f64;
        for (sum, v) in term_sums
            .iter_mut()
            .zip([terms.feature, terms.contrastive, terms.response])
        {
            *sum += v as f64;
        }
        // × B like L_det (ultralytics scales its loss by the batch size)
        Ok((total
            + terms
                .total
                .affine(self.alpha * self.batch.len() as f64, 0.0)?)?)
    }

    /// Adds `α·B·L_distill` of the unlabeled batch `u` (student and teacher
    /// forwarded on it here) to `total`, and its value (before α) to `value`;
    /// with a pseudo-label weight w, also `w·L_det` of the teacher's
    /// score-weighted pseudo-labels (its value to `pseudo`).
    pub(super) fn add_unlabeled(
        &self,
        total: Tensor,
        u: &Batch,
        value: &mut f64,
        pseudo: &mut f64,
    ) -> Result<Tensor> {
        let (ux, uir) = batch_inputs(u, self.imgsz, self.device)?;
        let uir = uir.context("unlabeled pairs need their IR image")?;
        let student = self.student.forward_t(&ux, None, true)?;
        let teacher = self.distiller.teacher_forward(&ux, &uir)?;
        // the teacher's detections, decoded once: the objects of L_distill
        // and, weighted, the targets of the pseudo-label L_det
        let p = self.distiller.pseudo_labels(&teacher)?;
        let terms = self
            .distiller
            .loss(&student, &teacher, Some(&p.labels), self.seed ^ 1)?;
        *value += terms.total.to_scalar::<f32>()? as f64;
        let mut total = (total + terms.total.affine(self.alpha * u.len() as f64, 0.0)?)?;
        let w = self.distiller.options().pseudo_weight;
        if w > 0.0 {
            let l = self
                .det_loss
                .compute_weighted(&student.levels, &p.labels, Some(&p.weights))?;
            *pseudo += (l.box_loss + l.cls_loss + l.dfl_loss) as f64;
            // L_det is already × B
            total = (total + l.total.affine(w, 0.0)?)?;
        }
        Ok(total)
    }
}

/// Stops the run at the first non-finite loss, naming the step `at` and
/// the (box, cls, dfl, distill) values.
pub(super) fn ensure_finite(parts: &[f64; 4], at: &str) -> Result<()> {
    if !parts.iter().all(|v| v.is_finite()) {
        bail!(
            "non-finite loss at {at}: box {} cls {} dfl {} distill {}; stopping (lower --lr0?)",
            parts[0],
            parts[1],
            parts[2],
            parts[3]
        );
    }
    Ok(())
}
