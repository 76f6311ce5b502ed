//! The paired YOLO-txt layout (what `trainer synth` writes):
//!
//! ```text
//! DIR/images/rgb/NAME.{png,jpg,jpeg,bmp}
//! DIR/images/ir/NAME.{png,jpg,jpeg,bmp}   same stem as its RGB partner
//! DIR/labels/NAME.txt                     `class cx cy w h [score]` per line, normalised
//! DIR/meta.json                           optional: names, per-image condition/split
//! DIR/classes.txt                         class names, one per line, if meta.json has none
//! ```
//!
//! Every image needs a label file: an empty one means "no objects", while a
//! missing one is an error, because treating it as empty would silently turn
//! lost annotations into false "background" frames.

use super::images::{pair_by_stem, pair_size, ImagePair};
use super::meta::{DatasetMeta, META_FILE};
use super::sample::{Dataset, Layout, SampleInfo};
use crate::shared::bbox::{BBox, Label};
use crate::shared::condition::{stable_hash, Split};
use anyhow::{anyhow, bail, ensure, Context, Result};
use rayon::prelude::*;
use std::fs;
use std::io::ErrorKind;
use std::path::Path;

pub const RGB_DIR: &str = "images/rgb";
pub const IR_DIR: &str = "images/ir";
pub const LABELS_DIR: &str = "labels";
pub const CLASSES_FILE: &str = "classes.txt";

/// How far (in normalised units) a box may extend past the image edge before
/// it is rejected: writers round, so a box touching the edge can come out as
/// `1.0004`. Boxes within the tolerance are clipped to the image.
pub const BOX_TOLERANCE: f64 = 1e-3;

pub(crate) fn looks_like(root: &Path) -> bool {
    root.join(RGB_DIR).is_dir()
}

/// Reads and validates the whole dataset; see the module docs.
pub(crate) fn read(root: &Path) -> Result<Dataset> {
    let meta = read_meta(root)?;
    let names = class_names(root, meta.as_ref())?;
    let pairs = pair_by_stem(&root.join(RGB_DIR), &root.join(IR_DIR))?;
    if let Some(meta) = &meta {
        warn_about_unmatched_meta(meta, &pairs);
    }
    // Collecting into Vec<Result> first keeps the reported error the first
    // one in name order, whatever order the threads finish in.
    let results: Vec<Result<SampleInfo>> = pairs
        .par_iter()
        .map(|pair| read_sample(root, pair, names.len(), meta.as_ref()))
        .collect();
    let samples = results.into_iter().collect::<Result<Vec<_>>>()?;
    Ok(Dataset {
        root: root.to_path_buf(),
        layout: Layout::YoloPairs,
        names,
        samples,
    })
}

fn read_meta(root: &Path) -> Result<Option<DatasetMeta>> {
    let path = root.join(META_FILE);
    if path.exists() {
        DatasetMeta::read(&path).map(Some)
    } else {
        Ok(None)
    }
}

/// Class names from `meta.json`, else from `classes.txt`.
fn class_names(root: &Path, meta: Option<&DatasetMeta>) -> Result<Vec<String>> {
    if let Some(meta) = meta.filter(|m| !m.names.is_empty()) {
        return Ok(meta.names.clone());
    }
    let path = root.join(CLASSES_FILE);
    if !path.exists() {
        bail!(
            "{}: no class names; provide \"names\" in {META_FILE} or a {CLASSES_FILE} \
             with one name per line",
            root.display()
        );
    }
    let text =
        fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
    let names: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect();
    ensure!(!names.is_empty(), "{} lists no class names", path.display());
    Ok(names)
}

/// A meta.json entry without an image usually means images were deleted or
/// renamed after generation: worth a warning, not an error.
fn warn_about_unmatched_meta(meta: &DatasetMeta, pairs: &[ImagePair]) {
    let unmatched = meta
        .images
        .keys()
        .filter(|name| {
            pairs
                .binary_search_by(|p| p.name.as_str().cmp(name.as_str()))
                .is_err()
        })
        .count();
    if unmatched > 0 {
        tracing::warn!("{unmatched} image entries of {META_FILE} have no image pair");
    }
}

fn read_sample(
    root: &Path,
    pair: &ImagePair,
    num_classes: usize,
    meta: Option<&DatasetMeta>,
) -> Result<SampleInfo> {
    let (width_px, height_px) = pair_size(pair)?;
    let label_path = root.join(LABELS_DIR).join(format!("{}.txt", pair.name));
    let labels = read_label_file(&label_path, width_px, height_px, num_classes)?;
    let image_meta = meta
        .and_then(|m| m.images.get(&pair.name))
        .copied()
        .unwrap_or_default();
    Ok(SampleInfo {
        name: pair.name.clone(),
        rgb_path: pair.rgb.clone(),
        ir_path: pair.ir.clone(),
        width_px,
        height_px,
        labels,
        condition: image_meta.condition,
        split: image_meta
            .split
            .unwrap_or_else(|| Split::from_hash(stable_hash(&pair.name))),
    })
}

fn read_label_file(path: &Path, width: u32, height: u32, num_classes: usize) -> Result<Vec<Label>> {
    let text = match fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == ErrorKind::NotFound => bail!(
            "missing label file {} (an image without objects needs an empty label file)",
            path.display()
        ),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    parse_labels(&text, path, width, height, num_classes)
}

/// Parses a YOLO label file's text into pixel boxes for a `width` x `height`
/// image. `path` only names the file in errors (`path:line: ...`).
pub(crate) fn parse_labels(
    text: &str,
    path: &Path,
    width: u32,
    height: u32,
    num_classes: usize,
) -> Result<Vec<Label>> {
    text.trim_start_matches('\u{feff}')
        .lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(i, line)| {
            parse_label_line(line, width, height, num_classes)
                .map_err(|e| anyhow!("{}:{}: {e:#}", path.display(), i + 1))
        })
        .collect()
}

/// One `class cx cy w h` line, or `class cx cy w h score` as ultralytics
/// writes with `save_conf` and `trainer autolabel` writes: the score is
/// checked (a number in [0, 1]) but a label is a label for training.
fn parse_label_line(line: &str, width: u32, height: u32, num_classes: usize) -> Result<Label> {
    let fields: Vec<&str> = line.split_whitespace().collect();
    ensure!(
        fields.len() == 5 || fields.len() == 6,
        "expected 5 fields `class cx cy w h` (or 6, with a score), found {}: '{}'",
        fields.len(),
        line.trim()
    );
    if let Some(score) = fields.get(5) {
        ensure!(
            score.parse::<f64>().is_ok_and(|v| (0.0..=1.0).contains(&v)),
            "score '{score}' is not a number in [0, 1]"
        );
    }
    let class_id: usize = fields[0]
        .parse()
        .map_err(|_| anyhow!("class id '{}' is not a non-negative integer", fields[0]))?;
    ensure!(
        class_id < num_classes,
        "class id {class_id} out of range: the dataset has {num_classes} classes"
    );
    let [cx, cy, w, h] = parse_box_fields(&fields[1..])?;
    ensure!(
        w > 0.0 && h > 0.0,
        "box width and height must be positive, got w={w} h={h}"
    );
    let (x1, y1, x2, y2) = (cx - w / 2.0, cy - h / 2.0, cx + w / 2.0, cy + h / 2.0);
    let (lo, hi) = (-BOX_TOLERANCE, 1.0 + BOX_TOLERANCE);
    ensure!(
        x1 >= lo && y1 >= lo && x2 <= hi && y2 <= hi,
        "box extends outside the image: x {x1:.4}..{x2:.4}, y {y1:.4}..{y2:.4} \
         (normalised; allowed 0..1 with tolerance {BOX_TOLERANCE})"
    );
    let px = |v: f64, size: u32| (v.clamp(0.0, 1.0) * size as f64) as f32;
    let bbox = BBox::new(px(x1, width), px(y1, height), px(x2, width), px(y2, height));
    Ok(Label { class_id, bbox })
}

fn parse_box_fields(fields: &[&str]) -> Result<[f64; 4]> {
    let mut values = [0.0; 4];
    for ((value, field), what) in values.iter_mut().zip(fields).zip(["cx", "cy", "w", "h"]) {
        *value = field
            .parse::<f64>()
            .ok()
            .filter(|v| v.is_finite())
            .ok_or_else(|| anyhow!("{what} '{field}' is not a finite number"))?;
    }
    Ok(values)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Vec<Label>> {
        parse_labels(text, Path::new("l/x.txt"), 200, 100, 2)
    }

    fn error(text: &str) -> String {
        format!("{:#}", parse(text).unwrap_err())
    }

    #[test]
    fn converts_normalised_boxes_to_pixels() {
        let labels = parse("\u{feff}1 0.5 0.5 0.2 0.4\n\n  0 0.25 0.75 0.5 0.5  \r\n").unwrap();
        assert_eq!(labels.len(), 2);
        assert_eq!(labels[0].class_id, 1);
        assert_eq!(labels[0].bbox, BBox::new(80.0, 30.0, 120.0, 70.0));
        assert_eq!(labels[1].bbox, BBox::new(0.0, 50.0, 100.0, 100.0));
    }

    #[test]
    fn clips_within_tolerance() {
        let labels = parse("0 0.9002 0.5 0.2 0.2").unwrap();
        assert_eq!(labels[0].bbox.x2, 200.0);
    }

    #[test]
    fn empty_text_has_no_labels() {
        assert!(parse("").unwrap().is_empty());
        assert!(parse("\n  \n").unwrap().is_empty());
    }

    #[test]
    fn errors_name_file_and_line() {
        assert!(error("0 0.5 0.5 0.1 0.1\n0 0.5 0.5 0.1").starts_with("l/x.txt:2: expected 5"));
        assert!(error("0 0.5 0.5 0.1 0.1 0.9 1").contains("found 7"));
        assert!(error("0 0.5 0.5 0.1 0.1 1.5").contains("score '1.5'"));
        assert_eq!(parse("0 0.5 0.5 0.2 0.4 0.87").unwrap().len(), 1);
        assert!(error("a 0.5 0.5 0.1 0.1").contains("l/x.txt:1: class id 'a'"));
        assert!(error("-1 0.5 0.5 0.1 0.1").contains("class id '-1'"));
        assert!(error("0 0.5 x 0.1 0.1").contains("cy 'x' is not a finite number"));
        assert!(error("0 0.5 0.5 NaN 0.1").contains("w 'NaN'"));
        assert!(error("0 0.5 0.5 inf 0.1").contains("w 'inf'"));
        assert!(error("0 0.5 0.5 0.1 -0.1").contains("must be positive"));
        assert!(error("2 0.5 0.5 0.1 0.1").contains("class id 2 out of range"));
        assert!(error("0 0.95 0.5 0.2 0.2").contains("outside the image"));
    }
}
