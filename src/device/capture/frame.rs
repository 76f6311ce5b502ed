//! A captured frame in the camera's own pixel format, before conversion.

use std::time::SystemTime;

/// The pixel layouts the daemon can convert to RGB.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum PixelFormat {
    /// Packed 4:2:2, Y0 U Y1 V (V4L2 `YUYV`).
    Yuyv,
    /// Planar Y then interleaved UV at half resolution (V4L2 `NV12`).
    Nv12,
    /// 8-bit luma only (V4L2 `GREY`).
    Grey,
    /// Packed R G B, 8 bits each (V4L2 `RGB3`).
    Rgb24,
    /// Motion JPEG: each frame a complete JPEG (V4L2 `MJPG`).
    Mjpeg,
}

impl PixelFormat {
    /// Every format, in the order the daemon prefers them when the
    /// configuration names none (cheapest conversion first).
    pub const PREFERENCE: [PixelFormat; 5] = [
        PixelFormat::Yuyv,
        PixelFormat::Mjpeg,
        PixelFormat::Nv12,
        PixelFormat::Rgb24,
        PixelFormat::Grey,
    ];

    /// The V4L2 fourcc code.
    pub fn fourcc(self) -> [u8; 4] {
        match self {
            PixelFormat::Yuyv => *b"YUYV",
            PixelFormat::Nv12 => *b"NV12",
            PixelFormat::Grey => *b"GREY",
            PixelFormat::Rgb24 => *b"RGB3",
            PixelFormat::Mjpeg => *b"MJPG",
        }
    }

    /// The format for a V4L2 fourcc, if the daemon can convert it.
    pub fn from_fourcc(code: &[u8; 4]) -> Option<PixelFormat> {
        PixelFormat::PREFERENCE
            .into_iter()
            .find(|f| &f.fourcc() == code)
    }
}

/// One frame as the source delivered it. The daemon keeps a small pool of
/// these and refills them (`data` keeps its capacity), so capture does not
/// allocate per frame.
#[derive(Clone, Debug)]
pub struct Frame {
    pub format: PixelFormat,
    pub width_px: u32,
    pub height_px: u32,
    /// Bytes per row of the first plane (0 for MJPEG).
    pub stride_bytes: u32,
    /// The frame's bytes (for MJPEG: one JPEG, `len()` = bytes used).
    pub data: Vec<u8>,
    /// The source's frame counter.
    pub sequence: u64,
    /// When the frame was captured (wall clock).
    pub captured_at: SystemTime,
}

impl Frame {
    pub fn empty() -> Frame {
        Frame {
            format: PixelFormat::Rgb24,
            width_px: 0,
            height_px: 0,
            stride_bytes: 0,
            data: Vec::new(),
            sequence: 0,
            captured_at: SystemTime::UNIX_EPOCH,
        }
    }
}

/// Why a source gave no frame. The daemon's reaction differs per kind:
/// `Timeout` waits again, `Disconnected` reopens with backoff, `Corrupt`
/// skips and counts the frame.
#[derive(Debug)]
pub enum CaptureError {
    /// No frame within the source's timeout (a stalled camera).
    Timeout,
    /// The device went away or failed in a way that needs a reopen.
    Disconnected(String),
    /// This one frame is unusable (truncated or corrupt); the next may be fine.
    Corrupt(String),
    /// The source has no more frames (an image folder at its end).
    EndOfStream,
}

impl std::fmt::Display for CaptureError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CaptureError::Timeout => write!(f, "no frame within the timeout"),
            CaptureError::Disconnected(why) => write!(f, "camera disconnected: {why}"),
            CaptureError::Corrupt(why) => write!(f, "corrupt frame: {why}"),
            CaptureError::EndOfStream => write!(f, "end of stream"),
        }
    }
}

impl std::error::Error for CaptureError {}
