//! The daemon's counters and histograms, shared lock-free between the
//! pipeline stages and rendered in Prometheus' text format for `/metrics`.
//! Hand-rolled (a few atomics) rather than a metrics crate: the set is
//! fixed and small, and the edge build stays lean.

use std::fmt::{Display, Write as _};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A Prometheus histogram of seconds with fixed buckets.
pub struct Histogram {
    bounds_s: &'static [f64],
    /// Non-cumulative counts per bucket, plus one for +Inf.
    counts: Vec<AtomicU64>,
    sum_ns: AtomicU64,
    /// Recent observations (for the bench's percentiles), a ring.
    recent: Mutex<(Vec<f32>, usize)>,
}

/// Bucket bounds for per-frame stage times.
pub const STAGE_BUCKETS_S: &[f64] = &[
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.035, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5,
];

const RECENT: usize = 4096;

impl Histogram {
    pub fn new(bounds_s: &'static [f64]) -> Self {
        Self {
            bounds_s,
            counts: (0..=bounds_s.len()).map(|_| AtomicU64::new(0)).collect(),
            sum_ns: AtomicU64::new(0),
            recent: Mutex::new((Vec::with_capacity(RECENT), 0)),
        }
    }

    pub fn observe(&self, d: Duration) {
        let s = d.as_secs_f64();
        let k = self
            .bounds_s
            .iter()
            .position(|b| s <= *b)
            .unwrap_or(self.bounds_s.len());
        self.counts[k].fetch_add(1, Relaxed);
        self.sum_ns.fetch_add(d.as_nanos() as u64, Relaxed);
        let mut r = self.recent.lock().expect("histogram ring");
        let (ring, next) = &mut *r;
        if ring.len() < RECENT {
            ring.push(s as f32);
        } else {
            ring[*next] = s as f32;
            *next = (*next + 1) % RECENT;
        }
    }

    pub fn count(&self) -> u64 {
        self.counts.iter().map(|c| c.load(Relaxed)).sum()
    }

    /// Percentile `p` (0..=100) of the last observations, seconds.
    pub fn recent_percentile(&self, p: f64) -> Option<f64> {
        let mut v = self.recent.lock().expect("histogram ring").0.clone();
        if v.is_empty() {
            return None;
        }
        v.sort_by(f32::total_cmp);
        let i = ((p / 100.0) * (v.len() - 1) as f64).round() as usize;
        Some(v[i.min(v.len() - 1)] as f64)
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        let mut cumulative = 0;
        for (b, c) in self.bounds_s.iter().zip(&self.counts) {
            cumulative += c.load(Relaxed);
            let _ = writeln!(out, "{name}_bucket{{le=\"{b}\"}} {cumulative}");
        }
        cumulative += self.counts[self.bounds_s.len()].load(Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {cumulative}");
        let _ = writeln!(out, "{name}_sum {}", self.sum_ns.load(Relaxed) as f64 / 1e9);
        let _ = writeln!(out, "{name}_count {cumulative}");
    }
}

/// Everything `/metrics` reports. Stages update it; the HTTP thread reads.
pub struct Metrics {
    started: Instant,
    pub frames_captured: AtomicU64,
    /// Frames fully processed (published).
    pub frames: AtomicU64,
    pub frames_dropped: AtomicU64,
    pub frames_corrupt: AtomicU64,
    pub capture_timeouts: AtomicU64,
    pub camera_reconnects: AtomicU64,
    pub camera_connected: AtomicU64,
    pub snapshots: AtomicU64,
    pub inference_errors: AtomicU64,
    /// Detections per class id.
    pub detections: Vec<AtomicU64>,
    pub tracks_active: AtomicU64,
    /// Milliseconds since `started` of the last processed frame (0 = none yet).
    last_frame_ms: AtomicU64,
    pub convert: Histogram,
    pub inference: Histogram,
    pub postprocess: Histogram,
    /// Capture → published.
    pub latency: Histogram,
    labels: Vec<String>,
    info: Vec<(String, String)>,
    /// `model.threads = "auto"`'s timings at load: (threads, ms per run).
    thread_timings_ms: Vec<(usize, f64)>,
    /// MQTT publisher statistics, copied from it by the publish stage:
    /// published, dropped, connected, reconnects (None: MQTT off).
    mqtt: Mutex<Option<[u64; 4]>>,
}

impl Metrics {
    pub fn new(labels: Vec<String>, info: Vec<(String, String)>) -> Self {
        Self {
            started: Instant::now(),
            frames_captured: AtomicU64::new(0),
            frames: AtomicU64::new(0),
            frames_dropped: AtomicU64::new(0),
            frames_corrupt: AtomicU64::new(0),
            capture_timeouts: AtomicU64::new(0),
            camera_reconnects: AtomicU64::new(0),
            camera_connected: AtomicU64::new(0),
            snapshots: AtomicU64::new(0),
            inference_errors: AtomicU64::new(0),
            detections: labels.iter().map(|_| AtomicU64::new(0)).collect(),
            tracks_active: AtomicU64::new(0),
            last_frame_ms: AtomicU64::new(0),
            convert: Histogram::new(STAGE_BUCKETS_S),
            inference: Histogram::new(STAGE_BUCKETS_S),
            postprocess: Histogram::new(STAGE_BUCKETS_S),
            latency: Histogram::new(STAGE_BUCKETS_S),
            labels,
            info,
            thread_timings_ms: Vec::new(),
            mqtt: Mutex::new(None),
        }
    }

    /// With the thread counts `auto` timed when the model loaded.
    pub fn with_thread_timings(mut self, timings_ms: &[(usize, f64)]) -> Self {
        self.thread_timings_ms = timings_ms.to_vec();
        self
    }

    pub fn set_mqtt(&self, published: u64, dropped: u64, connected: u64, reconnects: u64) {
        *self.mqtt.lock().expect("mqtt stats") = Some([published, dropped, connected, reconnects]);
    }

    pub fn frame_done(&self) {
        self.frames.fetch_add(1, Relaxed);
        let ms = self.started.elapsed().as_millis() as u64;
        self.last_frame_ms.store(ms.max(1), Relaxed);
    }

    /// Time since the last processed frame (since start if none yet).
    pub fn last_frame_age(&self) -> Duration {
        let last = self.last_frame_ms.load(Relaxed);
        self.started
            .elapsed()
            .saturating_sub(Duration::from_millis(last))
    }

    pub fn any_frame(&self) -> bool {
        self.last_frame_ms.load(Relaxed) > 0
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(4096);
        self.render_frame_counters(&mut out);
        self.render_detections(&mut out);
        self.render_gauges(&mut out);
        self.render_stage_histograms(&mut out);
        self.render_info(&mut out);
        self.render_thread_timings(&mut out);
        self.render_mqtt(&mut out);
        out
    }

    /// What happened to frames, snapshots and inference runs.
    fn render_frame_counters(&self, out: &mut String) {
        let mut counter =
            |name: &str, help: &str, v: u64| write_metric(out, name, "counter", help, v);
        counter(
            "irdistill_frames_captured_total",
            "Frames delivered by the source.",
            self.frames_captured.load(Relaxed),
        );
        counter(
            "irdistill_frames_total",
            "Frames processed (inference run and results published).",
            self.frames.load(Relaxed),
        );
        counter(
            "irdistill_frames_dropped_total",
            "Frames dropped because inference fell behind (oldest first).",
            self.frames_dropped.load(Relaxed),
        );
        counter(
            "irdistill_frames_corrupt_total",
            "Corrupt or truncated frames skipped.",
            self.frames_corrupt.load(Relaxed),
        );
        counter(
            "irdistill_capture_timeouts_total",
            "Reads that got no frame within the source timeout (stalls).",
            self.capture_timeouts.load(Relaxed),
        );
        counter(
            "irdistill_camera_reconnects_total",
            "Times the camera was reopened after being lost.",
            self.camera_reconnects.load(Relaxed),
        );
        counter(
            "irdistill_snapshots_total",
            "Annotated snapshots written.",
            self.snapshots.load(Relaxed),
        );
        counter(
            "irdistill_inference_errors_total",
            "Frames whose inference failed.",
            self.inference_errors.load(Relaxed),
        );
    }

    /// One counter family, a sample per label.
    fn render_detections(&self, out: &mut String) {
        let _ = writeln!(
            out,
            "# HELP irdistill_detections_total Detections published, per label.\n# TYPE irdistill_detections_total counter"
        );
        for (label, c) in self.labels.iter().zip(&self.detections) {
            let _ = writeln!(
                out,
                "irdistill_detections_total{{label=\"{}\"}} {}",
                escape_label(label),
                c.load(Relaxed)
            );
        }
    }

    /// The state right now: camera, tracks, freshness, uptime, memory.
    fn render_gauges(&self, out: &mut String) {
        let mut gauge = |name: &str, help: &str, v: f64| write_metric(out, name, "gauge", help, v);
        gauge(
            "irdistill_camera_connected",
            "1 while the source is open and delivering.",
            self.camera_connected.load(Relaxed) as f64,
        );
        gauge(
            "irdistill_tracks_active",
            "Objects currently tracked.",
            self.tracks_active.load(Relaxed) as f64,
        );
        gauge(
            "irdistill_last_frame_age_seconds",
            "Seconds since the last processed frame.",
            self.last_frame_age().as_secs_f64(),
        );
        gauge(
            "irdistill_uptime_seconds",
            "Seconds since the daemon started.",
            self.started.elapsed().as_secs_f64(),
        );
        if let Some(rss) = resident_memory_bytes() {
            gauge(
                "process_resident_memory_bytes",
                "Resident memory of the daemon.",
                rss as f64,
            );
        }
    }

    /// Per-frame time of each stage, and capture → published.
    fn render_stage_histograms(&self, out: &mut String) {
        self.convert.render(
            out,
            "irdistill_convert_seconds",
            "Pixel conversion and letterbox per frame.",
        );
        self.inference.render(
            out,
            "irdistill_inference_seconds",
            "Model inference per frame.",
        );
        self.postprocess.render(
            out,
            "irdistill_postprocess_seconds",
            "Thresholds, NMS and tracking per frame.",
        );
        self.latency.render(
            out,
            "irdistill_latency_seconds",
            "From capture to published result.",
        );
    }

    /// A constant 1 whose labels are the build and model facts.
    fn render_info(&self, out: &mut String) {
        let info = self
            .info
            .iter()
            .map(|(k, v)| format!("{k}=\"{}\"", escape_label(v)))
            .collect::<Vec<_>>()
            .join(",");
        let _ = writeln!(
            out,
            "# HELP irdistill_info Build and model.\n# TYPE irdistill_info gauge\nirdistill_info{{{info}}} 1"
        );
    }

    /// Median model run time per thread count timed at load (`auto`).
    fn render_thread_timings(&self, out: &mut String) {
        let timings = &self.thread_timings_ms;
        if timings.is_empty() {
            return;
        }
        let name = "irdistill_model_run_seconds_at_load";
        let _ = writeln!(
            out,
            "# HELP {name} Median model run per thread count, timed when the model loaded (model.threads = auto).\n# TYPE {name} gauge"
        );
        for (threads, ms) in timings.iter() {
            let _ = writeln!(out, "{name}{{threads=\"{threads}\"}} {}", ms / 1e3);
        }
    }

    /// The publisher's statistics; nothing when MQTT is off.
    fn render_mqtt(&self, out: &mut String) {
        let Some([published, dropped, connected, reconnects]) =
            *self.mqtt.lock().expect("mqtt stats")
        else {
            return;
        };
        write_metric(
            out,
            "irdistill_mqtt_published_total",
            "counter",
            "MQTT messages handed to the broker connection.",
            published,
        );
        write_metric(
            out,
            "irdistill_mqtt_dropped_total",
            "counter",
            "MQTT messages dropped (broker down, queue full).",
            dropped,
        );
        write_metric(
            out,
            "irdistill_mqtt_connected",
            "gauge",
            "1 while connected to the broker.",
            connected,
        );
        write_metric(
            out,
            "irdistill_mqtt_reconnects_total",
            "counter",
            "MQTT reconnections.",
            reconnects,
        );
    }
}

/// One unlabelled sample with its HELP and TYPE lines.
fn write_metric(out: &mut String, name: &str, kind: &str, help: &str, value: impl Display) {
    let _ = writeln!(
        out,
        "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
    );
}

fn escape_label(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Current resident set size, from /proc (Linux).
pub fn resident_memory_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

/// Peak resident set size (VmHWM), from /proc (Linux).
pub fn peak_resident_memory_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_thread_timings_are_exposed() {
        let m = Metrics::new(vec!["person".into()], vec![]);
        assert!(!m.render().contains("irdistill_model_run_seconds_at_load"));
        let m = m.with_thread_timings(&[(1, 4.0), (2, 5.5)]);
        let text = m.render();
        assert!(
            text.contains("irdistill_model_run_seconds_at_load{threads=\"1\"} 0.004\n"),
            "{text}"
        );
        assert!(
            text.contains("irdistill_model_run_seconds_at_load{threads=\"2\"} 0.0055\n"),
            "{text}"
        );
    }

    #[test]
    fn histogram_buckets_are_cumulative() {
        let m = Metrics::new(vec!["person".into(), "c\"ar".into()], vec![]);
        m.inference.observe(Duration::from_millis(3));
        m.inference.observe(Duration::from_millis(30));
        m.inference.observe(Duration::from_secs(10));
        m.detections[1].fetch_add(2, Relaxed);
        let text = m.render();
        assert!(
            text.contains("irdistill_inference_seconds_bucket{le=\"0.005\"} 1\n"),
            "{text}"
        );
        assert!(text.contains("irdistill_inference_seconds_bucket{le=\"0.035\"} 2\n"));
        assert!(text.contains("irdistill_inference_seconds_bucket{le=\"+Inf\"} 3\n"));
        assert!(text.contains("irdistill_inference_seconds_count 3\n"));
        assert!(text.contains("irdistill_detections_total{label=\"c\\\"ar\"} 2\n"));
        assert_eq!(m.inference.recent_percentile(50.0), Some(0.03f32 as f64));
    }

    #[test]
    fn each_family_has_help_type_and_sample_lines() {
        let m = Metrics::new(vec![], vec![("model".into(), "m.onnx".into())]);
        m.frames.fetch_add(3, Relaxed);
        let text = m.render();
        assert!(text.contains(
            "# HELP irdistill_frames_total Frames processed (inference run and results published).\n# TYPE irdistill_frames_total counter\nirdistill_frames_total 3\n"
        ));
        assert!(text.contains("# TYPE irdistill_tracks_active gauge\nirdistill_tracks_active 0\n"));
        assert!(text.contains("irdistill_info{model=\"m.onnx\"} 1\n"));
        assert!(!text.contains("irdistill_mqtt_"));
        m.set_mqtt(5, 1, 1, 2);
        let text = m.render();
        assert!(text.contains(
            "# HELP irdistill_mqtt_connected 1 while connected to the broker.\n# TYPE irdistill_mqtt_connected gauge\nirdistill_mqtt_connected 1\n"
        ));
        assert!(
            text.ends_with("irdistill_mqtt_reconnects_total 2\n"),
            "{text}"
        );
    }
}
