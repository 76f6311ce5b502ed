//! The V4L2 camera as a pipeline source: opens the device with the
//! configured request (the capture module negotiates the format), logs
//! what the driver granted, and passes frames through. Losing the device
//! is reported as `Disconnected`; the pipeline reopens it with backoff.

use std::path::PathBuf;

use anyhow::Result;

use super::source::SourceConfig;
use super::v4l2::{V4l2Camera, V4l2Request};
use super::{CaptureError, Frame, Opener, Source};

pub struct CameraOpener {
    request: V4l2Request,
}

impl CameraOpener {
    pub fn new(device: PathBuf, cfg: &SourceConfig) -> Self {
        let s = cfg;
        Self {
            request: V4l2Request {
                device,
                format: cfg.pixel_format(),
                width_px: s.width_px,
                height_px: s.height_px,
                fps: s.fps.round() as u32,
                buffer_count: s.buffer_count,
                timeout_ms: s.timeout_ms,
            },
        }
    }
}

impl Opener for CameraOpener {
    fn open(&mut self) -> Result<Box<dyn Source>> {
        let camera = V4l2Camera::open(&self.request)?;
        Ok(Box::new(CameraSource { camera }))
    }

    fn name(&self) -> String {
        format!("v4l2:{}", self.request.device.display())
    }

    fn live(&self) -> bool {
        true
    }
}

struct CameraSource {
    camera: V4l2Camera,
}

impl Source for CameraSource {
    fn read_into(&mut self, frame: &mut Frame) -> Result<(), CaptureError> {
        self.camera.read_into(frame)
    }

    fn describe(&self) -> String {
        let g = self.camera.granted();
        format!(
            "{:?} {}x{} (stride {} bytes) at {}",
            g.format,
            g.width_px,
            g.height_px,
            g.stride_bytes,
            g.fps
                .map_or("driver's rate".to_string(), |f| format!("{f} fps"))
        )
    }
}
