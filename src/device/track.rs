//! Object tracking across frames, ByteTrack-style: confident detections are
//! matched to the existing tracks first (IoU with each track's predicted
//! box, same class), then the weak ones keep otherwise unmatched tracks
//! alive (an object fading at night or in fog keeps its ID instead of
//! being counted again); a confident detection matching nothing starts a
//! new track; a track unseen for `max_age_frames` frames ends. IDs are
//! stable across frames so consumers can count objects, not detections.

use crate::shared::bbox::{BBox, Detection};

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TrackerConfig {
    /// Detections scoring at least this are matched first and may start
    /// new tracks; weaker ones (above the detection threshold) only extend
    /// existing tracks.
    pub high_score: f32,
    /// Minimum IoU between a detection and a track's predicted box.
    pub match_iou: f32,
    /// Frames a track survives without a detection.
    pub max_age_frames: u32,
}

impl Default for TrackerConfig {
    fn default() -> Self {
        // ultralytics' bytetrack.yaml: new-track threshold 0.25, buffer 30 frames
        Self {
            high_score: 0.25,
            match_iou: 0.3,
            max_age_frames: 30,
        }
    }
}

#[derive(Debug, Clone)]
struct Track {
    id: u64,
    class_id: usize,
    bbox: BBox,
    /// Per-frame motion of the box corners (smoothed), pixels.
    velocity: [f32; 4],
    missed_frames: u32,
}

impl Track {
    fn predicted(&self) -> BBox {
        let v = self.velocity;
        let m = (self.missed_frames + 1) as f32;
        BBox::new(
            self.bbox.x1 + v[0] * m,
            self.bbox.y1 + v[1] * m,
            self.bbox.x2 + v[2] * m,
            self.bbox.y2 + v[3] * m,
        )
    }

    fn update(&mut self, b: BBox) {
        let steps = (self.missed_frames + 1) as f32;
        let delta = [
            (b.x1 - self.bbox.x1) / steps,
            (b.y1 - self.bbox.y1) / steps,
            (b.x2 - self.bbox.x2) / steps,
            (b.y2 - self.bbox.y2) / steps,
        ];
        // Smoothed so one jittery box does not throw the prediction off.
        for (v, d) in self.velocity.iter_mut().zip(delta) {
            *v = 0.5 * *v + 0.5 * d;
        }
        self.bbox = b;
        self.missed_frames = 0;
    }
}

#[derive(Debug, Clone)]
pub struct Tracker {
    cfg: TrackerConfig,
    tracks: Vec<Track>,
    next_id: u64,
}

impl Tracker {
    /// The settings it runs with.
    pub fn config(&self) -> TrackerConfig {
        self.cfg
    }

    pub fn new(cfg: TrackerConfig) -> Self {
        Self {
            cfg,
            tracks: Vec::new(),
            next_id: 1,
        }
    }

    /// Tracks alive (seen within `max_age_frames`).
    pub fn active(&self) -> usize {
        self.tracks.len()
    }

    /// Associates one frame's detections; returns the track ID of each
    /// detection (`None` for a weak detection that matched no track).
    pub fn update(&mut self, dets: &[Detection]) -> Vec<Option<u64>> {
        let mut ids = vec![None; dets.len()];
        let predicted: Vec<BBox> = self.tracks.iter().map(Track::predicted).collect();
        let mut track_taken = vec![false; self.tracks.len()];
        let high: Vec<usize> = (0..dets.len())
            .filter(|&i| dets[i].score >= self.cfg.high_score)
            .collect();
        let low: Vec<usize> = (0..dets.len())
            .filter(|&i| dets[i].score < self.cfg.high_score)
            .collect();
        for group in [&high, &low] {
            // Greedy by IoU, best pairs first (deterministic; close to the
            // Hungarian optimum for the sparse overlaps of real scenes).
            let mut pairs: Vec<(f32, usize, usize)> = Vec::new();
            for &d in group.iter() {
                for (t, tb) in predicted.iter().enumerate() {
                    if track_taken[t] || self.tracks[t].class_id != dets[d].class_id {
                        continue;
                    }
                    let iou = tb.iou(&dets[d].bbox);
                    if iou >= self.cfg.match_iou {
                        pairs.push((iou, d, t));
                    }
                }
            }
            pairs.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
            for (_, d, t) in pairs {
                if track_taken[t] || ids[d].is_some() {
                    continue;
                }
                track_taken[t] = true;
                self.tracks[t].update(dets[d].bbox);
                ids[d] = Some(self.tracks[t].id);
            }
        }
        for (t, taken) in track_taken.iter().enumerate() {
            if !taken {
                self.tracks[t].missed_frames += 1;
            }
        }
        let max_age = self.cfg.max_age_frames;
        self.tracks.retain(|t| t.missed_frames <= max_age);
        for &d in &high {
            if ids[d].is_none() {
                let id = self.next_id;
                self.next_id += 1;
                self.tracks.push(Track {
                    id,
                    class_id: dets[d].class_id,
                    bbox: dets[d].bbox,
                    velocity: [0.0; 4],
                    missed_frames: 0,
                });
                ids[d] = Some(id);
            }
        }
        ids
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn det(class_id: usize, score: f32, x: f32, y: f32) -> Detection {
        Detection {
            class_id,
            score,
            bbox: BBox::new(x, y, x + 20.0, y + 40.0),
        }
    }

    #[test]
    fn moving_objects_keep_their_ids() {
        let mut t = Tracker::new(TrackerConfig::default());
        // two persons walking towards each other, a car standing still
        let mut seen: Vec<Vec<Option<u64>>> = Vec::new();
        for f in 0..20 {
            let x = f as f32 * 4.0;
            let dets = [
                det(0, 0.9, 10.0 + x, 100.0),
                det(0, 0.8, 200.0 - x, 100.0),
                det(1, 0.7, 300.0, 10.0),
            ];
            seen.push(t.update(&dets));
        }
        let first = &seen[0];
        assert_eq!(first, &[Some(1), Some(2), Some(3)]);
        assert!(seen.iter().all(|ids| ids == first), "{seen:?}");
        assert_eq!(t.active(), 3);
    }

    #[test]
    fn weak_detections_extend_but_do_not_start_tracks() {
        let mut t = Tracker::new(TrackerConfig::default());
        assert_eq!(t.update(&[det(0, 0.9, 0.0, 0.0)]), [Some(1)]);
        // the object fades: weak score, still the same track
        assert_eq!(t.update(&[det(0, 0.15, 2.0, 0.0)]), [Some(1)]);
        // a weak detection elsewhere starts nothing
        assert_eq!(t.update(&[det(0, 0.15, 500.0, 0.0)]), [None]);
        // another class at the same place is another object
        assert_eq!(t.update(&[det(1, 0.9, 4.0, 0.0)]), [Some(2)]);
    }

    #[test]
    fn tracks_survive_short_gaps_and_expire() {
        let cfg = TrackerConfig {
            max_age_frames: 3,
            ..Default::default()
        };
        let mut t = Tracker::new(cfg);
        assert_eq!(t.update(&[det(0, 0.9, 0.0, 0.0)]), [Some(1)]);
        for _ in 0..3 {
            t.update(&[]);
        }
        assert_eq!(t.update(&[det(0, 0.9, 0.0, 0.0)]), [Some(1)]);
        for _ in 0..4 {
            t.update(&[]);
        }
        assert_eq!(t.active(), 0);
        assert_eq!(t.update(&[det(0, 0.9, 0.0, 0.0)]), [Some(2)]);
    }
}
