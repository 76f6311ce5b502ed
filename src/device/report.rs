//! What a daemon run sums up: the [`Report`] that `irdistill run --summary`
//! writes as JSON and `irdistill demo` prints, and the [`Tally`] of
//! published frames it is built from. Kept apart from the wiring in
//! `daemon` because the report's fields are a file format others read.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::device::capture::source::SourceSpec;
use crate::device::capture::synthetic::SyntheticSource;
use crate::device::config::Config;
use crate::device::infer::ModelInfo;
use crate::device::metrics::{peak_resident_memory_bytes, Histogram, Metrics};
use crate::device::pipeline::{FrameEvent, RunSummary};
use crate::shared::bbox::{BBox, Detection, Label};
use crate::shared::condition::Condition;
use crate::shared::eval::pr::{match_counts, MatchCounts};

/// Detections counted per label, overall and per condition, and the
/// snapshots written, as the publish stage reports frames.
#[derive(Default)]
pub struct Tally {
    frames: u64,
    detections: BTreeMap<String, u64>,
    /// Frames and detections per label, per condition.
    conditions: BTreeMap<Condition, (u64, BTreeMap<String, u64>)>,
    /// Against the source's ground truth (synthetic camera): matches per
    /// class id, overall and per condition.
    truth: BTreeMap<usize, MatchCounts>,
    truth_by_condition: BTreeMap<Condition, BTreeMap<usize, MatchCounts>>,
    snapshots: Vec<SnapshotRecord>,
}

impl Tally {
    /// Counts one published frame, of `condition` when the source knows
    /// it; with `truth` (the frame's labels, in frame pixels) its
    /// detections are matched at IoU 0.5 per class.
    pub fn record(
        &mut self,
        event: &FrameEvent,
        condition: Option<Condition>,
        truth: Option<&[Label]>,
    ) {
        self.frames += 1;
        if let Some(labels) = truth {
            self.record_truth(event, condition, labels);
        }
        let mut per_condition = condition.map(|c| {
            let entry = self.conditions.entry(c).or_default();
            entry.0 += 1;
            &mut entry.1
        });
        for d in &event.message.detections {
            *self.detections.entry(d.label.clone()).or_default() += 1;
            if let Some(counts) = per_condition.as_mut() {
                *counts.entry(d.label.clone()).or_default() += 1;
            }
        }
        if let Some(path) = event.snapshot {
            self.snapshots.push(SnapshotRecord {
                path: path.to_path_buf(),
                frame: event.message.frame,
                condition,
                detections: event.message.detections.len(),
            });
        }
    }
}

impl Tally {
    fn record_truth(&mut self, event: &FrameEvent, condition: Option<Condition>, labels: &[Label]) {
        let dets: Vec<Detection> = event
            .message
            .detections
            .iter()
            .map(|d| Detection {
                class_id: d.class_id,
                score: d.score,
                bbox: BBox::new(d.bbox[0], d.bbox[1], d.bbox[2], d.bbox[3]),
            })
            .collect();
        let classes: std::collections::BTreeSet<usize> = labels
            .iter()
            .map(|l| l.class_id)
            .chain(dets.iter().map(|d| d.class_id))
            .collect();
        for c in classes {
            let ls: Vec<Label> = labels.iter().filter(|l| l.class_id == c).copied().collect();
            let ds: Vec<Detection> = dets.iter().filter(|d| d.class_id == c).copied().collect();
            // published detections already passed the daemon's thresholds
            let counts = match_counts(&ls, &ds, 0.0, 0.5);
            self.truth.entry(c).or_default().add(counts);
            if let Some(cond) = condition {
                let per = self.truth_by_condition.entry(cond).or_default();
                per.entry(c).or_default().add(counts);
            }
        }
    }
}

/// Recall and precision at IoU 0.5 against the source's ground truth.
#[derive(serde::Serialize, Clone, Debug)]
pub struct Accuracy {
    pub labels: usize,
    pub true_positives: usize,
    pub false_positives: usize,
    pub recall: f64,
    pub precision: f64,
    /// Per model label: recall and precision.
    pub by_label: BTreeMap<String, LabelAccuracy>,
}

#[derive(serde::Serialize, Clone, Debug)]
pub struct LabelAccuracy {
    pub labels: usize,
    pub recall: f64,
    pub precision: f64,
}

impl Accuracy {
    fn new(per_class: &BTreeMap<usize, MatchCounts>, names: &[String]) -> Self {
        let mut all = MatchCounts::default();
        for c in per_class.values() {
            all.add(*c);
        }
        let by_label = names
            .iter()
            .enumerate()
            .map(|(i, n)| {
                let c = per_class.get(&i).copied().unwrap_or_default();
                let acc = LabelAccuracy {
                    labels: c.labels,
                    recall: c.recall(),
                    precision: c.precision(),
                };
                (n.clone(), acc)
            })
            .collect();
        Self {
            labels: all.labels,
            true_positives: all.tp,
            false_positives: all.fp,
            recall: all.recall(),
            precision: all.precision(),
            by_label,
        }
    }
}

/// The condition of each frame of the configured source, when known (the
/// synthetic camera renders day, night and fog scenes in a fixed cycle).
pub fn condition_map(cfg: &Config) -> Result<Option<SyntheticSource>> {
    Ok(match cfg.source.source_spec()? {
        SourceSpec::Synthetic => Some(SyntheticSource::new(&cfg.source)?),
        _ => None,
    })
}

#[derive(serde::Serialize, Clone, Debug)]
pub struct SnapshotRecord {
    pub path: PathBuf,
    pub frame: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub condition: Option<Condition>,
    pub detections: usize,
}

/// Detections of one group of frames.
#[derive(serde::Serialize, Clone, Debug)]
pub struct DetectionCounts {
    pub frames: u64,
    pub detections: u64,
    pub per_frame: f64,
    /// Every label of the model, zeros included.
    pub by_label: BTreeMap<String, u64>,
    /// Against the source's ground truth (the synthetic camera's boxes).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub accuracy: Option<Accuracy>,
}

impl DetectionCounts {
    fn new(frames: u64, counts: &BTreeMap<String, u64>, names: &[String]) -> Self {
        let by_label: BTreeMap<String, u64> = names
            .iter()
            .map(|n| (n.clone(), counts.get(n).copied().unwrap_or(0)))
            .collect();
        let detections: u64 = counts.values().sum();
        Self {
            frames,
            detections,
            per_frame: if frames > 0 {
                detections as f64 / frames as f64
            } else {
                0.0
            },
            by_label,
            accuracy: None,
        }
    }

    fn with_accuracy(
        mut self,
        truth: Option<&BTreeMap<usize, MatchCounts>>,
        names: &[String],
    ) -> Self {
        self.accuracy = truth.map(|t| Accuracy::new(t, names));
        self
    }
}

/// Percentiles of a stage's time, milliseconds.
#[derive(serde::Serialize, Clone, Copy, Debug, Default)]
pub struct Percentiles {
    pub p50: f64,
    pub p95: f64,
}

impl Percentiles {
    fn of(h: &Histogram) -> Self {
        let ms = |p| h.recent_percentile(p).unwrap_or(0.0) * 1e3;
        Self {
            p50: ms(50.0),
            p95: ms(95.0),
        }
    }
}

/// What a run did: `--summary`'s JSON and the demo's printout.
#[derive(serde::Serialize, Clone, Debug)]
pub struct Report {
    pub model: PathBuf,
    /// Model input `[height, width]`.
    pub imgsz: [u32; 2],
    /// The model's class names, in class-id order.
    pub classes: Vec<String>,
    pub threads: usize,
    pub source: String,
    pub frames: u64,
    pub frames_captured: u64,
    pub frames_dropped: u64,
    pub frames_corrupt: u64,
    pub capture_timeouts: u64,
    pub camera_reconnects: u64,
    pub elapsed_s: f64,
    /// Processed frames per second over the whole run (model load excluded).
    pub fps: f64,
    /// Capture to published (what `irdistill_latency_seconds` measures).
    pub latency_ms: Percentiles,
    pub inference_ms: Percentiles,
    pub convert_ms: Percentiles,
    pub detections: DetectionCounts,
    /// Per condition of the synthetic camera (empty for other sources).
    pub conditions: BTreeMap<Condition, DetectionCounts>,
    pub snapshots: Vec<SnapshotRecord>,
    pub peak_rss_bytes: Option<u64>,
}

impl Report {
    /// The report of a finished run of `cfg` with the model `info`.
    pub fn from_run(
        cfg: &Config,
        info: &ModelInfo,
        summary: &RunSummary,
        metrics: &Metrics,
        tally: Tally,
    ) -> Self {
        let names = &info.names;
        Report {
            model: info.path.clone(),
            imgsz: [info.input_h_px, info.input_w_px],
            classes: names.clone(),
            threads: info.threads,
            source: cfg.source.spec_redacted(),
            frames: summary.frames,
            frames_captured: summary.frames_captured,
            frames_dropped: summary.frames_dropped,
            frames_corrupt: summary.frames_corrupt,
            capture_timeouts: summary.capture_timeouts,
            camera_reconnects: summary.camera_reconnects,
            elapsed_s: summary.elapsed.as_secs_f64(),
            fps: summary.fps(),
            latency_ms: Percentiles::of(&metrics.latency),
            inference_ms: Percentiles::of(&metrics.inference),
            convert_ms: Percentiles::of(&metrics.convert),
            detections: DetectionCounts::new(tally.frames, &tally.detections, names).with_accuracy(
                (!tally.truth_by_condition.is_empty()).then_some(&tally.truth),
                names,
            ),
            conditions: tally
                .conditions
                .iter()
                .map(|(c, (frames, counts))| {
                    let d = DetectionCounts::new(*frames, counts, names);
                    (*c, d.with_accuracy(tally.truth_by_condition.get(c), names))
                })
                .collect(),
            snapshots: tally.snapshots,
            peak_rss_bytes: peak_resident_memory_bytes(),
        }
    }

    /// Writes the report as pretty JSON (with a final newline) to `path`.
    pub fn write(&self, path: &Path) -> Result<()> {
        let json = serde_json::to_string_pretty(self)?;
        std::fs::write(path, json + "\n").with_context(|| format!("writing {}", path.display()))
    }
}
