//! The `[source]` section of the daemon's configuration: which source to
//! open (`synthetic`, `images:…`, `v4l2:…`, `fault:…`), at what size, rate
//! and pixel format. It lives with the capture code that reads it, so the
//! sources depend on nothing above them; `device::config` embeds it.

use std::path::PathBuf;

use anyhow::{bail, ensure, Result};
use serde::Deserialize;

use super::PixelFormat;
use crate::shared::condition::Condition;

#[derive(Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields, default)]
pub struct SourceConfig {
    /// `synthetic`, `images:DIR` (or `images:GLOB`), `v4l2:/dev/videoN`,
    /// `rtsp://[user:pass@]host[:port]/path` (H.264), `http(s)://…` (an
    /// MJPEG stream), or `fault:EVENTS` (synthetic with injected faults, for
    /// tests). Credentials in a URL are never logged or published.
    pub spec: String,
    /// Frames per second asked of the camera; for synthetic and image
    /// sources the pace (0 = as fast as the pipeline takes them).
    pub fps: f32,
    pub width_px: u32,
    pub height_px: u32,
    /// Preferred pixel format (`YUYV`, `MJPG`, `NV12`, `RGB3`, `GREY`);
    /// none = the best the camera offers. The synthetic source emits it
    /// too (default YUYV, like a webcam).
    pub format: Option<String>,
    /// V4L2 mmap buffers.
    pub buffer_count: u32,
    /// A camera silent this long is stalled (a timeout is counted).
    pub timeout_ms: u64,
    pub synthetic: SyntheticConfig,
}

impl Default for SourceConfig {
    fn default() -> Self {
        Self {
            spec: "synthetic".into(),
            fps: 15.0,
            width_px: 640,
            height_px: 480,
            format: None,
            buffer_count: 4,
            timeout_ms: 2000,
            synthetic: SyntheticConfig::default(),
        }
    }
}

#[derive(Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields, default)]
pub struct SyntheticConfig {
    pub seed: u64,
    /// Conditions cycled through, in order.
    pub conditions: Vec<String>,
    /// Frames each generated scene is shown for (objects then keep their
    /// track IDs, as in a real street).
    pub hold_frames: u32,
    /// Scenes per condition before the next condition.
    pub scenes_per_condition: u32,
    /// The view pans right by this many pixels per frame within a scene
    /// (wrapping around), so objects move across the frame and through
    /// zones: tracks and object events get exercised. 0: still scenes.
    pub pan_px_per_frame: f32,
}

impl Default for SyntheticConfig {
    fn default() -> Self {
        Self {
            seed: 1,
            conditions: vec!["day".into(), "night".into(), "fog".into()],
            hold_frames: 30,
            scenes_per_condition: 4,
            pan_px_per_frame: 0.0,
        }
    }
}

/// A parsed `--source`/`source.spec`.
#[derive(Debug, Clone, PartialEq)]
pub enum SourceSpec {
    Synthetic,
    /// A folder, or a glob pattern.
    Images(String),
    V4l2(PathBuf),
    /// Synthetic frames with faults injected (see `capture::fault`).
    Fault(String),
    /// An IP camera's H.264 over RTSP/TCP (the whole `rtsp://` URL).
    Rtsp(String),
    /// An MJPEG stream over HTTP(S) (the whole `http(s)://` URL).
    HttpMjpeg(String),
}

impl std::str::FromStr for SourceSpec {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        let s = s.trim();
        if s == "synthetic" {
            return Ok(SourceSpec::Synthetic);
        }
        if let Some(rest) = s.strip_prefix("images:") {
            ensure!(
                !rest.is_empty(),
                "images: needs a folder or glob, e.g. images:frames/"
            );
            return Ok(SourceSpec::Images(rest.to_string()));
        }
        if let Some(rest) = s.strip_prefix("v4l2:") {
            ensure!(
                !rest.is_empty(),
                "v4l2: needs a device, e.g. v4l2:/dev/video0"
            );
            return Ok(SourceSpec::V4l2(PathBuf::from(rest)));
        }
        if let Some(rest) = s.strip_prefix("fault:") {
            return Ok(SourceSpec::Fault(rest.to_string()));
        }
        if s.starts_with("/dev/video") {
            return Ok(SourceSpec::V4l2(PathBuf::from(s)));
        }
        let lower = s.to_ascii_lowercase();
        if lower.starts_with("rtsp://") {
            check_url_host(s)?;
            return Ok(SourceSpec::Rtsp(s.to_string()));
        }
        if lower.starts_with("http://") || lower.starts_with("https://") {
            check_url_host(s)?;
            return Ok(SourceSpec::HttpMjpeg(s.to_string()));
        }
        // the message must not echo a URL's password
        bail!(
            "unknown source {:?}: expected synthetic, images:DIR, v4l2:/dev/videoN, rtsp://…, http(s)://… or fault:EVENTS",
            redact_credentials(s)
        )
    }
}

/// A network source's URL must name a host.
fn check_url_host(url: &str) -> Result<()> {
    let (_, authority, _) = split_url(url);
    let host = authority.rsplit('@').next().unwrap_or("");
    ensure!(
        !host.is_empty() && !host.starts_with(':'),
        "{}: no host in the URL (expected e.g. rtsp://camera.local/stream)",
        redact_credentials(url)
    );
    Ok(())
}

/// `scheme://`, `[userinfo@]host[:port]`, `/path?query` of a URL-like
/// spec; the first two empty when it has no scheme.
fn split_url(s: &str) -> (&str, &str, &str) {
    let Some(i) = s.find("://") else {
        return ("", "", s);
    };
    let (scheme, rest) = s.split_at(i + 3);
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    (scheme, &rest[..end], &rest[end..])
}

/// The spec with a URL's user name and password replaced by `***`
/// (`rtsp://***@cam.local/live`), for logs, reports and error messages.
/// Specs without credentials come back unchanged.
pub fn redact_credentials(spec: &str) -> String {
    let (scheme, authority, rest) = split_url(spec);
    match authority.rfind('@') {
        Some(at) => format!("{scheme}***{}{rest}", &authority[at..]),
        None => spec.to_string(),
    }
}

/// Parses a V4L2 fourcc name (`YUYV`, `MJPG`/`MJPEG`, `NV12`, `RGB3`/`RGB24`, `GREY`).
pub fn parse_pixel_format(s: &str) -> Result<PixelFormat> {
    match s.trim().to_ascii_uppercase().as_str() {
        "YUYV" => Ok(PixelFormat::Yuyv),
        "MJPG" | "MJPEG" => Ok(PixelFormat::Mjpeg),
        "NV12" => Ok(PixelFormat::Nv12),
        "RGB3" | "RGB24" | "RGB" => Ok(PixelFormat::Rgb24),
        "GREY" | "GRAY" | "Y8" => Ok(PixelFormat::Grey),
        other => bail!("unknown pixel format {other:?}: expected YUYV, MJPG, NV12, RGB3 or GREY"),
    }
}

impl SourceConfig {
    pub fn source_spec(&self) -> Result<SourceSpec> {
        self.spec.parse()
    }

    /// The spec as logs and reports show it: a URL's credentials hidden.
    pub fn spec_redacted(&self) -> String {
        redact_credentials(&self.spec)
    }

    /// The preferred pixel format, if one is set and valid (validation
    /// refuses an invalid one before a source is opened).
    pub fn pixel_format(&self) -> Option<PixelFormat> {
        self.format
            .as_deref()
            .and_then(|f| parse_pixel_format(f).ok())
    }

    /// The synthetic source's conditions that parse (validation refuses
    /// the others).
    pub fn synthetic_conditions(&self) -> Vec<Condition> {
        self.synthetic
            .conditions
            .iter()
            .filter_map(|c| c.parse().ok())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn network_specs_parse_and_hide_credentials() {
        let spec: SourceSpec = "rtsp://admin:s3cret@10.0.0.5:554/Streaming/101"
            .parse()
            .unwrap();
        assert_eq!(
            spec,
            SourceSpec::Rtsp("rtsp://admin:s3cret@10.0.0.5:554/Streaming/101".into())
        );
        assert_eq!(
            redact_credentials("rtsp://admin:s3cret@10.0.0.5:554/Streaming/101"),
            "rtsp://***@10.0.0.5:554/Streaming/101"
        );
        // an @ in the path is not userinfo
        assert_eq!(
            redact_credentials("http://cam/video?user=a@b"),
            "http://cam/video?user=a@b"
        );
        assert_eq!(redact_credentials("v4l2:/dev/video0"), "v4l2:/dev/video0");
        assert!(matches!(
            "HTTPS://u:p@cam.local/mjpg".parse::<SourceSpec>().unwrap(),
            SourceSpec::HttpMjpeg(_)
        ));
    }

    #[test]
    fn bad_network_specs_name_the_problem_without_the_password() {
        let err = "rtsp://admin:s3cret@/live"
            .parse::<SourceSpec>()
            .unwrap_err()
            .to_string();
        assert!(err.contains("no host"), "{err}");
        assert!(!err.contains("s3cret"), "{err}");
        let err = "rstp://admin:s3cret@cam/live"
            .parse::<SourceSpec>()
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown source"), "{err}");
        assert!(!err.contains("s3cret"), "{err}");
    }
}
