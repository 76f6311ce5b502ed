//! `trainer import`: side-by-side RGB|IR images into the paired layout.

use anyhow::Result;
use irdistill::trainer::import::{import_side_by_side, parse_size, ImportOptions};
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Folders of side-by-side images (RGB left, IR right), e.g. a pix2pix
    /// copy of LLVIP's `datasets/images/train` and `.../test`.
    #[arg(long = "side-by-side", required = true, num_args = 1..)]
    pub sources: Vec<PathBuf>,
    /// A new (or empty) folder: images/rgb and images/ir.
    #[arg(long)]
    pub out: PathBuf,
    /// Size of each half as WIDTHxHEIGHT (restores a squashed aspect, e.g.
    /// 320x256 for LLVIP's 1280×1024 camera); default: the half's own size.
    #[arg(long, value_parser = parse_size)]
    pub size: Option<(u32, u32)>,
    /// Skip images whose name starts with one of these (comma-separated),
    /// e.g. `01` to keep LLVIP's scene 01 for evaluation only.
    #[arg(long, value_delimiter = ',')]
    pub skip_prefix: Vec<String>,
    /// The IR half is on the left.
    #[arg(long)]
    pub ir_left: bool,
}

pub fn run(a: Args) -> Result<()> {
    let summary = import_side_by_side(&ImportOptions {
        sources: a.sources,
        out: a.out.clone(),
        size: a.size,
        skip_prefixes: a.skip_prefix,
        ir_left: a.ir_left,
    })?;
    eprintln!(
        "imported {} pairs ({}x{}) to {} ({} skipped); label them with `trainer autolabel --data {}`",
        summary.pairs,
        summary.width_px,
        summary.height_px,
        a.out.display(),
        summary.skipped,
        a.out.display()
    );
    println!("{}", serde_json::to_string(&summary)?);
    Ok(())
}
