//! `trainer pseudo-label`: a trained RGB+IR teacher labels a folder of
//! unlabeled pairs once, and writes them as a paired YOLO-txt dataset, so a
//! student then trains on them with plain `trainer train` at full speed —
//! the way a user labels a month of recordings.
//!
//! ```text
//! pairs ─ letterbox rgb [B,3,S,S] + ir [B,1,S,S] ─ teacher ─ NMS (conf) ─ boxes → source px
//!   └─ OUT/images/{rgb,ir}/NAME.png, OUT/labels/NAME.txt, OUT/meta.json
//! ```
//!
//! The threshold is `--conf`, or the one with the best F1 on the labeled
//! validation pairs of `--val-data` (what the teacher's scores mean there).
//! Every tenth pair is written to the `val` split, so the folder trains as
//! it is.

use crate::shared::condition::Split;
use crate::shared::data::meta::{DatasetMeta, ImageMeta, META_FILE};
use crate::shared::data::yolo::{IR_DIR, LABELS_DIR, RGB_DIR};
use crate::shared::letterbox::Letterbox;
use crate::shared::nms::{self, NmsParams};
use crate::shared::pair::FramePair;
use crate::shared::synth::writer::{write_png, yolo_label_text};
use crate::trainer::checkpoint::load_detector;
use crate::trainer::distill::pseudo::PseudoLabelQuality;
use crate::trainer::model::Detector;
use crate::trainer::train::augment::prepare;
use crate::trainer::train::init::device;
use crate::trainer::train::source::{open_eval_split, open_unlabeled, PairSource, SynthSizes};
use crate::trainer::train::validate::predict_images;
use anyhow::{bail, ensure, Context, Result};
use candle_core::{DType, Device, Tensor};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The summary written beside the labels.
pub const SUMMARY_FILE: &str = "pseudo_label.json";

/// What `trainer pseudo-label` is asked to do.
#[derive(Debug, Clone)]
pub struct PseudoLabelOptions {
    /// The teacher checkpoint (`trainer train --model teacher-*`).
    pub teacher: PathBuf,
    /// Unlabeled pairs: a folder (`images/{rgb,ir}`, LLVIP's
    /// `visible`/`infrared`, or `rgb`/`ir`) or `synth:N[:CONDITIONS]`.
    pub data: String,
    /// A new (or empty) folder for the labeled dataset.
    pub out: PathBuf,
    /// Score threshold; none: the best F1 on `val_data`'s validation pairs.
    pub conf: Option<f32>,
    /// Labeled pairs the threshold is chosen on (`synth` or a dataset).
    pub val_data: String,
    /// Validation pairs when `val_data` is `synth`.
    pub synth_val: usize,
    pub batch: usize,
    pub workers: usize,
    pub device: String,
}

/// What was written.
#[derive(Debug, Clone, Serialize)]
pub struct PseudoLabelSummary {
    pub pairs: usize,
    pub objects: usize,
    pub per_class: BTreeMap<String, usize>,
    pub threshold: f32,
    /// The pseudo-labels' quality on the validation pairs (when chosen there).
    pub validation: Option<PseudoLabelQuality>,
}

pub fn pseudo_label(o: &PseudoLabelOptions) -> Result<PseudoLabelSummary> {
    let dev = device(&o.device)?;
    let (teacher, cfg) = load_detector(&o.teacher, &dev)
        .with_context(|| format!("--teacher {}", o.teacher.display()))?;
    ensure!(
        teacher.needs_ir(),
        "--teacher {}: holds an RGB student; pseudo-labels come from an RGB+IR teacher",
        o.teacher.display()
    );
    ensure_empty_out(&o.out)?;
    let source = open_unlabeled(&o.data, 0, 0)?;
    let (threshold, validation) = match o.conf {
        Some(c) => {
            ensure!(
                (0.0..1.0).contains(&c),
                "--conf {c}: expected a score in [0, 1)"
            );
            (c, None)
        }
        None => {
            let q = calibrate(&teacher, &cfg.names, cfg.imgsz, o, &dev)?;
            (q.threshold, Some(q))
        }
    };
    for d in [RGB_DIR, IR_DIR, LABELS_DIR] {
        let p = o.out.join(d);
        std::fs::create_dir_all(&p).with_context(|| format!("cannot create {}", p.display()))?;
    }
    let mut meta = DatasetMeta {
        names: cfg.names.clone(),
        ..DatasetMeta::default()
    };
    let mut summary = PseudoLabelSummary {
        pairs: 0,
        objects: 0,
        per_class: cfg.names.iter().map(|n| (n.clone(), 0)).collect(),
        threshold,
        validation,
    };
    let params = NmsParams {
        conf: threshold,
        ..NmsParams::PREDICT
    };
    let indices: Vec<usize> = (0..source.len()).collect();
    let n = indices.len();
    for chunk in indices.chunks(o.batch.max(1)) {
        let pairs = chunk
            .iter()
            .map(|&i| source.load(i))
            .collect::<Result<Vec<FramePair>>>()?;
        let labels = label_batch(&teacher, &pairs, cfg.imgsz, cfg.nc, &params, &dev)?;
        for ((pair, labels), &index) in pairs.iter().zip(labels).zip(chunk) {
            write_pair(&o.out, pair, &labels)?;
            summary.pairs += 1;
            summary.objects += labels.len();
            for l in &labels {
                *summary
                    .per_class
                    .entry(cfg.names[l.class_id].clone())
                    .or_default() += 1;
            }
            ensure!(
                meta.images
                    .insert(
                        pair.name.clone(),
                        ImageMeta {
                            condition: pair.condition,
                            split: Some(split_of(index, n)),
                        },
                    )
                    .is_none(),
                "{}: two pairs are named '{}'; names must be unique",
                o.data,
                pair.name
            );
        }
    }
    meta.write(&o.out.join(META_FILE))?;
    // what was kept and at which threshold, beside the labels
    let path = o.out.join(SUMMARY_FILE);
    std::fs::write(&path, serde_json::to_string_pretty(&summary)?)
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(summary)
}

/// Every tenth pair validates (and the last one of a set under ten), so
/// the dataset trains as it is; the rest train.
pub(crate) fn split_of(index: usize, n: usize) -> Split {
    if index % 10 == 9 || (n < 10 && index + 1 == n) {
        Split::Val
    } else {
        Split::Train
    }
}

/// Refuses an `--out` that holds anything: pseudo-labels never overwrite
/// a user's files.
/// Refuses an `--out` that exists and holds anything: commands that write
/// a dataset never write over one (or over anything else).
pub(crate) fn ensure_empty_out(out: &Path) -> Result<()> {
    match std::fs::read_dir(out) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                bail!(
                    "--out {}: exists and is not empty; the dataset is written to a new folder",
                    out.display()
                );
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("--out {}", out.display())),
    }
}

/// The threshold with the best F1 of the teacher on `--val-data`'s
/// validation pairs, with the pseudo-labels' quality there.
fn calibrate(
    teacher: &Detector,
    names: &[String],
    imgsz: usize,
    o: &PseudoLabelOptions,
    dev: &Device,
) -> Result<PseudoLabelQuality> {
    let sizes = SynthSizes {
        train: 0,
        val: o.synth_val,
        seed: 0,
    };
    let (val_names, val): (Vec<String>, Arc<dyn PairSource>) =
        open_eval_split(&o.val_data, Split::Val, sizes)
            .with_context(|| format!("--val-data {}", o.val_data))?;
    ensure!(
        val_names == names,
        "--val-data {}: classes {:?} differ from the teacher's {:?}",
        o.val_data,
        val_names,
        names
    );
    let images = predict_images(teacher, val, names.len(), imgsz, o.batch, o.workers, dev)?;
    Ok(PseudoLabelQuality::at_best_f1(&images))
}

/// The teacher's labels of each pair, in the pair's own pixels.
fn label_batch(
    teacher: &Detector,
    pairs: &[FramePair],
    imgsz: usize,
    nc: usize,
    params: &NmsParams,
    dev: &Device,
) -> Result<Vec<Vec<crate::shared::bbox::Label>>> {
    let s = imgsz;
    let (mut rgb, mut ir) = (Vec::new(), Vec::new());
    for p in pairs {
        // no augmentation: the RNG is never drawn from
        let sample = prepare(p, s as u32, None, true, &mut ChaCha8Rng::seed_from_u64(0));
        rgb.extend_from_slice(&sample.rgb);
        ir.extend_from_slice(&sample.ir.context("IR image")?);
    }
    let b = pairs.len();
    let x = Tensor::from_vec(rgb, (b, 3, s, s), dev)?; // [B, 3, S, S]
    let x_ir = Tensor::from_vec(ir, (b, 1, s, s), dev)?; // [B, 1, S, S]
    let out = teacher
        .predict(&x, Some(&x_ir))?
        .to_device(&Device::Cpu)?
        .to_dtype(DType::F32)?; // [B, 4 + nc, N]
    pairs
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let row: Vec<f32> = out.get(i)?.flatten_all()?.to_vec1()?;
            let (w, h) = (p.width_px(), p.height_px());
            let lb = Letterbox::new(w, h, s as u32, s as u32);
            Ok(nms::detections(&row, nc, params)
                .into_iter()
                .map(|d| crate::shared::bbox::Label {
                    class_id: d.class_id,
                    bbox: lb.to_source(&d.bbox, w, h),
                })
                .collect())
        })
        .collect()
}

/// Writes one pair's images (PNG) and label file.
fn write_pair(out: &Path, pair: &FramePair, labels: &[crate::shared::bbox::Label]) -> Result<()> {
    let (w, h) = (pair.width_px(), pair.height_px());
    let name = &pair.name;
    write_png(
        &out.join(RGB_DIR).join(format!("{name}.png")),
        pair.rgb.as_raw(),
        w,
        h,
        image::ExtendedColorType::Rgb8,
    )?;
    write_png(
        &out.join(IR_DIR).join(format!("{name}.png")),
        pair.ir.as_raw(),
        w,
        h,
        image::ExtendedColorType::L8,
    )?;
    let path = out.join(LABELS_DIR).join(format!("{name}.txt"));
    std::fs::write(&path, yolo_label_text(labels, w, h))
        .with_context(|| format!("cannot write {}", path.display()))
}
