//! `trainer export`: checkpoint → ONNX in ultralytics' YOLOv8 layout.

use anyhow::{Context, Result};
use candle_core::Device;
use irdistill::trainer::checkpoint;
use irdistill::trainer::export::{export_onnx, ExportOptions};
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[arg(long)]
    pub weights: PathBuf,
    #[arg(long)]
    pub out: PathBuf,
    /// Input size (default: the checkpoint's training size).
    #[arg(long)]
    pub imgsz: Option<usize>,
    /// Symbolic batch axis (ultralytics' dynamic=True), for batched inference.
    #[arg(long)]
    pub dynamic: bool,
}

pub fn run(a: Args) -> Result<()> {
    let ckpt = checkpoint::load(&a.weights, &Device::Cpu)?;
    let (model, cfg) = ckpt.model(&a.weights, &Device::Cpu)?;
    let imgsz = a.imgsz.unwrap_or(cfg.imgsz);
    anyhow::ensure!(
        imgsz >= 32 && imgsz % 32 == 0,
        "--imgsz {imgsz} must be a positive multiple of 32"
    );
    let mut opts = ExportOptions::new(imgsz);
    opts.dynamic_batch = a.dynamic;
    if let Some(p) = &ckpt.meta.progress {
        if let Some(data) = p.args.get("data").and_then(|v| v.as_str()) {
            opts.extra_metadata
                .push(("train_data".into(), data.to_string()));
        }
        opts.extra_metadata
            .push(("train_epochs".into(), p.epochs_done.to_string()));
    }
    if let Some(parent) = a.out.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("cannot create {}", parent.display()))?;
    }
    let summary = export_onnx(&model, &opts, &a.out)?;
    println!(
        "{}",
        serde_json::json!({
            "onnx": a.out,
            "imgsz": imgsz,
            "dynamic": a.dynamic,
            "nodes": summary.nodes,
            "bytes": summary.bytes,
            "output_shape": summary.output_shape,
        })
    );
    Ok(())
}
