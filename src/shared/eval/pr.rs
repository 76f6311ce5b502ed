//! Precision and recall at one confidence threshold (IoU 0.5, class-aware,
//! greedy by score as a detector's user would count hits): what a
//! pseudo-label threshold or a live demo is judged by, where mAP's
//! threshold-free average does not say how a deployed threshold behaves.

use crate::shared::bbox::{Detection, Label};
use serde::{Deserialize, Serialize};

/// Hits and misses at one threshold.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct MatchCounts {
    /// Detections matched to a label of their class at IoU ≥ the threshold.
    pub tp: usize,
    /// Detections matched to nothing.
    pub fp: usize,
    /// Labels.
    pub labels: usize,
}

impl MatchCounts {
    /// `tp / (tp + fp)`; 0 without detections.
    pub fn precision(&self) -> f64 {
        ratio(self.tp, self.tp + self.fp)
    }
    /// `tp / labels`; 0 without labels.
    pub fn recall(&self) -> f64 {
        ratio(self.tp, self.labels)
    }
    pub fn f1(&self) -> f64 {
        let (p, r) = (self.precision(), self.recall());
        if p + r == 0.0 {
            0.0
        } else {
            2.0 * p * r / (p + r)
        }
    }
    pub fn add(&mut self, o: MatchCounts) {
        self.tp += o.tp;
        self.fp += o.fp;
        self.labels += o.labels;
    }
}

fn ratio(a: usize, b: usize) -> f64 {
    if b == 0 {
        0.0
    } else {
        a as f64 / b as f64
    }
}

/// Matches the detections with `score ≥ conf` to `labels`: highest score
/// first, each to the unmatched label of its class with the largest IoU,
/// if that IoU is at least `iou`.
pub fn match_counts(
    labels: &[Label],
    detections: &[Detection],
    conf: f32,
    iou: f32,
) -> MatchCounts {
    let mut kept: Vec<&Detection> = detections.iter().filter(|d| d.score >= conf).collect();
    kept.sort_by(|a, b| b.score.total_cmp(&a.score));
    let mut used = vec![false; labels.len()];
    let mut counts = MatchCounts {
        labels: labels.len(),
        ..MatchCounts::default()
    };
    for d in kept {
        let best = labels
            .iter()
            .enumerate()
            .filter(|(i, l)| !used[*i] && l.class_id == d.class_id)
            .map(|(i, l)| (i, l.bbox.iou(&d.bbox)))
            .filter(|&(_, v)| v >= iou)
            .max_by(|a, b| a.1.total_cmp(&b.1));
        match best {
            Some((i, _)) => {
                used[i] = true;
                counts.tp += 1;
            }
            None => counts.fp += 1,
        }
    }
    counts
}

/// The counts over many images (`(labels, detections)` each) at `conf`.
pub fn total_counts<'a>(
    images: impl IntoIterator<Item = (&'a [Label], &'a [Detection])>,
    conf: f32,
    iou: f32,
) -> MatchCounts {
    let mut total = MatchCounts::default();
    for (labels, dets) in images {
        total.add(match_counts(labels, dets, conf, iou));
    }
    total
}

/// The threshold among 0.05, 0.10, …, 0.95 with the best F1 at IoU 0.5
/// over `images`, with its counts (the lowest such threshold on a tie).
pub fn best_f1_threshold(images: &[(&[Label], &[Detection])]) -> (f32, MatchCounts) {
    let mut best = (0.05f32, MatchCounts::default());
    let mut best_f1 = -1.0;
    for k in 1..=19 {
        let conf = k as f32 * 0.05;
        let counts = total_counts(images.iter().copied(), conf, 0.5);
        if counts.f1() > best_f1 {
            best_f1 = counts.f1();
            best = (conf, counts);
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shared::bbox::BBox;

    fn label(c: usize, x: f32) -> Label {
        Label {
            class_id: c,
            bbox: BBox::new(x, 0.0, x + 10.0, 10.0),
        }
    }
    fn det(c: usize, x: f32, score: f32) -> Detection {
        Detection {
            class_id: c,
            score,
            bbox: BBox::new(x, 0.0, x + 10.0, 10.0),
        }
    }

    #[test]
    fn counts_hits_misses_and_duplicates() {
        let labels = [label(0, 0.0), label(1, 50.0)];
        let dets = [
            det(0, 1.0, 0.9),  // hit
            det(0, 0.0, 0.8),  // duplicate of the same label: false positive
            det(0, 50.0, 0.7), // right place, wrong class
            det(1, 80.0, 0.1), // below the threshold
        ];
        let c = match_counts(&labels, &dets, 0.5, 0.5);
        assert_eq!(
            c,
            MatchCounts {
                tp: 1,
                fp: 2,
                labels: 2
            }
        );
        assert!((c.precision() - 1.0 / 3.0).abs() < 1e-12);
        assert!((c.recall() - 0.5).abs() < 1e-12);
        assert!((c.f1() - 0.4).abs() < 1e-12);
        assert_eq!(MatchCounts::default().f1(), 0.0);
    }

    #[test]
    fn best_threshold_drops_low_scored_false_positives() {
        let labels = vec![label(0, 0.0)];
        let dets = vec![det(0, 0.0, 0.8), det(0, 40.0, 0.3)];
        let images = vec![(labels.as_slice(), dets.as_slice())];
        let (conf, counts) = best_f1_threshold(&images);
        assert!(conf > 0.3 && conf <= 0.8, "{conf}");
        assert_eq!(
            counts,
            MatchCounts {
                tp: 1,
                fp: 0,
                labels: 1
            }
        );
    }
}
