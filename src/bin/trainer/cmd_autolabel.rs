//! `trainer autolabel`: labels for unlabeled RGB+IR pairs from the thermal
//! image (`--method ir`, no model) or a teacher (`--method teacher`, what
//! `trainer pseudo-label` does).

use anyhow::{ensure, Result};
use irdistill::trainer::autolabel::{
    autolabel_ir, AutolabelOptions, DEFAULT_IR_CONF, SUMMARY_FILE,
};
use irdistill::trainer::pseudo_label::{pseudo_label, PseudoLabelOptions};
use std::path::PathBuf;

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    /// Persons found in the IR image by a classical detector.
    Ir,
    /// A trained RGB+IR teacher's detections (needs --teacher).
    Teacher,
}

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Unlabeled pairs: images/rgb + images/ir, LLVIP's visible + infrared
    /// (Annotations/ ignored), or rgb + ir.
    #[arg(long)]
    pub data: PathBuf,
    /// A new (or empty) folder for the labeled dataset.
    #[arg(long)]
    pub out: PathBuf,
    #[arg(long, value_enum, default_value = "ir")]
    pub method: Method,
    /// With --method teacher: the RGB+IR teacher checkpoint.
    #[arg(long)]
    pub teacher: Option<PathBuf>,
    /// Score threshold of the boxes written (default: 0.5 for ir; for a
    /// teacher, best F1 on its validation data).
    #[arg(long)]
    pub conf: Option<f32>,
    /// With --method teacher and no --conf: labeled pairs (their val split)
    /// the threshold is chosen on (best F1).
    #[arg(long, default_value = "synth")]
    pub val_data: String,
    /// With --method teacher: cpu or cuda.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// With --method teacher: pairs per forward pass.
    #[arg(long, default_value_t = 16)]
    pub batch: usize,
    /// With --method ir: human-labelled pairs (a dataset folder) to score
    /// the labeller on; written to OUT/autolabel.json.
    #[arg(long)]
    pub eval: Option<PathBuf>,
}

pub fn run(a: Args) -> Result<()> {
    match a.method {
        Method::Ir => {
            ensure!(
                a.teacher.is_none() && a.val_data == "synth" && a.device == "cpu",
                "--teacher, --val-data and --device are for --method teacher"
            );
            let summary = autolabel_ir(&AutolabelOptions {
                data: a.data,
                out: a.out.clone(),
                conf: a.conf.unwrap_or(DEFAULT_IR_CONF),
                eval: a.eval,
            })?;
            if let Some(q) = &summary.eval {
                eprintln!(
                    "on {} ({} images, {} persons): AP50 {:.3}, AP50-95 {:.3}; at score {:.2}: \
                     precision {:.3}, recall {:.3}",
                    q.data.display(),
                    q.images,
                    q.persons,
                    q.ap50,
                    q.ap,
                    summary.threshold,
                    q.precision,
                    q.recall
                );
            }
            eprintln!(
                "wrote {} pairs with {} persons to {} ({} boxes below score {:.2} dropped); \
                 summary in {SUMMARY_FILE}",
                summary.pairs,
                summary.kept,
                a.out.display(),
                summary.dropped,
                summary.threshold
            );
            println!("{}", serde_json::to_string(&summary)?);
        }
        Method::Teacher => {
            let Some(teacher) = a.teacher else {
                anyhow::bail!("--method teacher needs --teacher CHECKPOINT");
            };
            ensure!(
                a.eval.is_none(),
                "--eval is for --method ir; a teacher's threshold is chosen on its validation data"
            );
            let summary = pseudo_label(&PseudoLabelOptions {
                teacher,
                data: a.data.display().to_string(),
                out: a.out,
                conf: a.conf,
                val_data: a.val_data,
                synth_val: 200,
                batch: a.batch,
                workers: 2,
                device: a.device,
            })?;
            println!("{}", serde_json::to_string(&summary)?);
        }
    }
    Ok(())
}
