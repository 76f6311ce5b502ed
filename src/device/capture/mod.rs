//! Frame sources for the daemon: V4L2 cameras, IP cameras (RTSP H.264,
//! HTTP MJPEG), the synthetic scene
//! generator as a live camera, image files, and a fault-injecting source
//! for tests. Every source fills a reused [`Frame`]; opening is separate
//! from reading ([`Opener`]) so the pipeline can reopen a lost camera with
//! backoff.

#[cfg(feature = "v4l2")]
pub mod camera;
pub mod fault;
pub mod frame;
pub mod images;
#[cfg(feature = "http-mjpeg")]
pub mod mjpeg_http;
#[cfg(feature = "rtsp")]
pub mod rtsp;
pub mod source;
pub mod synthetic;
#[cfg(any(feature = "rtsp", feature = "http-mjpeg"))]
pub mod url_credentials;
#[cfg(feature = "v4l2")]
pub mod v4l2;

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Result;
pub use frame::{CaptureError, Frame, PixelFormat};

use source::{SourceConfig, SourceSpec};

/// An open source delivering frames.
pub trait Source: Send {
    /// Fills `frame` (its buffer is reused) with the next frame.
    fn read_into(&mut self, frame: &mut Frame) -> Result<(), CaptureError>;
    /// What the source actually delivers (format, size, fps), for the log.
    fn describe(&self) -> String;
}

/// Opens (and after a loss, reopens) a source.
pub trait Opener: Send {
    fn open(&mut self) -> Result<Box<dyn Source>>;
    /// The source's name in logs (`v4l2:/dev/video0`, `synthetic`, …).
    fn name(&self) -> String;
    /// A live source runs at its own pace whatever the pipeline does, so
    /// the pipeline drops the oldest frames when it falls behind; a
    /// non-live one (a folder read as fast as possible) waits instead.
    fn live(&self) -> bool;
}

/// The opener for the configured source.
pub fn opener(cfg: &SourceConfig) -> Result<Box<dyn Opener>> {
    Ok(match cfg.source_spec()? {
        SourceSpec::Synthetic => Box::new(synthetic::SyntheticOpener::new(cfg)?),
        SourceSpec::Images(pattern) => Box::new(images::ImagesOpener::new(&pattern, cfg)?),
        SourceSpec::Fault(events) => Box::new(fault::FaultOpener::new(&events, cfg)?),
        #[cfg(feature = "v4l2")]
        SourceSpec::V4l2(device) => Box::new(camera::CameraOpener::new(device, cfg)),
        #[cfg(not(feature = "v4l2"))]
        SourceSpec::V4l2(device) => anyhow::bail!(
            "source v4l2:{}: this irdistill was built without the v4l2 feature",
            device.display()
        ),
        #[cfg(feature = "rtsp")]
        SourceSpec::Rtsp(url) => Box::new(rtsp::RtspOpener::new(&url, cfg)?),
        #[cfg(not(feature = "rtsp"))]
        SourceSpec::Rtsp(url) => anyhow::bail!(
            "source {}: this irdistill was built without the rtsp feature (build with --features netcam)",
            source::redact_credentials(&url)
        ),
        #[cfg(feature = "http-mjpeg")]
        SourceSpec::HttpMjpeg(url) => Box::new(mjpeg_http::MjpegHttpOpener::new(&url, cfg)?),
        #[cfg(not(feature = "http-mjpeg"))]
        SourceSpec::HttpMjpeg(url) => anyhow::bail!(
            "source {}: this irdistill was built without the http-mjpeg feature (build with --features netcam)",
            source::redact_credentials(&url)
        ),
    })
}

/// Paces a synthetic or file source at `fps` (0 = no pacing).
#[derive(Debug, Clone)]
pub struct Pacer {
    interval: Option<Duration>,
    next: Option<Instant>,
}

impl Pacer {
    pub fn new(fps: f32) -> Self {
        Self {
            interval: (fps > 0.0).then(|| Duration::from_secs_f64(1.0 / fps as f64)),
            next: None,
        }
    }

    /// Sleeps until the next frame is due. A source that fell behind does
    /// not burst to catch up (a camera does not either).
    pub fn wait(&mut self) {
        let Some(interval) = self.interval else {
            return;
        };
        let now = Instant::now();
        let due = self.next.unwrap_or(now);
        if due > now {
            std::thread::sleep(due - now);
        }
        self.next = Some(due.max(now) + interval);
    }
}

/// Sleeps `total`, waking early when `stop` is set; returns whether it was.
pub fn sleep_unless(stop: &AtomicBool, total: Duration) -> bool {
    let end = Instant::now() + total;
    loop {
        if stop.load(Ordering::Relaxed) {
            return true;
        }
        let now = Instant::now();
        if now >= end {
            return false;
        }
        std::thread::sleep((end - now).min(Duration::from_millis(20)));
    }
}
