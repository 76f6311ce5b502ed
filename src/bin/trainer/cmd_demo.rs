//! `trainer demo`: the embedded-defaults tour of what exists so far —
//! generate paired scenes, read them back through the dataset reader, and
//! evaluate the classical thermal hot-spot detector on them per condition.

use anyhow::{Context, Result};
use irdistill::shared::data::Dataset;
use irdistill::shared::eval::{evaluate_dataset, EvalImage};
use irdistill::shared::hot_spots::{detect_hot_spots, HotSpotParams};
use irdistill::shared::synth::{writer, Generator, SynthConfig};
use rayon::prelude::*;
use std::path::PathBuf;
use std::time::Instant;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Output folder: `data/` (the pairs), `preview.png`, `baseline_eval.json`.
    #[arg(long, default_value = "runs/demo")]
    pub out: PathBuf,
    #[arg(long, default_value_t = 600)]
    pub pairs: u64,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

pub fn run(args: Args) -> Result<()> {
    let generator = Generator::new(SynthConfig::default(), args.seed)?;
    let data_dir = args.out.join("data");
    let start = Instant::now();
    let summary = writer::write_dataset(&generator, &data_dir, args.pairs, true)?;
    println!(
        "generated {} pairs ({} objects) in {:.1} s -> {}",
        summary.pairs,
        summary.objects,
        start.elapsed().as_secs_f64(),
        data_dir.display()
    );
    let preview = args.out.join("preview.png");
    writer::write_preview(&generator, &preview, args.pairs, 3)?;
    println!("contact sheet (RGB | IR | labels): {}", preview.display());

    let dataset = Dataset::open(&data_dir)?;
    let params = HotSpotParams::default();
    let images: Vec<EvalImage> = dataset
        .samples
        .par_iter()
        .map(|s| {
            let pair = dataset.load_pair(s)?;
            Ok(EvalImage {
                labels: pair.labels,
                detections: detect_hot_spots(&pair.ir, &params),
                condition: pair.condition,
            })
        })
        .collect::<Result<_>>()?;
    let report = evaluate_dataset(&dataset.names, &images);
    println!(
        "\nthermal hot-spot baseline (no training, IR only) on {} pairs:",
        images.len()
    );
    println!("{}", report.table());
    let json = report.to_json();
    let path = args.out.join("baseline_eval.json");
    std::fs::write(&path, serde_json::to_string_pretty(&json)? + "\n")
        .with_context(|| format!("cannot write {}", path.display()))?;
    println!("{}", serde_json::to_string(&json)?);
    Ok(())
}
