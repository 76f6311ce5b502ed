//! `trainer pseudo-label`: a teacher labels unlabeled RGB+IR pairs once and
//! writes them as a paired YOLO-txt dataset for plain `trainer train`.

use anyhow::Result;
use irdistill::trainer::pseudo_label::{pseudo_label, PseudoLabelOptions};
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The RGB+IR teacher checkpoint.
    #[arg(long)]
    pub teacher: PathBuf,
    /// Unlabeled pairs: a folder (images/rgb + images/ir, LLVIP's visible +
    /// infrared, or rgb + ir) or synth:N[:CONDITIONS].
    #[arg(long)]
    pub data: String,
    /// A new (or empty) folder for the labeled dataset.
    #[arg(long)]
    pub out: PathBuf,
    /// Score threshold; default: the one with the best F1 on --val-data.
    #[arg(long)]
    pub conf: Option<f32>,
    /// Labeled pairs (their val split) the threshold is chosen on.
    #[arg(long, default_value = "synth")]
    pub val_data: String,
    /// Validation pairs when --val-data is synth.
    #[arg(long, default_value_t = 200)]
    pub synth_val: usize,
    #[arg(long, default_value_t = 16)]
    pub batch: usize,
    #[arg(long, default_value_t = 2)]
    pub workers: usize,
    #[arg(long, default_value = "cpu")]
    pub device: String,
}

pub fn run(a: Args) -> Result<()> {
    let summary = pseudo_label(&PseudoLabelOptions {
        teacher: a.teacher,
        data: a.data,
        out: a.out.clone(),
        conf: a.conf,
        val_data: a.val_data,
        synth_val: a.synth_val,
        batch: a.batch,
        workers: a.workers,
        device: a.device,
    })?;
    if let Some(q) = &summary.validation {
        eprintln!(
            "threshold {:.2}: best F1 on {} validation pairs (precision {:.3}, recall {:.3})",
            q.threshold, q.images, q.precision, q.recall
        );
    }
    eprintln!(
        "wrote {} pairs with {} pseudo-labels to {}; train on them with `trainer train --data {}`",
        summary.pairs,
        summary.objects,
        a.out.display(),
        a.out.display()
    );
    println!("{}", serde_json::to_string(&summary)?);
    Ok(())
}
