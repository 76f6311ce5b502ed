//! `trainer val`: evaluate a checkpoint (student or RGB+IR teacher) on a
//! dataset split.

use anyhow::Result;
use irdistill::shared::condition::Split;
use irdistill::trainer::checkpoint::load_detector;
use irdistill::trainer::train::init::device;
use irdistill::trainer::train::source::{open_all_pairs, open_eval_split, SynthSizes};
use irdistill::trainer::train::validate::validate;
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[arg(long)]
    pub weights: PathBuf,
    /// `synth` or a dataset folder.
    #[arg(long, default_value = "synth")]
    pub data: String,
    #[arg(long, default_value = "val")]
    pub split: Split,
    /// Every pair of a dataset folder, whatever its split (a small
    /// human-labelled evaluation set); overrides --split.
    #[arg(long)]
    pub all: bool,
    /// Input size (default: the checkpoint's).
    #[arg(long)]
    pub imgsz: Option<usize>,
    #[arg(long, default_value_t = 16)]
    pub batch: usize,
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// With --data synth: pairs to evaluate, and the generator seed.
    #[arg(long, default_value_t = 300)]
    pub synth_pairs: usize,
    #[arg(long, default_value_t = 0)]
    pub synth_seed: u64,
}

pub fn run(a: Args) -> Result<()> {
    anyhow::ensure!(a.batch >= 1, "--batch must be at least 1");
    let dev = device(&a.device)?;
    // a teacher is evaluated on RGB+IR pairs, a student on RGB
    let (model, cfg) = load_detector(&a.weights, &dev)?;
    let imgsz = a.imgsz.unwrap_or(cfg.imgsz);
    anyhow::ensure!(
        imgsz >= 32 && imgsz % 32 == 0,
        "--imgsz {imgsz} must be a positive multiple of 32"
    );
    let synth = SynthSizes {
        train: 0,
        val: a.synth_pairs,
        seed: a.synth_seed,
    };
    let (names, source) = if a.all {
        anyhow::ensure!(a.data != "synth", "--all needs a dataset folder as --data");
        open_all_pairs(&a.data)?
    } else {
        open_eval_split(&a.data, a.split, synth)?
    };
    anyhow::ensure!(
        names == cfg.names,
        "class names of {} ({:?}) differ from the model's ({:?})",
        a.data,
        names,
        cfg.names
    );
    let report = validate(&model, source, &names, imgsz, a.batch, 2, &dev)?;
    println!(
        "{} on {} {} at {imgsz}:",
        a.weights.display(),
        a.data,
        if a.all {
            "(all pairs)".to_owned()
        } else {
            format!("split '{}'", a.split)
        }
    );
    println!("{}", report.table());
    println!("{}", serde_json::to_string(&report.to_json())?);
    Ok(())
}
