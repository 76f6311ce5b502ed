//! The numbers an evaluation reports: pycocotools' twelve summary values,
//! image and label counts, and per-class AP, with their text forms. Both
//! the COCO-file evaluation ([`super::json`]) and the dataset evaluation
//! ([`super::report`]) produce these.

use super::coco::{CocoEval, CocoStats};
use serde::{Deserialize, Serialize};
use std::fmt::Write as _;

/// AP of one category (area all, 100 detections per image); -1 when the
/// evaluated images hold no ground truth of it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassMetrics {
    /// COCO category id (for [`evaluate_dataset`]: the class index).
    pub category_id: i64,
    pub name: String,
    /// AP@[.50:.95].
    pub map: f64,
    /// AP@.50.
    pub map50: f64,
}

/// COCO metrics of one set of images.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Metrics {
    /// The twelve pycocotools numbers (flattened into the JSON object:
    /// `map`, `map50`, `map75`, `map_small`, ..., `ar_large`).
    #[serde(flatten)]
    pub stats: CocoStats,
    /// Images evaluated.
    pub images: usize,
    /// Non-crowd ground-truth objects of the evaluated categories.
    pub labels: usize,
    /// One entry per category, by ascending category id.
    pub per_class: Vec<ClassMetrics>,
}

impl Metrics {
    /// Summarises an evaluation; `name_of` names a category id.
    pub fn from_eval(eval: &CocoEval, name_of: impl Fn(i64) -> String) -> Self {
        let per_class = eval
            .cat_ids
            .iter()
            .enumerate()
            .map(|(k, &id)| ClassMetrics {
                category_id: id,
                name: name_of(id),
                map: eval.category_map(k),
                map50: eval.category_map50(k),
            })
            .collect();
        Self {
            stats: eval.stats(),
            images: eval.img_ids.len(),
            labels: eval.num_gts,
            per_class,
        }
    }

    /// The twelve pycocotools summary lines.
    pub fn summary_lines(&self) -> Vec<String> {
        self.stats.summary_lines()
    }

    /// Per-class AP as an aligned text table.
    pub fn per_class_table(&self) -> String {
        let width = self
            .per_class
            .iter()
            .map(|c| c.name.len())
            .max()
            .unwrap_or(0)
            .max("class".len());
        let mut out = format!(
            "{:>6}  {:<width$}  {:>8}  {:>6}\n",
            "id", "class", "AP50-95", "AP50"
        );
        for c in &self.per_class {
            let _ = writeln!(
                out,
                "{:>6}  {:<width$}  {:>8}  {:>6}",
                c.category_id,
                c.name,
                fmt_metric(c.map),
                fmt_metric(c.map50)
            );
        }
        out
    }
}

/// A metric to 3 decimals, "-" for -1 (nothing to measure).
pub(crate) fn fmt_metric(v: f64) -> String {
    if v < 0.0 {
        "-".to_string()
    } else {
        format!("{v:.3}")
    }
}
