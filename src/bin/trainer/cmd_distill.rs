//! `trainer distill`: train an RGB student with `L_det + α·L_distill` from
//! a frozen RGB+IR teacher checkpoint.

use crate::cmd_train;
use anyhow::Result;
use irdistill::trainer::distill::feature::FeatureNorm;
use irdistill::trainer::distill::{DistillLoss, DistillOptions};
use irdistill::trainer::train::run::train;
use std::path::PathBuf;

#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    /// The teacher checkpoint (`trainer train --model teacher-p …`).
    #[arg(long)]
    pub teacher: PathBuf,
    /// Distillation terms, comma-separated (contrastive is off by default:
    /// flat after its first epoch; see docs/results/distill.md).
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "feature,response"
    )]
    pub losses: Vec<DistillLoss>,
    /// α in L_det + α·L_distill.
    #[arg(long, default_value_t = DistillOptions::ALPHA)]
    pub alpha: f64,
    /// w_f: weight of the feature (adapter L2) term.
    #[arg(long, default_value_t = DistillOptions::W_FEATURE)]
    pub w_feature: f64,
    /// w_c: weight of the InfoNCE term.
    #[arg(long, default_value_t = DistillOptions::W_CONTRASTIVE)]
    pub w_contrastive: f64,
    /// w_r: weight of the response (class KL + box LD) term.
    #[arg(long, default_value_t = DistillOptions::W_RESPONSE)]
    pub w_response: f64,
    /// How the feature term normalises maps: `batch` (per channel over the
    /// batch, foreground and background means apart) or `image` (the first
    /// recipe: per image, one mean weighted 1 + γ·foreground).
    #[arg(long, value_enum, default_value = "batch")]
    pub feature_norm: FeatureNorm,
    /// Weight of the foreground mean of the feature term (`image`: γ).
    #[arg(long, default_value_t = DistillOptions::FEATURE_FG)]
    pub feature_fg: f64,
    /// Weight of the background mean of the feature term (`batch` only).
    #[arg(long, default_value_t = DistillOptions::FEATURE_BG)]
    pub feature_bg: f64,
    /// InfoNCE temperature τ.
    #[arg(long, default_value_t = DistillOptions::TAU)]
    pub tau: f64,
    /// Response-distillation temperature T.
    #[arg(long, default_value_t = DistillOptions::TEMPERATURE)]
    pub temperature: f64,
    /// Weight of the box-distribution (DFL) KL inside the response term; 0 = off.
    #[arg(long, default_value_t = DistillOptions::LD_WEIGHT)]
    pub ld_weight: f64,
    /// Temperature of the box-distribution KL (localisation distillation).
    #[arg(long, default_value_t = DistillOptions::LD_TEMPERATURE)]
    pub ld_temperature: f64,
    /// Teacher detections at or above this score are the objects (and
    /// pseudo-labels) of unlabeled pairs; default: the threshold with the
    /// best F1 on the validation pairs.
    #[arg(long)]
    pub teacher_conf: Option<f32>,
    /// Weight of the detection loss on the teacher's pseudo-labels of
    /// unlabeled pairs; 0: they add L_distill only.
    #[arg(long, default_value_t = DistillOptions::PSEUDO_WEIGHT)]
    pub pseudo_weight: f64,
    /// Start the student from the teacher's RGB backbone, neck and head.
    #[arg(long)]
    pub init_from_teacher: bool,
    /// Unlabeled RGB+IR pairs (a folder, or synth:N): they add L_distill only.
    #[arg(long)]
    pub unlabeled: Option<String>,
    #[command(flatten)]
    pub train: cmd_train::Args,
}

pub fn run(a: Args) -> Result<()> {
    let out = a.train.out.clone();
    let (device, resume) = (a.train.device.clone(), a.train.resume);
    let mut opts = cmd_train::options(a.train.clone())?;
    opts.distill = Some(DistillOptions {
        teacher: a.teacher,
        losses: a.losses,
        alpha: a.alpha,
        w_feature: a.w_feature,
        w_contrastive: a.w_contrastive,
        w_response: a.w_response,
        feature_norm: a.feature_norm,
        feature_fg: a.feature_fg,
        feature_bg: a.feature_bg,
        tau: a.tau,
        temperature: a.temperature,
        ld_weight: a.ld_weight,
        ld_temperature: Some(a.ld_temperature),
        teacher_conf: a.teacher_conf,
        pseudo_weight: a.pseudo_weight,
        init_from_teacher: a.init_from_teacher,
        unlabeled: a.unlabeled,
    });
    let rows = train(opts, &device, resume)?;
    cmd_train::print_summary(&rows, &out);
    Ok(())
}
