//! `trainer distill`: train an RGB student with `L_det + α·L_distill` from
//! a frozen RGB+IR teacher checkpoint.

use crate::cmd_train;
use anyhow::Result;
use irdistill::trainer::distill::{DistillLoss, DistillOptions};
use irdistill::trainer::train::run::train;
use std::path::PathBuf;

#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    /// The teacher checkpoint (`trainer train --model teacher-p …`).
    #[arg(long)]
    pub teacher: PathBuf,
    /// Distillation terms, comma-separated.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "feature,contrastive,response"
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
    /// γ: feature-loss weight 1 + γ·foreground per cell.
    #[arg(long, default_value_t = DistillOptions::FEATURE_FG)]
    pub feature_fg: f64,
    /// InfoNCE temperature τ.
    #[arg(long, default_value_t = DistillOptions::TAU)]
    pub tau: f64,
    /// Response-distillation temperature T.
    #[arg(long, default_value_t = DistillOptions::TEMPERATURE)]
    pub temperature: f64,
    /// Weight of the box-distribution (DFL) KL inside the response term; 0 = off.
    #[arg(long, default_value_t = DistillOptions::LD_WEIGHT)]
    pub ld_weight: f64,
    /// Teacher detections at or above this score are the objects of unlabeled pairs.
    #[arg(long, default_value_t = DistillOptions::TEACHER_CONF)]
    pub teacher_conf: f32,
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
        feature_fg: a.feature_fg,
        tau: a.tau,
        temperature: a.temperature,
        ld_weight: a.ld_weight,
        teacher_conf: a.teacher_conf,
        unlabeled: a.unlabeled,
    });
    let rows = train(opts, &device, resume)?;
    cmd_train::print_summary(&rows, &out);
    Ok(())
}
