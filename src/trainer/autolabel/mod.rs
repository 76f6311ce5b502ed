//! `trainer autolabel`: labels from the thermal camera. Unlabeled RGB+IR
//! pairs (a recording) in, the paired YOLO-txt layout out, with persons
//! found in the IR image by [`thermal::detect_people`], so that an RGB
//! student can train on them with plain `trainer train`.
//!
//! ```text
//! DIR (images/rgb + images/ir, visible + infrared, rgb + ir)
//!   └ IR image ─ thermal::detect_people ─ score ≥ --conf ─ labels/NAME.txt (`0 cx cy w h score`)
//!   └ RGB, IR files copied unchanged      ─ images/rgb/NAME.ext, images/ir/NAME.ext
//! ```
//!
//! Every 10th pair goes to the validation split (`meta.json`; the last one
//! of a set under ten). With
//! `--eval DIR` (human-labelled pairs) the same labeller is scored there:
//! COCO AP50 and precision/recall at the threshold, so the labels' quality is
//! a number, not a hope. `--method teacher` is `trainer pseudo-label`.

pub mod thermal;

use crate::shared::bbox::{Detection, Label};
use crate::shared::data::meta::{DatasetMeta, ImageMeta, META_FILE};
use crate::shared::data::unlabeled::UnlabeledPairs;
use crate::shared::data::yolo::{IR_DIR, LABELS_DIR, RGB_DIR};
use crate::shared::data::Dataset;
use crate::shared::eval::{evaluate_dataset, EvalImage, Metrics};
use crate::trainer::distill::pseudo::PseudoLabelQuality;
use crate::trainer::pseudo_label::{ensure_empty_out, split_of};
use anyhow::{ensure, Context, Result};
use rayon::prelude::*;
use serde::Serialize;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use thermal::{detect_people, ThermalPeopleParams};

/// The one class the thermal labeller finds.
pub const PERSON: &str = "person";
/// Default score threshold of `--method ir`: chosen on frames of LLVIP's
/// training scenes by eye for precision (a missed person costs the student
/// less than a lamp post taught as one).
pub const DEFAULT_IR_CONF: f32 = 0.5;
/// The summary written beside the labels.
pub const SUMMARY_FILE: &str = "autolabel.json";

#[derive(Debug, Clone)]
pub struct AutolabelOptions {
    pub data: PathBuf,
    pub out: PathBuf,
    pub conf: f32,
    /// Human-labelled pairs to score the labeller on (not written).
    pub eval: Option<PathBuf>,
}

/// What `trainer autolabel` did, written to `OUT/autolabel.json`.
#[derive(Debug, Clone, Serialize)]
pub struct AutolabelSummary {
    pub method: &'static str,
    pub pairs: usize,
    /// Boxes written (score ≥ threshold).
    pub kept: usize,
    /// Boxes found but below the threshold (not written).
    pub dropped: usize,
    pub threshold: f32,
    /// Time to label and write every pair (scoring against --eval excluded).
    pub wall_s: f64,
    pub eval: Option<LabelQuality>,
}

/// The labeller against human labels.
#[derive(Debug, Clone, Serialize)]
pub struct LabelQuality {
    pub data: PathBuf,
    pub images: usize,
    pub persons: usize,
    /// COCO AP50 and AP50-95 of the scored boxes (every threshold).
    pub ap50: f64,
    pub ap: f64,
    /// At the threshold written out.
    pub precision: f64,
    pub recall: f64,
}

/// Labels every pair of `o.data` from its IR image; see the module docs.
pub fn autolabel_ir(o: &AutolabelOptions) -> Result<AutolabelSummary> {
    ensure!(
        (0.0..1.0).contains(&o.conf),
        "--conf {}: expected a score in [0, 1)",
        o.conf
    );
    let pairs =
        UnlabeledPairs::open(&o.data).with_context(|| format!("--data {}", o.data.display()))?;
    ensure_empty_out(&o.out)?;
    // score the labeller first: a bad --eval fails before anything is written
    let eval = o
        .eval
        .as_deref()
        .map(|dir| measure(dir, o.conf))
        .transpose()?;
    for d in [RGB_DIR, IR_DIR, LABELS_DIR] {
        let p = o.out.join(d);
        std::fs::create_dir_all(&p).with_context(|| format!("cannot create {}", p.display()))?;
    }
    let started = std::time::Instant::now();
    let params = ThermalPeopleParams::default();
    let counts: Vec<(usize, usize)> = (0..pairs.len())
        .into_par_iter()
        .map(|i| label_pair(&pairs, i, &o.out, o.conf, &params))
        .collect::<Result<_>>()?;
    let mut meta = DatasetMeta {
        names: vec![PERSON.to_owned()],
        ..DatasetMeta::default()
    };
    for i in 0..pairs.len() {
        let split = split_of(i, pairs.len());
        meta.images.insert(
            pairs.name(i).to_owned(),
            ImageMeta {
                condition: None,
                split: Some(split),
            },
        );
    }
    meta.write(&o.out.join(META_FILE))?;
    let summary = AutolabelSummary {
        method: "ir",
        pairs: pairs.len(),
        kept: counts.iter().map(|c| c.0).sum(),
        dropped: counts.iter().map(|c| c.1).sum(),
        threshold: o.conf,
        wall_s: started.elapsed().as_secs_f64(),
        eval,
    };
    let path = o.out.join(SUMMARY_FILE);
    std::fs::write(&path, serde_json::to_string_pretty(&summary)?)
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(summary)
}

/// Copies pair `i`'s files into `out` and writes its labels; returns the
/// boxes (kept, dropped).
fn label_pair(
    pairs: &UnlabeledPairs,
    i: usize,
    out: &Path,
    conf: f32,
    params: &ThermalPeopleParams,
) -> Result<(usize, usize)> {
    let pair = pairs.load(i)?;
    let found = detect_people(&pair.ir, params);
    let (kept, dropped): (Vec<Detection>, Vec<Detection>) =
        found.into_iter().partition(|d| d.score >= conf);
    let (rgb, ir) = pairs.paths(i);
    copy_into(rgb, &out.join(RGB_DIR), &pair.name)?;
    copy_into(ir, &out.join(IR_DIR), &pair.name)?;
    let path = out.join(LABELS_DIR).join(format!("{}.txt", pair.name));
    let text = label_text(&kept, pair.width_px(), pair.height_px());
    std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
    Ok((kept.len(), dropped.len()))
}

/// The source file, byte for byte (no re-encoding), as `dir/NAME.ext`.
fn copy_into(src: &Path, dir: &Path, name: &str) -> Result<()> {
    let ext = src.extension().and_then(|e| e.to_str()).unwrap_or("png");
    let dst = dir.join(format!("{name}.{}", ext.to_ascii_lowercase()));
    std::fs::copy(src, &dst)
        .with_context(|| format!("cannot copy {} to {}", src.display(), dst.display()))?;
    Ok(())
}

/// `class cx cy w h score` per box, normalised (ultralytics' `save_conf`).
pub fn label_text(detections: &[Detection], width_px: u32, height_px: u32) -> String {
    let (w, h) = (width_px as f32, height_px as f32);
    let mut out = String::new();
    for d in detections {
        let b = d.bbox.clipped(w, h);
        let (cx, cy) = b.center();
        let _ = writeln!(
            out,
            "{} {:.6} {:.6} {:.6} {:.6} {:.4}",
            d.class_id,
            cx / w,
            cy / h,
            b.width() / w,
            b.height() / h,
            d.score
        );
    }
    out
}

/// The labeller on human-labelled pairs: AP over all scores, and precision
/// and recall at `conf`.
pub fn measure(dir: &Path, conf: f32) -> Result<LabelQuality> {
    let dataset = Dataset::open(dir).with_context(|| format!("--eval {}", dir.display()))?;
    let person = dataset
        .names
        .iter()
        .position(|n| n == PERSON)
        .with_context(|| {
            format!(
                "--eval {}: has no class '{PERSON}' (classes {:?})",
                dir.display(),
                dataset.names
            )
        })?;
    let params = ThermalPeopleParams::default();
    let images: Vec<EvalImage> = dataset
        .samples
        .par_iter()
        .map(|s| {
            let pair = dataset.load_pair(s)?;
            Ok(EvalImage {
                labels: persons_only(&pair.labels, person),
                detections: detect_people(&pair.ir, &params),
                condition: pair.condition,
            })
        })
        .collect::<Result<_>>()?;
    let report = evaluate_dataset(&[PERSON.to_owned()], &images);
    let Metrics { stats, .. } = &report.overall;
    let at = PseudoLabelQuality::measure(&images, conf);
    Ok(LabelQuality {
        data: dir.to_path_buf(),
        images: images.len(),
        persons: images.iter().map(|im| im.labels.len()).sum(),
        ap50: stats.map50,
        ap: stats.map,
        precision: at.precision,
        recall: at.recall,
    })
}

/// The `person` labels of a dataset, renumbered to class 0.
fn persons_only(labels: &[Label], person: usize) -> Vec<Label> {
    labels
        .iter()
        .filter(|l| l.class_id == person)
        .map(|l| Label {
            class_id: 0,
            bbox: l.bbox,
        })
        .collect()
}
