//! `trainer demo`: the embedded-defaults tour of what exists so far —
//! generate paired scenes, read them back through the dataset reader, and
//! evaluate the classical thermal hot-spot detector on them per condition.

use anyhow::{Context, Result};
use irdistill::shared::data::Dataset;
use irdistill::shared::hot_spots::{evaluate_on_dataset, HotSpotParams};
use irdistill::shared::synth::{writer, Generator, SynthConfig};
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
    let report = evaluate_on_dataset(&dataset, &HotSpotParams::default())?;
    println!(
        "\nthermal hot-spot baseline (no training, IR only) on {} pairs:",
        dataset.samples.len()
    );
    println!("{}", report.table());
    let json = report.to_json();
    let path = args.out.join("baseline_eval.json");
    std::fs::write(&path, serde_json::to_string_pretty(&json)? + "\n")
        .with_context(|| format!("cannot write {}", path.display()))?;
    println!("{}", serde_json::to_string(&json)?);
    Ok(())
}
