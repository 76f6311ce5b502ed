//! Object events: one message when an object arrives, a few while it
//! stays (only when something meaningful changes), one when it leaves;
//! instead of the per-frame detections an automation would have to
//! parse. Built on the tracker's IDs:
//!
//! - `new`: a track has been seen in `min_frames` frames;
//! - `update`: it entered or left a zone, or its best score rose by
//!   `score_step`; at most one per `update_interval_ms` per track (a
//!   change waits for the interval, it is not lost);
//! - `end`: the track has not been seen for `end_after_ms` of capture
//!   time (or the daemon stops). An object never announced ends silently.
//!
//! Times are the frames' capture times, so a replayed folder gives the
//! same events as a live camera. The payload (see [`ObjectEvent`]) goes to
//! MQTT `<prefix>/<camera>/events` and to the JSON lines output; it is
//! modelled on Frigate's `frigate/events`, flattened to the object's
//! current state (Frigate nests it under `after`).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, SystemTime};

use anyhow::{ensure, Result};
use serde::{Deserialize, Serialize};

use crate::device::postprocess::Zone;
use crate::device::publish::{rfc3339_utc, DetectionJson, FrameMessage};

/// The `[events]` table.
#[derive(Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields, default)]
pub struct EventsConfig {
    /// Default: on when tracking is on (events need track IDs).
    pub enabled: Option<bool>,
    /// Frames a track must be seen in before `new` (one-frame flickers
    /// are not announced).
    pub min_frames: u32,
    /// At most one `update` per track per this many milliseconds.
    pub update_interval_ms: u64,
    /// A track unseen for this long (capture time) has ended.
    pub end_after_ms: u64,
    /// The best score must rise by this much for an `update`.
    pub score_step: f32,
}

impl Default for EventsConfig {
    fn default() -> Self {
        Self {
            enabled: None,
            min_frames: 2,
            update_interval_ms: 1000,
            end_after_ms: 3000,
            score_step: 0.05,
        }
    }
}

impl EventsConfig {
    /// `tracking`: whether `[track] enabled` is on.
    pub fn validate(&self, tracking: bool) -> Result<()> {
        ensure!(
            self.enabled != Some(true) || tracking,
            "events.enabled = true needs track.enabled = true (events follow track IDs)"
        );
        ensure!(
            (1..=1000).contains(&self.min_frames),
            "events.min_frames must be 1..=1000, got {}",
            self.min_frames
        );
        // shorter would end objects between two frames of a slow camera
        ensure!(
            (500..=86_400_000).contains(&self.end_after_ms),
            "events.end_after_ms must be 500..=86400000, got {}",
            self.end_after_ms
        );
        ensure!(
            self.update_interval_ms <= 86_400_000,
            "events.update_interval_ms must be at most 86400000, got {}",
            self.update_interval_ms
        );
        ensure!(
            self.score_step.is_finite() && self.score_step > 0.0 && self.score_step <= 1.0,
            "events.score_step must be above 0 and at most 1, got {}",
            self.score_step
        );
        Ok(())
    }

    /// Whether events are produced, given whether tracking is on.
    pub fn active(&self, tracking: bool) -> bool {
        tracking && self.enabled.unwrap_or(true)
    }
}

/// `new`, `update` or `end`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EventType {
    New,
    Update,
    End,
}

/// One object event, as published (MQTT `<prefix>/<camera>/events`, a
/// JSON line). Boxes are in source-frame pixels, times RFC 3339 UTC.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ObjectEvent {
    #[serde(rename = "type")]
    pub kind: EventType,
    pub camera: String,
    /// Unique per object and daemon run: `<camera>-<track>-<start ms>`.
    pub id: String,
    pub track_id: u64,
    pub label: String,
    pub class_id: usize,
    /// The score in the frame last seen.
    pub score: f32,
    /// The best score so far.
    pub best_score: f32,
    /// Where it was last seen, `[x1, y1, x2, y2]`.
    #[serde(rename = "box")]
    pub bbox: [f32; 4],
    /// Named zones its foot point is in now (none at `end`: it left).
    pub zones: Vec<String>,
    /// Every zone it has been in, in order of entry.
    pub entered_zones: Vec<String>,
    /// First frame it was seen in.
    pub start_time: String,
    /// When it was last seen.
    pub last_seen: String,
    /// When it was last seen (`end` only: it is gone).
    pub end_time: Option<String>,
    /// The frame last seen (the source's sequence number).
    pub frame: u64,
    /// Frames it was seen in.
    pub frames_seen: u64,
    /// The saved snapshot where it scored best, if one was saved while it
    /// was seen (the snapshot folder may rotate it away later).
    pub snapshot: Option<String>,
}

/// What is known about one track.
#[derive(Debug, Clone)]
struct Object {
    label: String,
    class_id: usize,
    start: SystemTime,
    last_seen: SystemTime,
    last_frame: u64,
    frames_seen: u64,
    score: f32,
    best_score: f32,
    bbox: [f32; 4],
    zones: Vec<String>,
    entered_zones: Vec<String>,
    snapshot: Option<(String, f32)>,
    /// Set once `new` went out.
    announced: bool,
    /// When its last event went out.
    last_event: SystemTime,
    /// The zones and best score its last event carried.
    reported_zones: Vec<String>,
    reported_best: f32,
}

/// Turns a stream of frames into object events; see the module docs.
pub struct EventTracker {
    cfg: EventsConfig,
    camera: String,
    zones: Vec<Zone>,
    objects: BTreeMap<u64, Object>,
}

impl EventTracker {
    /// `zones`: the configured zones (every mode: an exclude zone's
    /// objects are filtered out before they get here).
    pub fn new(cfg: EventsConfig, camera: &str, zones: Vec<Zone>) -> Self {
        Self {
            cfg,
            camera: camera.to_string(),
            zones,
            objects: BTreeMap::new(),
        }
    }

    /// New settings and zones (a reloaded configuration); the objects
    /// followed so far stay.
    pub fn reconfigure(&mut self, cfg: EventsConfig, zones: Vec<Zone>) {
        self.cfg = cfg;
        self.zones = zones;
    }

    /// Tracks being followed (announced or not).
    pub fn active(&self) -> usize {
        self.objects.len()
    }

    /// The events of one frame captured at `captured_at`; `snapshot`: the
    /// file saved for this frame, if any. Ended tracks come first.
    pub fn observe(
        &mut self,
        frame: &FrameMessage,
        captured_at: SystemTime,
        snapshot: Option<&Path>,
    ) -> Vec<ObjectEvent> {
        let mut events = self.expire(captured_at);
        let (w, h) = (frame.width.max(1) as f32, frame.height.max(1) as f32);
        for d in &frame.detections {
            let Some(Some(id)) = d.track_id else { continue };
            let zones = self.zones_of(d, w, h);
            let obj = self.objects.entry(id).or_insert_with(|| Object {
                label: d.label.clone(),
                class_id: d.class_id,
                start: captured_at,
                last_seen: captured_at,
                last_frame: frame.frame,
                frames_seen: 0,
                score: d.score,
                best_score: d.score,
                bbox: d.bbox,
                zones: Vec::new(),
                entered_zones: Vec::new(),
                snapshot: None,
                announced: false,
                last_event: captured_at,
                reported_zones: Vec::new(),
                reported_best: d.score,
            });
            obj.last_seen = captured_at;
            obj.last_frame = frame.frame;
            obj.frames_seen += 1;
            obj.score = d.score;
            obj.best_score = obj.best_score.max(d.score);
            obj.bbox = d.bbox;
            for z in &zones {
                if !obj.entered_zones.contains(z) {
                    obj.entered_zones.push(z.clone());
                }
            }
            obj.zones = zones;
            if let Some(p) = snapshot {
                if obj.snapshot.as_ref().map_or(true, |(_, s)| d.score >= *s) {
                    obj.snapshot = Some((p.display().to_string(), d.score));
                }
            }
            if let Some(kind) = self.due(id, captured_at) {
                events.push(self.event(id, kind));
            }
        }
        events
    }

    /// `end` for every announced track (the daemon is stopping).
    pub fn finish(&mut self) -> Vec<ObjectEvent> {
        let ids: Vec<u64> = self.objects.keys().copied().collect();
        ids.into_iter().filter_map(|id| self.end(id)).collect()
    }

    /// Ends the tracks unseen for `end_after_ms` at `now`.
    fn expire(&mut self, now: SystemTime) -> Vec<ObjectEvent> {
        let after = Duration::from_millis(self.cfg.end_after_ms);
        let gone: Vec<u64> = self
            .objects
            .iter()
            .filter(|(_, o)| now.duration_since(o.last_seen).unwrap_or_default() >= after)
            .map(|(&id, _)| id)
            .collect();
        gone.into_iter().filter_map(|id| self.end(id)).collect()
    }

    /// Forgets track `id`; its `end` event if it was announced.
    fn end(&mut self, id: u64) -> Option<ObjectEvent> {
        let announced = self.objects.get(&id)?.announced;
        let event = announced.then(|| {
            let mut e = self.event(id, EventType::End);
            e.end_time = Some(e.last_seen.clone());
            e.zones.clear();
            e
        });
        self.objects.remove(&id);
        event
    }

    /// The event track `id` is due now, if any (and records it as sent).
    fn due(&mut self, id: u64, now: SystemTime) -> Option<EventType> {
        let (min_frames, interval, step) = (
            u64::from(self.cfg.min_frames),
            Duration::from_millis(self.cfg.update_interval_ms),
            self.cfg.score_step,
        );
        let o = self.objects.get_mut(&id)?;
        let kind = if !o.announced {
            (o.frames_seen >= min_frames).then_some(EventType::New)?
        } else {
            let changed = o.zones != o.reported_zones || o.best_score >= o.reported_best + step;
            // (a zone entered and left again within the interval is no
            // change: the object is where its last event said)
            let waited = now.duration_since(o.last_event).unwrap_or_default() >= interval;
            (changed && waited).then_some(EventType::Update)?
        };
        o.announced = true;
        o.last_event = now;
        o.reported_zones = o.zones.clone();
        o.reported_best = o.best_score;
        Some(kind)
    }

    fn event(&self, id: u64, kind: EventType) -> ObjectEvent {
        let o = &self.objects[&id];
        let start_ms = o
            .start
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis();
        ObjectEvent {
            kind,
            camera: self.camera.clone(),
            id: format!("{}-{id}-{start_ms}", self.camera),
            track_id: id,
            label: o.label.clone(),
            class_id: o.class_id,
            score: o.score,
            best_score: o.best_score,
            bbox: o.bbox,
            zones: o.zones.clone(),
            entered_zones: o.entered_zones.clone(),
            start_time: rfc3339_utc(o.start),
            last_seen: rfc3339_utc(o.last_seen),
            end_time: None,
            frame: o.last_frame,
            frames_seen: o.frames_seen,
            snapshot: o.snapshot.as_ref().map(|(p, _)| p.clone()),
        }
    }

    /// The names of the zones that hold the detection's foot point.
    fn zones_of(&self, d: &DetectionJson, w: f32, h: f32) -> Vec<String> {
        let [x1, _, x2, y2] = d.bbox;
        let (fx, fy) = ((x1 + x2) / 2.0 / w, y2 / h);
        self.zones
            .iter()
            .filter(|z| z.contains(fx, fy))
            .map(|z| z.name.clone())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::postprocess::ZoneMode;
    use crate::shared::bbox::BBox;

    const T0_MS: u64 = 1_700_000_000_000;

    fn at(ms: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_millis(T0_MS + ms)
    }

    /// A 100×100 frame with one tracked person whose box spans `x1..x1+10`,
    /// feet at y = 90.
    fn frame(seq: u64, objects: &[(Option<u64>, f32, f32)]) -> FrameMessage {
        let detections = objects
            .iter()
            .map(|&(track, score, x1)| {
                let mut d =
                    DetectionJson::new(0, "person", score, &BBox::new(x1, 50.0, x1 + 10.0, 90.0));
                d.track_id = Some(track);
                d
            })
            .collect();
        FrameMessage {
            camera: "yard".into(),
            frame: seq,
            timestamp: String::new(),
            width: 100,
            height: 100,
            detections,
        }
    }

    /// The right half of the frame.
    fn door() -> Zone {
        Zone {
            name: "door".into(),
            mode: ZoneMode::Include,
            points: vec![(0.5, 0.0), (1.0, 0.0), (1.0, 1.0), (0.5, 1.0)],
        }
    }

    fn kinds(events: &[ObjectEvent]) -> Vec<(EventType, u64)> {
        events.iter().map(|e| (e.kind, e.track_id)).collect()
    }

    #[test]
    fn new_after_min_frames_then_end_after_the_timeout() {
        let mut t = EventTracker::new(EventsConfig::default(), "yard", vec![door()]);
        assert!(t
            .observe(&frame(1, &[(Some(7), 0.6, 10.0)]), at(0), None)
            .is_empty());
        let e = t.observe(&frame(2, &[(Some(7), 0.7, 12.0)]), at(100), None);
        assert_eq!(kinds(&e), [(EventType::New, 7)]);
        let new = &e[0];
        assert_eq!(
            (new.label.as_str(), new.frames_seen, new.frame),
            ("person", 2, 2)
        );
        assert_eq!((new.score, new.best_score), (0.7, 0.7));
        assert_eq!(new.bbox, [12.0, 50.0, 22.0, 90.0]);
        assert!(new.zones.is_empty() && new.end_time.is_none());
        assert_eq!(new.id, format!("yard-7-{T0_MS}"));
        // unseen, but not yet for end_after_ms (3 s)
        assert!(t.observe(&frame(3, &[]), at(3000), None).is_empty());
        let e = t.observe(&frame(4, &[]), at(3100), None);
        assert_eq!(kinds(&e), [(EventType::End, 7)]);
        assert_eq!(e[0].end_time.as_deref(), Some(e[0].last_seen.as_str()));
        assert_eq!(e[0].last_seen, rfc3339_utc(at(100)));
        assert_eq!(t.active(), 0);
    }

    #[test]
    fn a_one_frame_flicker_and_untracked_boxes_make_no_events() {
        let mut t = EventTracker::new(EventsConfig::default(), "yard", vec![]);
        let f = frame(1, &[(Some(3), 0.9, 10.0), (None, 0.9, 40.0)]);
        assert!(t.observe(&f, at(0), None).is_empty());
        assert!(t.observe(&frame(2, &[]), at(5000), None).is_empty());
        assert!(t.finish().is_empty());
    }

    #[test]
    fn updates_on_zone_changes_and_better_scores_at_most_once_a_second() {
        let mut t = EventTracker::new(EventsConfig::default(), "yard", vec![door()]);
        let mut all = Vec::new();
        // 30 frames at 10 fps walking right, the score rising every frame;
        // it crosses into the door zone (foot x ≥ 50) at frame 9
        for i in 0..30u64 {
            let x1 = 5.0 + 5.0 * i as f32;
            let score = (0.5 + 0.015 * i as f32).min(0.95);
            let snap = (i == 20).then(|| Path::new("/snaps/snap-20.jpg"));
            all.extend(t.observe(
                &frame(i, &[(Some(1), score, x1.min(85.0))]),
                at(100 * i),
                snap,
            ));
        }
        let times: Vec<(EventType, u64)> = all.iter().map(|e| (e.kind, e.frame)).collect();
        assert_eq!(times[0], (EventType::New, 1));
        let updates: Vec<&ObjectEvent> =
            all.iter().filter(|e| e.kind == EventType::Update).collect();
        assert!(!updates.is_empty(), "{times:?}");
        // never two events of a track within a second
        for w in all.windows(2) {
            assert!(w[1].frame - w[0].frame >= 10, "{times:?}");
        }
        let entered = updates
            .iter()
            .find(|e| e.zones == ["door"])
            .expect("a zone update");
        assert_eq!(entered.entered_zones, ["door"]);
        // the snapshot of frame 20 is the best one seen while it scored best
        let last = all.last().unwrap();
        assert_eq!(last.snapshot.as_deref(), Some("/snaps/snap-20.jpg"));
        let end = t.finish();
        assert_eq!(kinds(&end), [(EventType::End, 1)]);
        assert_eq!(end[0].entered_zones, ["door"]);
        assert!(end[0].zones.is_empty());
        assert!(
            (end[0].best_score - 0.935).abs() < 1e-4,
            "{}",
            end[0].best_score
        );
    }

    #[test]
    fn a_steady_object_gets_no_updates() {
        let mut t = EventTracker::new(EventsConfig::default(), "yard", vec![door()]);
        let mut all = Vec::new();
        for i in 0..50u64 {
            all.extend(t.observe(&frame(i, &[(Some(2), 0.8, 10.0)]), at(100 * i), None));
        }
        assert_eq!(kinds(&all), [(EventType::New, 2)]);
    }

    #[test]
    fn config_checks_name_the_field() {
        let ok = EventsConfig::default();
        ok.validate(true).unwrap();
        assert!(ok.active(true) && !ok.active(false));
        let on = EventsConfig {
            enabled: Some(true),
            ..EventsConfig::default()
        };
        assert!(on
            .validate(false)
            .unwrap_err()
            .to_string()
            .contains("track.enabled"));
        let with = |change: fn(&mut EventsConfig)| {
            let mut c = EventsConfig::default();
            change(&mut c);
            c
        };
        for (bad, field) in [
            (with(|c| c.min_frames = 0), "events.min_frames"),
            (with(|c| c.end_after_ms = 0), "events.end_after_ms"),
            (with(|c| c.end_after_ms = 100), "events.end_after_ms"),
            (with(|c| c.score_step = 1.5), "events.score_step"),
            (with(|c| c.score_step = 0.0), "events.score_step"),
        ] {
            assert!(bad.validate(true).unwrap_err().to_string().contains(field));
        }
    }
}
