//! Writes generated pairs to disk in the paired YOLO-txt layout:
//! `DIR/images/rgb/NAME.png`, `DIR/images/ir/NAME.png`, `DIR/labels/NAME.txt`
//! and `DIR/meta.json` (class names; condition and split per image).

use super::{preview, Generator};
use crate::shared::bbox::Label;
use crate::shared::condition::Condition;
use crate::shared::data::meta::{DatasetMeta, ImageMeta, META_FILE};
use anyhow::{bail, Context, Result};
use image::codecs::png::{CompressionType, FilterType, PngEncoder};
use image::ImageEncoder;
use rayon::prelude::*;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::BufWriter;
use std::path::Path;

/// What a write produced.
#[derive(Debug, Clone, Default)]
pub struct WriteSummary {
    pub pairs: u64,
    pub objects: u64,
    pub per_condition: BTreeMap<Condition, u64>,
    pub empty_images: u64,
}

/// A YOLO label file's text: `class cx cy w h`, normalised to the frame.
pub fn yolo_label_text(labels: &[Label], width_px: u32, height_px: u32) -> String {
    let (w, h) = (width_px as f32, height_px as f32);
    let mut out = String::new();
    for l in labels {
        let (cx, cy) = l.bbox.center();
        let _ = writeln!(
            out,
            "{} {:.6} {:.6} {:.6} {:.6}",
            l.class_id,
            cx / w,
            cy / h,
            l.bbox.width() / w,
            l.bbox.height() / h
        );
    }
    out
}

/// Encodes PNG with fast settings: these files are many and written often.
pub fn write_png(
    path: &Path,
    bytes: &[u8],
    w: u32,
    h: u32,
    colour: image::ExtendedColorType,
) -> Result<()> {
    let file =
        std::fs::File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
    let encoder = PngEncoder::new_with_quality(
        BufWriter::new(file),
        CompressionType::Fast,
        FilterType::Adaptive,
    );
    encoder
        .write_image(bytes, w, h, colour)
        .with_context(|| format!("cannot write {}", path.display()))
}

/// Refuses to write into a folder holding anything but an earlier output of
/// this generator, and clears such an output only when `overwrite` is set:
/// the user's own data is never mixed with or replaced by synthetic pairs.
fn prepare_dir(dir: &Path, overwrite: bool) -> Result<()> {
    if dir.exists() {
        let mut entries =
            std::fs::read_dir(dir).with_context(|| format!("cannot read {}", dir.display()))?;
        if entries.next().is_some() {
            let meta_path = dir.join(META_FILE);
            let ours = DatasetMeta::read(&meta_path)
                .map(|m| m.generator.is_some())
                .unwrap_or(false);
            if !ours {
                bail!("{} is not empty and is not an earlier `trainer synth` output; choose an empty folder", dir.display());
            }
            if !overwrite {
                bail!(
                    "{} holds an earlier `trainer synth` output; pass --overwrite to replace it",
                    dir.display()
                );
            }
            remove_own_output(dir, &DatasetMeta::read(&meta_path)?)?;
        }
    }
    for sub in ["images/rgb", "images/ir", "labels"] {
        let p = dir.join(sub);
        std::fs::create_dir_all(&p).with_context(|| format!("cannot create {}", p.display()))?;
    }
    Ok(())
}

/// Deletes exactly the files an earlier `trainer synth` wrote (per its
/// `meta.json`), after checking its folders hold nothing else: a user's own
/// pairs added to the folder are never deleted.
fn remove_own_output(dir: &Path, meta: &DatasetMeta) -> Result<()> {
    let mut ours = Vec::new();
    for sub in ["images/rgb", "images/ir", "labels"] {
        let folder = dir.join(sub);
        let ext = if sub == "labels" { "txt" } else { "png" };
        let Ok(entries) = std::fs::read_dir(&folder) else {
            continue;
        };
        for entry in entries {
            let path = entry
                .with_context(|| format!("cannot read {}", folder.display()))?
                .path();
            let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("");
            let own = meta.images.contains_key(stem)
                && path.extension().and_then(|e| e.to_str()) == Some(ext);
            if !own {
                bail!(
                    "{} was not written by `trainer synth`; not overwriting {} (move your files elsewhere first)",
                    path.display(),
                    dir.display()
                );
            }
            ours.push(path);
        }
    }
    for path in ours {
        std::fs::remove_file(&path).with_context(|| format!("cannot remove {}", path.display()))?;
    }
    let meta_path = dir.join(META_FILE);
    std::fs::remove_file(&meta_path)
        .with_context(|| format!("cannot remove {}", meta_path.display()))
}

/// Generates pairs `0..pairs` into `dir` on all cores.
pub fn write_dataset(
    gen: &Generator,
    dir: &Path,
    pairs: u64,
    overwrite: bool,
) -> Result<WriteSummary> {
    prepare_dir(dir, overwrite)?;
    let results: Vec<Result<(String, ImageMeta, usize)>> = (0..pairs)
        .into_par_iter()
        .map(|i| {
            let name = Generator::name_of(i, pairs);
            let sp = gen.pair_named(i, name.clone());
            let p = &sp.pair;
            let (w, h) = (p.width_px(), p.height_px());
            write_png(
                &dir.join(format!("images/rgb/{name}.png")),
                p.rgb.as_raw(),
                w,
                h,
                image::ExtendedColorType::Rgb8,
            )?;
            write_png(
                &dir.join(format!("images/ir/{name}.png")),
                p.ir.as_raw(),
                w,
                h,
                image::ExtendedColorType::L8,
            )?;
            let label_path = dir.join(format!("labels/{name}.txt"));
            std::fs::write(&label_path, yolo_label_text(&p.labels, w, h))
                .with_context(|| format!("cannot write {}", label_path.display()))?;
            Ok((
                name,
                ImageMeta {
                    condition: p.condition,
                    split: Some(sp.split),
                },
                p.labels.len(),
            ))
        })
        .collect();
    let mut meta = DatasetMeta {
        names: Generator::names(),
        generator: Some(generator_record(gen, pairs)),
        ..Default::default()
    };
    let mut summary = WriteSummary {
        pairs,
        ..Default::default()
    };
    for r in results {
        let (name, image_meta, objects) = r?;
        summary.objects += objects as u64;
        summary.empty_images += (objects == 0) as u64;
        if let Some(c) = image_meta.condition {
            *summary.per_condition.entry(c).or_default() += 1;
        }
        meta.images.insert(name, image_meta);
    }
    meta.write(&dir.join(META_FILE))?;
    Ok(summary)
}

/// The arguments that reproduce this dataset, stored in `meta.json`.
fn generator_record(gen: &Generator, pairs: u64) -> serde_json::Value {
    let c = gen.config();
    serde_json::json!({
        "tool": "trainer synth",
        "version": env!("CARGO_PKG_VERSION"),
        "seed": gen.seed(),
        "pairs": pairs,
        "size": format!("{}x{}", c.scene.width_px, c.scene.height_px),
        "conditions": c.conditions.iter().map(|c| c.as_str()).collect::<Vec<_>>(),
        "max_misregistration_px": c.scene.max_misregistration_px,
    })
}

/// Writes a contact sheet of up to `per_condition` pairs of each condition
/// found among the first pairs of the generator.
pub fn write_preview(gen: &Generator, path: &Path, pairs: u64, per_condition: usize) -> Result<()> {
    let mut chosen = Vec::new();
    let mut counts: BTreeMap<Condition, usize> = BTreeMap::new();
    let wanted = per_condition * gen.config().conditions.len();
    for i in 0..pairs.min(500) {
        let scene_condition = gen.scene(i).condition;
        let n = counts.entry(scene_condition).or_default();
        if *n < per_condition {
            *n += 1;
            chosen.push(gen.pair_named(i, Generator::name_of(i, pairs)).pair);
        }
        if chosen.len() >= wanted {
            break;
        }
    }
    chosen.sort_by_key(|p| p.condition);
    let refs: Vec<_> = chosen.iter().collect();
    let sheet = preview::contact_sheet(&refs, &Generator::names());
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("cannot create {}", parent.display()))?;
    }
    write_png(
        path,
        sheet.as_raw(),
        sheet.width(),
        sheet.height(),
        image::ExtendedColorType::Rgb8,
    )
}
