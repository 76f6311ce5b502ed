//! The statistics of an experiment: mean ± std over seeds, and for a paired
//! comparison (same seed, same data, same initialisation, same test images)
//! two 95 % intervals of the difference: a t interval over seeds, and a
//! bootstrap over test images. A gain is claimed only where both exclude 0.
//!
//! The bootstrap needs mAP50 of many resamples of the test images, so each
//! arm keeps its detections matched to the labels at IoU 0.5 per image
//! ([`TestMatches`], `test_matches.json`); [`TestMatches::map50`] turns any
//! multiset of images into pycocotools' mAP50 (area all, 100 detections per
//! image), equal to the COCO evaluation on the full set.

use crate::shared::condition::Condition;
use crate::shared::eval::coco::{box_ious, recall_thresholds};
use crate::shared::eval::report::to_xywh;
use crate::shared::eval::EvalImage;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

/// Mean and sample standard deviation (0 for one value).
pub fn mean_std(v: &[f64]) -> (f64, f64) {
    let n = v.len() as f64;
    let mean = v.iter().sum::<f64>() / n;
    let var = if v.len() > 1 {
        v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0)
    } else {
        0.0
    };
    (mean, var.sqrt())
}

/// Student's t quantile at 0.975 for `df` degrees of freedom.
pub fn t975(df: usize) -> f64 {
    const T: [f64; 30] = [
        12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160,
        2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056,
        2.052, 2.048, 2.045, 2.042,
    ];
    match df {
        0 => f64::NAN,
        1..=30 => T[df - 1],
        _ => 1.96,
    }
}

/// The 95 % t interval of the mean of `diffs` (NaN bounds below 2 values).
pub fn t_interval(diffs: &[f64]) -> (f64, f64) {
    let (mean, sd) = mean_std(diffs);
    let half = t975(diffs.len().saturating_sub(1)) * sd / (diffs.len() as f64).sqrt();
    (mean - half, mean + half)
}

/// One test image's detections matched at IoU 0.5, per class.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ImageMatches {
    pub condition: Option<Condition>,
    /// Labels per class.
    pub labels: Vec<u32>,
    /// `(class, score, true positive)` of the image's 100 best detections
    /// per class, in pycocotools' order (score descending, stable).
    pub detections: Vec<(u32, f32, bool)>,
}

/// An arm's test-split detections, matched (`test_matches.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TestMatches {
    pub num_classes: usize,
    pub images: Vec<ImageMatches>,
    /// Per class, every image's detections ranked as pycocotools ranks
    /// them over all images: `(image, true positive)` by score descending,
    /// stable in image order (built on first use; not stored).
    #[serde(skip)]
    ranked: std::sync::OnceLock<Vec<Vec<(u32, bool)>>>,
}

/// pycocotools' `maxDets` of its AP.
const MAX_DETS: usize = 100;

impl TestMatches {
    /// Matches each image's detections to its labels as pycocotools'
    /// `evaluateImg` does at IoU 0.5: detections by score, each to the
    /// unmatched label of its class with the highest IoU ≥ 0.5 (the last
    /// of equals), IoUs in f64 on `[x, y, w, h]`.
    pub fn from_images(num_classes: usize, images: &[EvalImage]) -> Self {
        let images = images
            .iter()
            .map(|im| {
                let mut labels = vec![0u32; num_classes];
                let mut detections = Vec::new();
                for (c, n_labels) in labels.iter_mut().enumerate() {
                    let gts: Vec<[f64; 4]> = im
                        .labels
                        .iter()
                        .filter(|l| l.class_id == c)
                        .map(|l| to_xywh(&l.bbox))
                        .collect();
                    *n_labels = gts.len() as u32;
                    let mut dts: Vec<_> =
                        im.detections.iter().filter(|d| d.class_id == c).collect();
                    dts.sort_by(|a, b| b.score.total_cmp(&a.score));
                    dts.truncate(MAX_DETS);
                    let boxes: Vec<[f64; 4]> = dts.iter().map(|d| to_xywh(&d.bbox)).collect();
                    let ious = box_ious(&boxes, &gts, &vec![false; gts.len()]);
                    let mut used = vec![false; gts.len()];
                    for (i, d) in dts.iter().enumerate() {
                        let mut best = (0.5f64.min(1.0 - 1e-10), None);
                        for (g, used_g) in used.iter().enumerate() {
                            let iou = ious[i * gts.len() + g];
                            if !used_g && iou >= best.0 {
                                best = (iou, Some(g));
                            }
                        }
                        if let Some(g) = best.1 {
                            used[g] = true;
                        }
                        detections.push((c as u32, d.score, best.1.is_some()));
                    }
                }
                ImageMatches {
                    condition: im.condition,
                    labels,
                    detections,
                }
            })
            .collect();
        Self {
            num_classes,
            images,
            ranked: std::sync::OnceLock::new(),
        }
    }

    fn ranked(&self) -> &Vec<Vec<(u32, bool)>> {
        self.ranked.get_or_init(|| {
            (0..self.num_classes as u32)
                .map(|c| {
                    let mut dets: Vec<(f32, u32, bool)> = self
                        .images
                        .iter()
                        .enumerate()
                        .flat_map(|(i, im)| {
                            im.detections
                                .iter()
                                .filter(move |d| d.0 == c)
                                .map(move |d| (d.1, i as u32, d.2))
                        })
                        .collect();
                    dets.sort_by(|a, b| b.0.total_cmp(&a.0));
                    dets.into_iter().map(|(_, i, tp)| (i, tp)).collect()
                })
                .collect()
        })
    }

    /// Indices of the images of `split` (`day`, `night`, `fog`, `adverse`,
    /// `all`).
    pub fn split_indices(&self, split: &str) -> Vec<usize> {
        let keep = |c: Option<Condition>| match split {
            "all" => true,
            "adverse" => c.is_some_and(|c| c.is_adverse()),
            name => c.is_some_and(|c| c.as_str() == name),
        };
        (0..self.images.len())
            .filter(|&i| keep(self.images[i].condition))
            .collect()
    }

    /// mAP50 of the images `sample` (indices, repeats allowed), as
    /// pycocotools' accumulate: per class, detections of all images ranked
    /// by score (stable, in image order), precision made monotone and read
    /// at the 101 recall points; classes without labels left out. NaN when
    /// no class has labels.
    ///
    /// An image drawn k times counts k times, its copies ranked next to
    /// each other (pycocotools would interleave them with other images'
    /// detections of exactly the same score: no difference in practice).
    pub fn map50(&self, sample: &[usize]) -> f64 {
        let mut copies = vec![0u32; self.images.len()];
        for &i in sample {
            copies[i] += 1;
        }
        let rec_thrs = recall_thresholds();
        let mut aps = Vec::new();
        for (c, ranked) in self.ranked().iter().enumerate() {
            let n_labels: u32 = sample.iter().map(|&i| self.images[i].labels[c]).sum();
            if n_labels == 0 {
                continue;
            }
            aps.push(average_precision(
                ranked,
                &copies,
                n_labels as f64,
                &rec_thrs,
            ));
        }
        if aps.is_empty() {
            f64::NAN
        } else {
            aps.iter().sum::<f64>() / aps.len() as f64
        }
    }
}

/// AP of ranked `(image, true positive)` detections, image `i`'s counted
/// `copies[i]` times, with `n_labels` labels.
fn average_precision(
    ranked: &[(u32, bool)],
    copies: &[u32],
    n_labels: f64,
    rec_thrs: &[f64],
) -> f64 {
    let (mut tp, mut fp) = (0.0f64, 0.0f64);
    let mut rc = Vec::with_capacity(ranked.len());
    let mut pr = Vec::with_capacity(ranked.len());
    for &(image, hit) in ranked {
        for _ in 0..copies[image as usize] {
            if hit {
                tp += 1.0;
            } else {
                fp += 1.0;
            }
            rc.push(tp / n_labels);
            pr.push(tp / (tp + fp + f64::EPSILON));
        }
    }
    for i in (1..pr.len()).rev() {
        if pr[i] > pr[i - 1] {
            pr[i - 1] = pr[i];
        }
    }
    let mut sum = 0.0;
    for &r in rec_thrs {
        let idx = rc.partition_point(|&x| x < r);
        if idx < pr.len() {
            sum += pr[idx];
        }
    }
    sum / rec_thrs.len() as f64
}

/// The 95 % bootstrap interval of the seed-mean paired difference
/// `mean_s(mAP50(a_s) − mAP50(b_s))` over `resamples` resamples (with
/// replacement) of the test images of `split`; each resample is shared by
/// every seed and both arms. `None` without pairs or images.
pub fn bootstrap_interval(
    pairs: &[(&TestMatches, &TestMatches)],
    split: &str,
    resamples: usize,
    seed: u64,
) -> Option<(f64, f64)> {
    let first = pairs.first()?.0;
    let pool = first.split_indices(split);
    if pool.is_empty() || resamples == 0 {
        return None;
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut diffs: Vec<f64> = (0..resamples)
        .map(|_| {
            let sample: Vec<usize> = (0..pool.len())
                .map(|_| pool[rng.random_range(0..pool.len())])
                .collect();
            let per_seed: Vec<f64> = pairs
                .iter()
                .map(|(a, b)| a.map50(&sample) - b.map50(&sample))
                .collect();
            per_seed.iter().sum::<f64>() / per_seed.len() as f64
        })
        .filter(|d| d.is_finite())
        .collect();
    if diffs.is_empty() {
        return None;
    }
    diffs.sort_by(f64::total_cmp);
    let at = |q: f64| diffs[((q * (diffs.len() - 1) as f64).round() as usize).min(diffs.len() - 1)];
    Some((at(0.025), at(0.975)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shared::bbox::{BBox, Detection, Label};
    use crate::shared::eval::evaluate_dataset;

    fn random_images(seed: u64, n: usize) -> Vec<EvalImage> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let bx = |rng: &mut ChaCha8Rng| {
            let (x, y) = (
                rng.random_range(0.0..100.0f32),
                rng.random_range(0.0..100.0f32),
            );
            let (w, h) = (
                rng.random_range(5.0..40.0f32),
                rng.random_range(5.0..40.0f32),
            );
            BBox::new(x, y, x + w, y + h)
        };
        (0..n)
            .map(|i| {
                let labels: Vec<Label> = (0..rng.random_range(0..4))
                    .map(|_| Label {
                        class_id: rng.random_range(0..2),
                        bbox: bx(&mut rng),
                    })
                    .collect();
                let mut detections = Vec::new();
                for l in &labels {
                    if rng.random_bool(0.7) {
                        detections.push(Detection {
                            class_id: l.class_id,
                            score: rng.random_range(0.0..1.0),
                            bbox: BBox::new(l.bbox.x1 + 2.0, l.bbox.y1, l.bbox.x2 + 2.0, l.bbox.y2),
                        });
                    }
                }
                for _ in 0..rng.random_range(0..5) {
                    detections.push(Detection {
                        class_id: rng.random_range(0..2),
                        score: rng.random_range(0.0..1.0),
                        bbox: bx(&mut rng),
                    });
                }
                EvalImage {
                    labels,
                    detections,
                    condition: Some(Condition::ALL[i % 3]),
                }
            })
            .collect()
    }

    #[test]
    fn map50_of_matches_equals_the_coco_evaluation() {
        let names = vec!["a".to_string(), "b".to_string()];
        for seed in 0..4 {
            let images = random_images(seed, 60);
            let report = evaluate_dataset(&names, &images);
            let m = TestMatches::from_images(2, &images);
            let all: Vec<usize> = (0..images.len()).collect();
            assert!((m.map50(&all) - report.overall.stats.map50).abs() < 1e-12);
            let night = m.split_indices("night");
            assert_eq!(night.len(), 20);
            let want = report.per_condition["night"].stats.map50;
            assert!(
                (m.map50(&night) - want).abs() < 1e-12,
                "{} {want}",
                m.map50(&night)
            );
            let adverse = m.split_indices("adverse");
            let want = report.per_condition["adverse"].stats.map50;
            assert!((m.map50(&adverse) - want).abs() < 1e-12);
        }
    }

    #[test]
    fn intervals() {
        assert_eq!(mean_std(&[1.0, 3.0]), (2.0, 2f64.sqrt()));
        assert_eq!(mean_std(&[0.5]), (0.5, 0.0));
        // mean 0.05, sd 0.01, n 3: half-width 4.303 · 0.01 / √3
        let (lo, hi) = t_interval(&[0.04, 0.05, 0.06]);
        assert!((hi - lo - 2.0 * 4.303 * 0.01 / 3f64.sqrt()).abs() < 1e-9);
        assert!(t_interval(&[0.1]).0.is_nan());

        // an arm against itself: the bootstrap interval is exactly 0
        let m = TestMatches::from_images(2, &random_images(7, 90));
        let (lo, hi) = bootstrap_interval(&[(&m, &m)], "all", 50, 1).unwrap();
        assert_eq!((lo, hi), (0.0, 0.0));
        // a better arm (its detections of labels all hit) wins on every resample
        let mut better_images = random_images(7, 90);
        for im in &mut better_images {
            im.detections = im
                .labels
                .iter()
                .map(|l| Detection {
                    class_id: l.class_id,
                    score: 0.9,
                    bbox: l.bbox,
                })
                .collect();
        }
        let better = TestMatches::from_images(2, &better_images);
        let (lo, _) = bootstrap_interval(&[(&better, &m)], "night", 50, 1).unwrap();
        assert!(lo > 0.0, "{lo}");
    }
}
