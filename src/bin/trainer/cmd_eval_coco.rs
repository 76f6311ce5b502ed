//! `trainer eval-coco`: COCO bbox evaluation of a results file against an
//! instances file, with pycocotools' numbers.

use anyhow::{Context, Result};
use irdistill::shared::eval::evaluate_files;
use std::path::PathBuf;

/// Evaluate COCO detection results (bbox) against COCO ground truth, as
/// pycocotools' COCOeval does. Prints the 12 standard metrics, per-class AP
/// and, as the last line, all of it as one JSON object.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// COCO instances file (images, categories, annotations).
    #[arg(long, value_name = "GT.json")]
    pub gt: PathBuf,
    /// COCO results file: a JSON array of {image_id, category_id, bbox, score}.
    #[arg(long, value_name = "DT.json")]
    pub dt: PathBuf,
}

pub fn run(args: Args) -> Result<()> {
    let metrics = evaluate_files(&args.gt, &args.dt)?;
    println!(
        "{} images, {} ground-truth objects, {} categories",
        metrics.images,
        metrics.labels,
        metrics.per_class.len()
    );
    for line in metrics.summary_lines() {
        println!("{line}");
    }
    println!();
    print!("{}", metrics.per_class_table());
    // Last line: machine-readable (scripts read only this one).
    println!(
        "{}",
        serde_json::to_string(&metrics).context("serialising metrics")?
    );
    Ok(())
}
