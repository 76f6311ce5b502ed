//! The daemon's configuration: a TOML file (documented example:
//! `systemd/irdistill.toml`), every field optional with the defaults below,
//! then overridden by command-line flags. Unknown keys are errors (a typo
//! must not silently fall back to a default), and every validation error
//! names the field (`detect.conf`, `zones[1].points`, …).

use std::path::{Path, PathBuf};

use anyhow::{ensure, Context, Result};
use serde::Deserialize;

use crate::device::capture::source::{parse_pixel_format, SourceConfig, SyntheticConfig};
use crate::device::events::EventsConfig;
use crate::device::postprocess::{Zone, ZoneMode};
use crate::device::track::TrackerConfig;
use crate::shared::condition::Condition;

/// The `[mqtt]` table: the publisher's own config when built with MQTT.
#[cfg(feature = "mqtt")]
pub type MqttSection = crate::device::publish::mqtt::MqttConfig;
/// Without the `mqtt` feature the table is kept only to refuse it clearly.
#[cfg(not(feature = "mqtt"))]
pub type MqttSection = toml::Table;

#[derive(Deserialize, Default, Clone)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub camera: CameraConfig,
    pub source: SourceConfig,
    pub reconnect: ReconnectConfig,
    pub model: ModelConfig,
    pub detect: DetectConfig,
    /// Polygon zones (include/exclude), in fractions of the frame.
    pub zones: Vec<ZoneConfig>,
    pub track: TrackConfig,
    /// Object events (`new` / `update` / `end`) from the tracks.
    pub events: EventsConfig,
    pub output: OutputConfig,
    pub snapshots: SnapshotConfig,
    pub http: HttpConfig,
    pub pipeline: PipelineConfig,
    pub mqtt: Option<MqttSection>,
}

#[derive(Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields, default)]
pub struct CameraConfig {
    /// Names the camera in MQTT topics and JSON messages.
    pub name: String,
}

impl Default for CameraConfig {
    fn default() -> Self {
        Self {
            name: "cam0".into(),
        }
    }
}

#[derive(Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields, default)]
pub struct ReconnectConfig {
    /// First wait after losing the camera; doubles per failed attempt.
    pub initial_ms: u64,
    /// Cap of the wait.
    pub max_ms: u64,
}

impl Default for ReconnectConfig {
    fn default() -> Self {
        Self {
            initial_ms: 250,
            max_ms: 30_000,
        }
    }
}

#[derive(Deserialize, Debug, Clone, Default)]
#[serde(deny_unknown_fields, default)]
pub struct ModelConfig {
    /// The ONNX model; none = `models/student-p.onnx` next to the binary or
    /// in the working directory.
    pub path: Option<PathBuf>,
    /// Input size when the model does not record it (`imgsz` metadata).
    pub imgsz: Option<u32>,
    /// Class names when the model does not record them (`names` metadata).
    pub names: Option<Vec<String>>,
    /// Threads for inference: a number, or `"auto"` (also 0; the
    /// default): each count from 1 to the cores is timed when the model
    /// loads and the fastest kept.
    #[serde(deserialize_with = "threads_or_auto")]
    pub threads: usize,
}

/// `model.threads`: a whole number, or `"auto"` (stored as 0).
fn threads_or_auto<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<usize, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Threads {
        Count(usize),
        Word(String),
    }
    match Threads::deserialize(d)? {
        Threads::Count(n) => Ok(n),
        Threads::Word(w) if w.eq_ignore_ascii_case("auto") => Ok(0),
        Threads::Word(w) => Err(serde::de::Error::custom(format!(
            "expected a number of threads or \"auto\", got {w:?}"
        ))),
    }
}

#[derive(Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields, default)]
pub struct DetectConfig {
    /// Global confidence threshold.
    pub conf: f32,
    /// Per-label thresholds replacing `conf`, e.g. `{ person = 0.4 }`.
    pub class_conf: std::collections::BTreeMap<String, f32>,
    /// NMS IoU threshold.
    pub iou: f32,
    pub max_det: usize,
    /// Boxes outside this area range (source pixels²) are dropped.
    pub min_area_px: f32,
    pub max_area_px: Option<f32>,
}

impl Default for DetectConfig {
    fn default() -> Self {
        Self {
            conf: 0.25,
            class_conf: Default::default(),
            iou: 0.45,
            max_det: 100,
            min_area_px: 0.0,
            max_area_px: None,
        }
    }
}

#[derive(Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields)]
pub struct ZoneConfig {
    pub name: String,
    pub mode: ZoneMode,
    /// Polygon vertices `[x, y]` as fractions of the frame (0..1).
    pub points: Vec<[f32; 2]>,
}

#[derive(Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields, default)]
pub struct TrackConfig {
    pub enabled: bool,
    /// See [`TrackerConfig`].
    pub high_score: f32,
    pub match_iou: f32,
    pub max_age_frames: u32,
}

impl Default for TrackConfig {
    fn default() -> Self {
        let t = TrackerConfig::default();
        Self {
            enabled: true,
            high_score: t.high_score,
            match_iou: t.match_iou,
            max_age_frames: t.max_age_frames,
        }
    }
}

impl TrackConfig {
    pub fn tracker(&self) -> TrackerConfig {
        TrackerConfig {
            high_score: self.high_score,
            match_iou: self.match_iou,
            max_age_frames: self.max_age_frames,
        }
    }
}

#[derive(Deserialize, Debug, Clone, Default)]
#[serde(deny_unknown_fields, default)]
pub struct OutputConfig {
    /// JSON lines: a file (appended) or `-` for stdout. One line per
    /// frame, and one per object event (those have a `type`) unless
    /// `events_jsonl` sends them elsewhere.
    pub jsonl: Option<String>,
    /// Object events as JSON lines to their own file (or `-`) instead.
    pub events_jsonl: Option<String>,
}

#[derive(Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields, default)]
pub struct SnapshotConfig {
    /// Folder for annotated JPEGs; none = no snapshots on disk.
    pub dir: Option<PathBuf>,
    /// At most one snapshot per this interval.
    pub min_interval_ms: u64,
    /// And at least this many source frames apart (0 = no frame limit).
    pub min_interval_frames: u64,
    /// Oldest snapshots are deleted beyond this total size.
    pub max_total_bytes: u64,
    pub jpeg_quality: u8,
}

impl Default for SnapshotConfig {
    fn default() -> Self {
        Self {
            dir: None,
            min_interval_ms: 10_000,
            min_interval_frames: 0,
            max_total_bytes: 100 << 20,
            jpeg_quality: 85,
        }
    }
}

#[derive(Deserialize, Clone)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// `ADDR:PORT` (or a bare port, meaning loopback); none = no server.
    pub listen: Option<String>,
    /// A bearer token every endpoint but `/healthz` requires.
    pub token: Option<String>,
    /// The token from a file (first line), e.g. a systemd credential.
    pub token_file: Option<PathBuf>,
    /// A client that reads nothing for this long is dropped.
    pub write_timeout_ms: u64,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            listen: None,
            token: None,
            token_file: None,
            write_timeout_ms: 10_000,
        }
    }
}

// The token stays out of logs.
impl std::fmt::Debug for HttpConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpConfig")
            .field("listen", &self.listen)
            .field("token", &self.token.as_ref().map(|_| "***"))
            .field("token_file", &self.token_file)
            .field("write_timeout_ms", &self.write_timeout_ms)
            .finish()
    }
}

/// A bearer token long enough not to be guessed, sendable in a header.
fn usable_token(t: &str) -> bool {
    t.len() >= 16 && t.chars().all(|c| c.is_ascii_graphic())
}

impl HttpConfig {
    fn validate(&self) -> Result<()> {
        if let Some(l) = &self.listen {
            parse_listen(l).context("http.listen")?;
        }
        ensure!(
            !(self.token.is_some() && self.token_file.is_some()),
            "http.token and http.token_file: give one"
        );
        if let Some(t) = &self.token {
            ensure!(
                usable_token(t),
                "http.token must be at least 16 printable characters without spaces"
            );
        }
        ensure!(
            (100..=600_000).contains(&self.write_timeout_ms),
            "http.write_timeout_ms must be 100..=600000, got {}",
            self.write_timeout_ms
        );
        Ok(())
    }

    /// The bearer token (read from `token_file` if that is given).
    pub fn bearer_token(&self) -> Result<Option<String>> {
        if let Some(path) = &self.token_file {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("http.token_file {}: cannot read", path.display()))?;
            let token = text.lines().next().unwrap_or("").trim().to_string();
            ensure!(
                usable_token(&token),
                "http.token_file {}: the first line must be a token of at least 16 printable characters",
                path.display()
            );
            return Ok(Some(token));
        }
        Ok(self.token.clone())
    }
}

#[derive(Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields, default)]
pub struct PipelineConfig {
    /// Frames waiting between stages; beyond it the oldest is dropped
    /// (live sources) so latency stays bounded.
    pub queue_frames: usize,
    /// No processed frame for this long: the pipeline is stalled
    /// (`/healthz` fails, systemd watchdog pings stop).
    pub stall_ms: u64,
    /// Process only this many frames, then exit (0 = run forever).
    pub max_frames: u64,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        Self {
            queue_frames: 1,
            stall_ms: 10_000,
            max_frames: 0,
        }
    }
}

/// `ADDR:PORT`, or a bare port meaning loopback.
pub fn parse_listen(s: &str) -> Result<std::net::SocketAddr> {
    let s = s.trim();
    if let Ok(port) = s.parse::<u16>() {
        return Ok(std::net::SocketAddr::from(([127, 0, 0, 1], port)));
    }
    s.parse()
        .with_context(|| format!("{s:?} is not ADDR:PORT (e.g. 127.0.0.1:9464) or a port"))
}

impl CameraConfig {
    fn validate(&self) -> Result<()> {
        ensure!(
            !self.name.is_empty()
                && !self.name.contains(['/', '+', '#'])
                && !self.name.chars().any(char::is_whitespace),
            "camera.name {:?} must be non-empty, without '/', '+', '#' or spaces (it is an MQTT topic level)",
            self.name
        );
        Ok(())
    }
}

fn validate_synthetic(syn: &SyntheticConfig) -> Result<()> {
    ensure!(
        !syn.conditions.is_empty(),
        "source.synthetic.conditions must name at least one of day, night, fog"
    );
    for c in &syn.conditions {
        c.parse::<Condition>()
            .with_context(|| format!("source.synthetic.conditions: {c:?}"))?;
    }
    ensure!(
        syn.hold_frames >= 1 && syn.scenes_per_condition >= 1,
        "source.synthetic.hold_frames and scenes_per_condition must be at least 1"
    );
    ensure!(
        syn.pan_px_per_frame.is_finite() && (0.0..=64.0).contains(&syn.pan_px_per_frame),
        "source.synthetic.pan_px_per_frame must be 0..=64, got {}",
        syn.pan_px_per_frame
    );
    Ok(())
}

impl ReconnectConfig {
    fn validate(&self) -> Result<()> {
        ensure!(
            self.initial_ms >= 1 && self.max_ms >= self.initial_ms,
            "reconnect.initial_ms must be ≥ 1 and ≤ reconnect.max_ms (got {} and {})",
            self.initial_ms,
            self.max_ms
        );
        Ok(())
    }
}

impl ModelConfig {
    fn validate(&self) -> Result<()> {
        if let Some(s) = self.imgsz {
            ensure!(
                (32..=4096).contains(&s),
                "model.imgsz must be 32..=4096, got {s}"
            );
        }
        if let Some(n) = &self.names {
            ensure!(!n.is_empty(), "model.names must not be empty");
        }
        ensure!(
            self.threads <= 256,
            "model.threads must be 1..=256 or \"auto\", got {}",
            self.threads
        );
        Ok(())
    }
}

impl DetectConfig {
    fn validate(&self) -> Result<()> {
        ensure!(
            (0.0..=1.0).contains(&self.conf),
            "detect.conf must be in 0..=1, got {}",
            self.conf
        );
        for (label, t) in &self.class_conf {
            ensure!(
                (0.0..=1.0).contains(t),
                "detect.class_conf.{label} must be in 0..=1, got {t}"
            );
        }
        ensure!(
            (0.0..=1.0).contains(&self.iou),
            "detect.iou must be in 0..=1, got {}",
            self.iou
        );
        ensure!(
            self.max_det >= 1,
            "detect.max_det must be at least 1, got {}",
            self.max_det
        );
        ensure!(
            self.min_area_px >= 0.0 && self.min_area_px.is_finite(),
            "detect.min_area_px must be ≥ 0, got {}",
            self.min_area_px
        );
        if let Some(m) = self.max_area_px {
            ensure!(
                m > self.min_area_px,
                "detect.max_area_px ({m}) must exceed detect.min_area_px ({})",
                self.min_area_px
            );
        }
        Ok(())
    }
}

fn validate_zones(zones: &[ZoneConfig]) -> Result<()> {
    for (i, z) in zones.iter().enumerate() {
        ensure!(
            z.points.len() >= 3,
            "zones[{i}].points ({:?}) needs at least 3 vertices, got {}",
            z.name,
            z.points.len()
        );
        for p in &z.points {
            ensure!(
                p.iter().all(|v| (0.0..=1.0).contains(v)),
                "zones[{i}].points ({:?}): {p:?} is outside 0..1 (fractions of the frame)",
                z.name
            );
        }
    }
    Ok(())
}

impl TrackConfig {
    fn validate(&self) -> Result<()> {
        ensure!(
            (0.0..=1.0).contains(&self.high_score),
            "track.high_score must be in 0..=1, got {}",
            self.high_score
        );
        ensure!(
            self.match_iou > 0.0 && self.match_iou <= 1.0,
            "track.match_iou must be in (0, 1], got {}",
            self.match_iou
        );
        Ok(())
    }
}

impl SnapshotConfig {
    fn validate(&self) -> Result<()> {
        ensure!(
            (1..=100).contains(&self.jpeg_quality),
            "snapshots.jpeg_quality must be 1..=100, got {}",
            self.jpeg_quality
        );
        ensure!(
            self.max_total_bytes >= 1 << 16,
            "snapshots.max_total_bytes must be at least 65536, got {}",
            self.max_total_bytes
        );
        Ok(())
    }
}

impl PipelineConfig {
    fn validate(&self) -> Result<()> {
        ensure!(
            (1..=64).contains(&self.queue_frames),
            "pipeline.queue_frames must be 1..=64, got {}",
            self.queue_frames
        );
        ensure!(
            self.stall_ms >= 100,
            "pipeline.stall_ms must be at least 100, got {}",
            self.stall_ms
        );
        Ok(())
    }
}

impl Config {
    /// Reads and validates `path`; errors name the file and the field.
    pub fn load(path: &Path) -> Result<Config> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("config {}: cannot read", path.display()))?;
        Self::parse(&text).with_context(|| format!("config {}", path.display()))
    }

    pub fn parse(text: &str) -> Result<Config> {
        // toml's message already names the key and shows the line.
        let cfg: Config = toml::from_str(text).map_err(|e| anyhow::anyhow!("{e}"))?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks every value; the error names the field. Sections are
    /// checked in file order, so the first error is the first bad field.
    pub fn validate(&self) -> Result<()> {
        self.camera.validate()?;
        self.validate_source()?;
        self.reconnect.validate()?;
        self.model.validate()?;
        self.detect.validate()?;
        validate_zones(&self.zones)?;
        self.track.validate()?;
        self.events.validate(self.track.enabled)?;
        self.validate_outputs()?;
        self.pipeline.validate()?;
        self.validate_mqtt()
    }

    /// `[source]` and `[source.synthetic]`.
    fn validate_source(&self) -> Result<()> {
        self.source.source_spec().context("source.spec")?;
        let s = &self.source;
        ensure!(
            s.fps.is_finite() && (0.0..=1000.0).contains(&s.fps),
            "source.fps must be 0..=1000, got {}",
            s.fps
        );
        ensure!(
            (16..=8192).contains(&s.width_px) && (16..=8192).contains(&s.height_px),
            "source.width_px/height_px must be 16..=8192, got {}x{}",
            s.width_px,
            s.height_px
        );
        if let Some(f) = &s.format {
            parse_pixel_format(f).context("source.format")?;
        }
        ensure!(
            (1..=32).contains(&s.buffer_count),
            "source.buffer_count must be 1..=32, got {}",
            s.buffer_count
        );
        ensure!(
            s.timeout_ms >= 10,
            "source.timeout_ms must be at least 10, got {}",
            s.timeout_ms
        );
        validate_synthetic(&s.synthetic)
    }

    /// Where results go: `[output]`, `[snapshots]`, `[http]`.
    fn validate_outputs(&self) -> Result<()> {
        if let Some(j) = &self.output.jsonl {
            ensure!(!j.is_empty(), "output.jsonl must be a path or \"-\"");
        }
        if let Some(j) = &self.output.events_jsonl {
            ensure!(
                !j.is_empty() && Some(j) != self.output.jsonl.as_ref(),
                "output.events_jsonl must be a path or \"-\" other than output.jsonl (leave it out to write events there)"
            );
        }
        self.snapshots.validate()?;
        self.http.validate()?;
        // a missing token file fails here, not at the first request
        self.http.bearer_token()?;
        Ok(())
    }

    /// `[mqtt]`: whether this build can publish at all, and its fields
    /// (its TLS files are read when the publisher starts).
    fn validate_mqtt(&self) -> Result<()> {
        #[cfg(not(feature = "mqtt"))]
        ensure!(
            self.mqtt.is_none(),
            "mqtt: this irdistill was built without the mqtt feature"
        );
        #[cfg(feature = "mqtt")]
        if let Some(m) = &self.mqtt {
            m.validate()?;
            crate::device::publish::mqtt::MqttConfig::from_url(&m.url).context("mqtt.url")?;
        }
        Ok(())
    }

    /// The zones as the postprocess takes them.
    pub fn zones(&self) -> Vec<Zone> {
        self.zones
            .iter()
            .map(|z| Zone {
                name: z.name.clone(),
                mode: z.mode,
                points: z.points.iter().map(|p| (p[0], p[1])).collect(),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::capture::source::SourceSpec;
    use crate::device::capture::PixelFormat;

    #[test]
    fn defaults_are_valid_and_overrides_parse() {
        Config::default().validate().unwrap();
        let cfg = Config::parse(
            r#"
            [camera]
            name = "porch"
            [source]
            spec = "v4l2:/dev/video2"
            format = "mjpg"
            [detect]
            conf = 0.4
            class_conf = { car = 0.6 }
            [[zones]]
            name = "drive"
            mode = "include"
            points = [[0, 0.5], [1, 0.5], [1, 1], [0, 1]]
            "#,
        )
        .unwrap();
        assert_eq!(cfg.camera.name, "porch");
        assert_eq!(
            cfg.source.source_spec().unwrap(),
            SourceSpec::V4l2("/dev/video2".into())
        );
        assert_eq!(cfg.source.pixel_format(), Some(PixelFormat::Mjpeg));
        assert_eq!(cfg.detect.class_conf["car"], 0.6);
        assert_eq!(cfg.zones()[0].points.len(), 4);
    }

    #[test]
    fn threads_are_a_number_or_auto() {
        assert_eq!(Config::default().model.threads, 0, "auto by default");
        let threads = |text: &str| Config::parse(text).map(|c| c.model.threads);
        assert_eq!(threads("[model]\nthreads = 3").unwrap(), 3);
        assert_eq!(threads("[model]\nthreads = \"auto\"").unwrap(), 0);
        assert_eq!(threads("[model]\nthreads = \"AUTO\"").unwrap(), 0);
        for bad in ["[model]\nthreads = \"many\"", "[model]\nthreads = 300"] {
            let e = format!("{:#}", Config::parse(bad).err().unwrap());
            assert!(e.contains("threads"), "{bad:?}: {e}");
        }
    }

    #[test]
    fn errors_name_the_field() {
        let cases = [
            ("[detect]\nconf = 1.5", "detect.conf"),
            ("[detect]\nconff = 0.5", "conff"),
            ("[source]\nspec = \"webcam\"", "source.spec"),
            ("[source]\nformat = \"H264\"", "source.format"),
            (
                "[[zones]]\nname = \"a\"\nmode = \"include\"\npoints = [[0, 0], [1, 1]]",
                "zones[0].points",
            ),
            ("[http]\nlisten = \"localhost\"", "http.listen"),
            (
                "[reconnect]\ninitial_ms = 5000\nmax_ms = 100",
                "reconnect.initial_ms",
            ),
            (
                "[source.synthetic]\nconditions = [\"rain\"]",
                "source.synthetic.conditions",
            ),
            ("[detect]\nconf = \"high\"", "conf"),
        ];
        for (text, field) in cases {
            let e = format!("{:#}", Config::parse(text).err().unwrap());
            assert!(e.contains(field), "{text:?}: {e}");
        }
    }
}
