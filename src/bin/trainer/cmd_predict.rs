//! `trainer predict`: run a checkpoint on image files, write annotated copies.

use anyhow::{Context, Result};
use irdistill::shared::draw::{class_colour, draw_box, draw_label};
use irdistill::shared::nms::NmsParams;
use irdistill::trainer::checkpoint::load_model;
use irdistill::trainer::predict::predict_image;
use irdistill::trainer::train::init::device;
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[arg(long)]
    pub weights: PathBuf,
    /// Folder for the annotated images.
    #[arg(long, default_value = "runs/predict")]
    pub out: PathBuf,
    #[arg(long, default_value_t = 0.25)]
    pub conf: f32,
    #[arg(long, default_value_t = 0.45)]
    pub iou: f32,
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Images to run on.
    #[arg(required = true)]
    pub images: Vec<PathBuf>,
}

pub fn run(a: Args) -> Result<()> {
    let dev = device(&a.device)?;
    let (model, cfg) = load_model(&a.weights, &dev)?;
    std::fs::create_dir_all(&a.out)
        .with_context(|| format!("cannot create {}", a.out.display()))?;
    let params = NmsParams {
        conf: a.conf,
        iou: a.iou,
        ..NmsParams::PREDICT
    };
    let mut used = std::collections::HashSet::new();
    for path in &a.images {
        let img = image::open(path)
            .with_context(|| format!("cannot read image {}", path.display()))?
            .to_rgb8();
        let dets = predict_image(&model, &cfg, &img, &params, &dev)?;
        let mut annotated = img.clone();
        let mut json = Vec::new();
        for d in &dets {
            let b = d.bbox;
            let label = cfg.names.get(d.class_id).cloned().unwrap_or_default();
            draw_box(&mut annotated, &b, class_colour(d.class_id), 2);
            draw_label(
                &mut annotated,
                b.x1 as i64,
                b.y1 as i64 - 10,
                &format!("{label} {:.2}", d.score),
                image::Rgb([0, 0, 0]),
                class_colour(d.class_id),
            );
            json.push(serde_json::json!({"class_id": d.class_id, "label": label, "score": d.score, "box": [b.x1, b.y1, b.x2, b.y2]}));
        }
        let dst = output_path(&a.out, path, &mut used)?;
        annotated
            .save(&dst)
            .with_context(|| format!("cannot write {}", dst.display()))?;
        println!(
            "{}",
            serde_json::json!({"image": path, "width": img.width(), "height": img.height(), "detections": json, "annotated": dst})
        );
    }
    Ok(())
}

/// Where the annotated copy of `input` goes: `out/NAME`, with `_1`, `_2`…
/// added when two inputs share a name; never the input file itself.
fn output_path(
    out: &std::path::Path,
    input: &std::path::Path,
    used: &mut std::collections::HashSet<PathBuf>,
) -> Result<PathBuf> {
    let stem = input
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "image".into());
    let ext = input
        .extension()
        .map(|e| e.to_string_lossy().into_owned())
        .unwrap_or_else(|| "png".into());
    let mut dst = out.join(format!("{stem}.{ext}"));
    let mut k = 1;
    while used.contains(&dst) {
        dst = out.join(format!("{stem}_{k}.{ext}"));
        k += 1;
    }
    if let (Ok(a), Ok(b)) = (dst.canonicalize(), input.canonicalize()) {
        anyhow::ensure!(
            a != b,
            "--out {} would overwrite the input image {}; choose another --out",
            out.display(),
            input.display()
        );
    }
    used.insert(dst.clone());
    Ok(dst)
}
