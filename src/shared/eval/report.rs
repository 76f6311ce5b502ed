//! Dataset-level evaluation: COCO metrics overall and per imaging condition,
//! straight from labels and detections in pixels (no JSON files), for
//! training's validation and the `eval-coco` command.

use super::coco::{evaluate, DetectionResult, GroundTruth};
use super::metrics::{fmt_metric, Metrics};
use crate::shared::bbox::{BBox, Detection, Label};
use crate::shared::condition::Condition;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// One validation image: its labels, the model's detections and, when
/// known, its imaging condition.
#[derive(Debug, Clone, Default)]
pub struct EvalImage {
    pub labels: Vec<Label>,
    pub detections: Vec<Detection>,
    pub condition: Option<Condition>,
}

/// Metrics over all images and per condition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalReport {
    pub overall: Metrics,
    /// "day", "night", "fog" for each condition present, and "adverse"
    /// (night and fog together) when either is present.
    pub per_condition: BTreeMap<String, Metrics>,
}

/// Name of the night+fog group in [`EvalReport::per_condition`].
pub const ADVERSE: &str = "adverse";

/// COCO-evaluates `images` (categories `0..names.len()`, named by `names`),
/// overall and per condition. Boxes become COCO `[x, y, w, h]` in f64 with
/// area w*h; labels and detections of a class outside `names` are left out.
pub fn evaluate_dataset(names: &[String], images: &[EvalImage]) -> EvalReport {
    let (gts, dts) = to_coco(names.len(), images);
    let cat_ids: Vec<i64> = (0..names.len() as i64).collect();
    let subset = |keep: &dyn Fn(Option<Condition>) -> bool| {
        let img_ids: Vec<i64> = images
            .iter()
            .enumerate()
            .filter(|(_, im)| keep(im.condition))
            .map(|(i, _)| i as i64)
            .collect();
        let eval = evaluate(&img_ids, &cat_ids, &gts, &dts);
        Metrics::from_eval(&eval, |id| names[id as usize].clone())
    };

    let overall = subset(&|_| true);
    let mut per_condition = BTreeMap::new();
    for c in Condition::ALL {
        if images.iter().any(|im| im.condition == Some(c)) {
            per_condition.insert(c.as_str().to_string(), subset(&|ic| ic == Some(c)));
        }
    }
    if images
        .iter()
        .any(|im| im.condition.is_some_and(|c| c.is_adverse()))
    {
        per_condition.insert(
            ADVERSE.to_string(),
            subset(&|ic| ic.is_some_and(|c| c.is_adverse())),
        );
    }
    EvalReport {
        overall,
        per_condition,
    }
}

/// `[x, y, w, h]` of a corner box, in f64.
pub fn to_xywh(b: &BBox) -> [f64; 4] {
    let (x1, y1) = (f64::from(b.x1), f64::from(b.y1));
    [x1, y1, f64::from(b.x2) - x1, f64::from(b.y2) - y1]
}

/// COCO ground truths and detections of `images` (image id = index). Ids
/// count from 1 in image order, as a COCO file written from them would
/// number them (id 0 would never count as matched).
fn to_coco(num_classes: usize, images: &[EvalImage]) -> (Vec<GroundTruth>, Vec<DetectionResult>) {
    let mut gts = Vec::new();
    let mut dts = Vec::new();
    let mut dropped = 0usize;
    for (i, im) in images.iter().enumerate() {
        let img = i as i64;
        for l in &im.labels {
            if l.class_id < num_classes {
                let id = gts.len() as i64 + 1;
                gts.push(GroundTruth::from_box(
                    id,
                    img,
                    l.class_id as i64,
                    to_xywh(&l.bbox),
                ));
            } else {
                dropped += 1;
            }
        }
        for d in &im.detections {
            if d.class_id < num_classes {
                let id = dts.len() as i64 + 1;
                dts.push(DetectionResult::new(
                    id,
                    img,
                    d.class_id as i64,
                    to_xywh(&d.bbox),
                    f64::from(d.score),
                ));
            } else {
                dropped += 1;
            }
        }
    }
    if dropped > 0 {
        tracing::warn!(
            "{dropped} labels/detections have a class id >= {num_classes} and were not evaluated"
        );
    }
    (gts, dts)
}

impl EvalReport {
    /// The report as JSON: `{"overall": {...}, "per_condition": {...}}`,
    /// each a [`Metrics`] object.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self).expect("metrics serialise to JSON")
    }

    /// Rows in display order: all, then day / night / fog, then adverse.
    fn rows(&self) -> Vec<(&str, &Metrics)> {
        let mut rows = vec![("all", &self.overall)];
        for c in Condition::ALL {
            if let Some(m) = self.per_condition.get(c.as_str()) {
                rows.push((c.as_str(), m));
            }
        }
        if let Some(m) = self.per_condition.get(ADVERSE) {
            rows.push((ADVERSE, m));
        }
        rows
    }

    /// An aligned text table: one row per subset (all, each condition,
    /// adverse), columns images, labels, mAP50, mAP50-95 and each class's
    /// AP50-95 ("-" where the subset has no ground truth of it).
    pub fn table(&self) -> String {
        let classes: Vec<&str> = self
            .overall
            .per_class
            .iter()
            .map(|c| c.name.as_str())
            .collect();
        let widths: Vec<usize> = classes.iter().map(|n| n.len().max(5)).collect();
        let mut out = format!(
            "{:<8} {:>7} {:>7} {:>7} {:>8} |",
            "subset", "images", "labels", "mAP50", "mAP50-95"
        );
        for (name, w) in classes.iter().zip(&widths) {
            let _ = write!(out, " {name:>w$}");
        }
        out.push('\n');
        for (label, m) in self.rows() {
            let _ = write!(
                out,
                "{:<8} {:>7} {:>7} {:>7} {:>8} |",
                label,
                m.images,
                m.labels,
                fmt_metric(m.stats.map50),
                fmt_metric(m.stats.map)
            );
            for (c, w) in m.per_class.iter().zip(&widths) {
                let _ = write!(out, " {:>w$}", fmt_metric(c.map));
            }
            out.push('\n');
        }
        out.push_str("(per-class columns: AP@[.50:.95]; '-': no ground truth of that class)\n");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn label(class_id: usize, x: f32, y: f32, w: f32, h: f32) -> Label {
        Label {
            class_id,
            bbox: BBox::new(x, y, x + w, y + h),
        }
    }

    fn det(class_id: usize, score: f32, x: f32, y: f32, w: f32, h: f32) -> Detection {
        Detection {
            class_id,
            score,
            bbox: BBox::new(x, y, x + w, y + h),
        }
    }

    /// Precision is tp / (tp + fp + 2^-52), so a perfect score is 1 - 2^-52.
    fn approx(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-12
    }

    fn names() -> Vec<String> {
        vec!["person".into(), "car".into(), "bike".into()]
    }

    /// Day: both objects found. Night: the car found, a person missed.
    fn images() -> Vec<EvalImage> {
        vec![
            EvalImage {
                labels: vec![
                    label(0, 10.0, 10.0, 20.0, 40.0),
                    label(1, 100.0, 100.0, 60.0, 30.0),
                ],
                detections: vec![
                    det(0, 0.9, 10.0, 10.0, 20.0, 40.0),
                    det(1, 0.8, 100.0, 100.0, 60.0, 30.0),
                ],
                condition: Some(Condition::Day),
            },
            EvalImage {
                labels: vec![
                    label(0, 50.0, 50.0, 20.0, 40.0),
                    label(1, 0.0, 0.0, 60.0, 30.0),
                ],
                detections: vec![det(1, 0.7, 0.0, 0.0, 60.0, 30.0)],
                condition: Some(Condition::Night),
            },
            EvalImage {
                labels: vec![],
                detections: vec![],
                condition: None,
            },
        ]
    }

    #[test]
    fn reports_overall_and_per_condition() {
        let r = evaluate_dataset(&names(), &images());
        let keys: Vec<&str> = r.per_condition.keys().map(String::as_str).collect();
        assert_eq!(keys, vec!["adverse", "day", "night"]);
        assert_eq!(r.overall.images, 3);
        assert_eq!(r.overall.labels, 4);

        let day = &r.per_condition["day"];
        assert!(approx(day.stats.map, 1.0));
        let night = &r.per_condition["night"];
        // person AP 0 (missed), car AP 1, bike has no ground truth.
        assert_eq!(night.per_class[0].map, 0.0);
        assert!(approx(night.per_class[1].map, 1.0));
        assert_eq!(night.per_class[2].map, -1.0);
        assert!(approx(night.stats.map, 0.5));
        assert_eq!(r.per_condition["adverse"], *night);

        // Overall person: one of two found with a perfect ranking → recall
        // 1/2, precision 1 up to it: 51 of 101 recall points.
        let person = &r.overall.per_class[0];
        assert!(approx(person.map50, 51.0 / 101.0), "{person:?}");
        assert!(approx(r.overall.per_class[1].map, 1.0));
    }

    #[test]
    fn json_and_table_carry_every_subset() {
        let r = evaluate_dataset(&names(), &images());
        let j = r.to_json();
        assert!(approx(
            j["per_condition"]["day"]["map"].as_f64().unwrap(),
            1.0
        ));
        assert_eq!(j["overall"]["per_class"][1]["name"], "car");
        assert!(j["overall"]["ar100"].is_number());
        let table = r.table();
        let lines: Vec<&str> = table.lines().collect();
        assert!(
            lines[0].contains("mAP50-95")
                && lines[0].contains("person")
                && lines[0].contains("bike")
        );
        assert!(lines[1].starts_with("all"));
        assert!(
            lines[2].starts_with("day")
                && lines[3].starts_with("night")
                && lines[4].starts_with("adverse")
        );
        // Aligned: every row as long as the header.
        assert!(
            lines[1..5].iter().all(|l| l.len() == lines[0].len()),
            "{table}"
        );
    }

    #[test]
    fn out_of_range_classes_are_not_evaluated() {
        let mut imgs = images();
        imgs[0].labels.push(label(9, 0.0, 0.0, 5.0, 5.0));
        imgs[0]
            .detections
            .push(det(9, 0.99, 300.0, 300.0, 5.0, 5.0));
        let r = evaluate_dataset(&names(), &imgs);
        assert_eq!(r.overall.labels, 4);
        assert_eq!(r.overall.per_class.len(), 3);
    }

    #[test]
    fn no_conditions_means_no_condition_rows() {
        let mut imgs = images();
        imgs.iter_mut().for_each(|im| im.condition = None);
        let r = evaluate_dataset(&names(), &imgs);
        assert!(r.per_condition.is_empty());
        assert_eq!(r.table().lines().count(), 3);
    }
}
