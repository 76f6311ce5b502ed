//! Pseudo-labels: on unlabeled pairs the teacher, which sees the thermal
//! image, labels the objects the student must find in RGB alone. Its
//! detections after NMS, with class ids, at or above a threshold become
//! detection targets weighted by their score (a 0.4 detection pulls less
//! than a 0.9 one). The threshold is the one with the best F1 against the
//! validation labels, since the teacher's scores are IoU-aware and run low
//! (a fixed 0.5 drops most of its true hits).

use super::Distiller;
use crate::shared::bbox::Label;
use crate::shared::condition::Condition;
use crate::shared::eval::pr::{best_f1_threshold, total_counts, MatchCounts};
use crate::shared::eval::EvalImage;
use crate::trainer::model::ModelOutput;
use anyhow::Result;
use serde::Serialize;
use std::collections::BTreeMap;

/// The threshold before calibration (and of runs without unlabeled pairs).
pub const UNCALIBRATED_CONF: f32 = 0.25;

/// How good the teacher's pseudo-labels are on the validation pairs at the
/// chosen threshold (written to `pseudo_labels.json` of a run).
#[derive(Debug, Clone, Serialize)]
pub struct PseudoLabelQuality {
    pub threshold: f32,
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
    /// Per condition (and `adverse`): precision and recall.
    pub per_condition: BTreeMap<String, (f64, f64)>,
    pub images: usize,
}

impl PseudoLabelQuality {
    /// The quality of `images` (the teacher's detections on labeled pairs)
    /// at the threshold with the best F1 there.
    pub fn at_best_f1(images: &[EvalImage]) -> Self {
        let pairs: Vec<_> = images
            .iter()
            .map(|im| (im.labels.as_slice(), im.detections.as_slice()))
            .collect();
        let (threshold, _) = best_f1_threshold(&pairs);
        Self::measure(images, threshold)
    }

    /// The quality of `images` (the teacher's detections on labeled pairs)
    /// at `threshold`.
    pub fn measure(images: &[EvalImage], threshold: f32) -> Self {
        let counts = |keep: &dyn Fn(Option<Condition>) -> bool| -> MatchCounts {
            total_counts(
                images
                    .iter()
                    .filter(|im| keep(im.condition))
                    .map(|im| (im.labels.as_slice(), im.detections.as_slice())),
                threshold,
                0.5,
            )
        };
        let all = counts(&|_| true);
        let mut per_condition = BTreeMap::new();
        for c in Condition::ALL {
            if images.iter().any(|im| im.condition == Some(c)) {
                let k = counts(&|ic| ic == Some(c));
                per_condition.insert(c.to_string(), (k.precision(), k.recall()));
            }
        }
        if images
            .iter()
            .any(|im| im.condition.is_some_and(|c| c.is_adverse()))
        {
            let k = counts(&|ic| ic.is_some_and(|c| c.is_adverse()));
            per_condition.insert("adverse".into(), (k.precision(), k.recall()));
        }
        Self {
            threshold,
            precision: all.precision(),
            recall: all.recall(),
            f1: all.f1(),
            per_condition,
            images: images.len(),
        }
    }
}

impl Distiller {
    /// Whether the threshold is still to be chosen on validation pairs:
    /// unlabeled pairs are used and `teacher_conf` is not given.
    pub fn needs_calibration(&self) -> bool {
        self.opts.unlabeled.is_some() && self.opts.teacher_conf.is_none()
    }

    /// Sets the threshold to the one with the best F1 on `images` (the
    /// teacher's detections on validation pairs, with their labels) and
    /// returns the pseudo-labels' quality there.
    pub fn calibrate(&mut self, images: &[EvalImage]) -> PseudoLabelQuality {
        let q = PseudoLabelQuality::at_best_f1(images);
        self.conf = q.threshold;
        q
    }

    /// The teacher's pseudo-labels of each image, weighted by their scores.
    pub fn pseudo_labels(&self, teacher: &ModelOutput) -> Result<PseudoLabels> {
        let dets = self.teacher_detections(teacher)?;
        let labels = dets
            .iter()
            .map(|ds| {
                ds.iter()
                    .map(|d| Label {
                        class_id: d.class_id,
                        bbox: d.bbox,
                    })
                    .collect()
            })
            .collect();
        let weights = dets
            .iter()
            .map(|ds| ds.iter().map(|d| d.score).collect())
            .collect();
        Ok(PseudoLabels { labels, weights })
    }
}

/// The pseudo-labels of a batch: per image the boxes with class ids, and
/// the weight of each (its score).
pub struct PseudoLabels {
    pub labels: Vec<Vec<Label>>,
    pub weights: Vec<Vec<f32>>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shared::bbox::{BBox, Detection};

    #[test]
    fn quality_per_condition() {
        let l = Label {
            class_id: 0,
            bbox: BBox::new(0.0, 0.0, 10.0, 10.0),
        };
        let hit = Detection {
            class_id: 0,
            score: 0.6,
            bbox: l.bbox,
        };
        let images = vec![
            EvalImage {
                labels: vec![l],
                detections: vec![hit],
                condition: Some(Condition::Day),
            },
            EvalImage {
                labels: vec![l],
                detections: vec![Detection { score: 0.3, ..hit }],
                condition: Some(Condition::Night),
            },
        ];
        let q = PseudoLabelQuality::measure(&images, 0.5);
        assert_eq!((q.precision, q.recall), (1.0, 0.5));
        assert_eq!(q.per_condition["day"], (1.0, 1.0));
        assert_eq!(q.per_condition["night"], (0.0, 0.0));
        assert_eq!(q.per_condition["adverse"], (0.0, 0.0));
        assert!(!q.per_condition.contains_key("fog"));
    }
}
