//! `trainer synth`: write paired RGB+IR scenes to disk.

use anyhow::{Context, Result};
use irdistill::shared::condition::parse_conditions;
use irdistill::shared::synth::{writer, Generator, SceneParams, SynthConfig};
use std::path::PathBuf;
use std::time::Instant;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Output folder (paired YOLO-txt layout). Must be empty or an earlier
    /// `trainer synth` output (replaced only with --overwrite).
    #[arg(long)]
    pub out: PathBuf,
    /// Number of pairs to write.
    #[arg(long)]
    pub pairs: u64,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Frame size, WIDTHxHEIGHT.
    #[arg(long, default_value = "320x256", value_parser = parse_size)]
    pub size: (u32, u32),
    /// Comma-separated conditions to draw from: day, night, fog.
    #[arg(long, default_value = "day,night,fog")]
    pub conditions: String,
    /// Largest RGB↔IR misregistration in pixels (per axis).
    #[arg(long, default_value_t = 2)]
    pub misregistration: u32,
    /// Also write a contact sheet (RGB | IR | boxes) to this PNG.
    #[arg(long)]
    pub preview: Option<PathBuf>,
    /// Replace an earlier `trainer synth` output in --out.
    #[arg(long)]
    pub overwrite: bool,
}

/// Parses `WIDTHxHEIGHT`, e.g. `320x256`.
pub fn parse_size(s: &str) -> Result<(u32, u32), String> {
    let (w, h) = s
        .split_once(['x', 'X'])
        .ok_or_else(|| format!("size '{s}' is not WIDTHxHEIGHT"))?;
    let w = w
        .trim()
        .parse()
        .map_err(|_| format!("bad width in size '{s}'"))?;
    let h = h
        .trim()
        .parse()
        .map_err(|_| format!("bad height in size '{s}'"))?;
    Ok((w, h))
}

pub fn config_from(
    size: (u32, u32),
    conditions: &str,
    misregistration: u32,
) -> Result<SynthConfig> {
    Ok(SynthConfig {
        scene: SceneParams {
            width_px: size.0,
            height_px: size.1,
            max_misregistration_px: misregistration,
            ..Default::default()
        },
        conditions: parse_conditions(conditions).context("--conditions")?,
    })
}

pub fn run(args: Args) -> Result<()> {
    anyhow::ensure!(args.pairs > 0, "--pairs must be at least 1");
    let generator = Generator::new(
        config_from(args.size, &args.conditions, args.misregistration)?,
        args.seed,
    )?;
    let start = Instant::now();
    let summary = writer::write_dataset(&generator, &args.out, args.pairs, args.overwrite)?;
    let secs = start.elapsed().as_secs_f64();
    let per_condition: Vec<String> = summary
        .per_condition
        .iter()
        .map(|(c, n)| format!("{c} {n}"))
        .collect();
    println!(
        "wrote {} pairs ({}) with {} objects, {} empty images, to {} in {:.2} s ({:.0} pairs/s)",
        summary.pairs,
        per_condition.join(", "),
        summary.objects,
        summary.empty_images,
        args.out.display(),
        secs,
        summary.pairs as f64 / secs
    );
    if let Some(path) = &args.preview {
        writer::write_preview(&generator, path, args.pairs, 3)?;
        println!("preview: {}", path.display());
    }
    Ok(())
}
