//! V4L2 capture: format negotiation, mmap streaming into reused frames,
//! and a device listing for `irdistill probe`.
//!
//! We use the `v4l` crate's bindgen'd kernel structs, its ioctl numbers and
//! its `ioctl` wrapper, but not its `Device`/`MmapStream` types: those panic
//! in `Drop` on any error other than ENODEV (a camera that fails with EIO
//! would abort the daemon), `expect` on colorspace values they do not know,
//! and re-queue a buffer twice after a timed-out dequeue. A daemon that runs
//! for months must turn all of that into `CaptureError`s instead.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io;
use std::mem;
use std::os::fd::{AsRawFd, RawFd};
use std::os::raw::c_void;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{anyhow, bail, Context, Result};
use serde::Serialize;
use v4l::v4l2::vidioc;
use v4l::v4l_sys as sys;

use super::frame::{CaptureError, Frame, PixelFormat};

/// What the daemon asks of a camera. The driver may grant something else
/// (nearest size, nearest rate); `V4l2Camera::granted` says what it did.
#[derive(Clone, Debug)]
pub struct V4l2Request {
    pub device: PathBuf,
    /// `None`: the best of `PixelFormat::PREFERENCE` that the camera offers.
    pub format: Option<PixelFormat>,
    /// 0 (either): keep the driver's current size.
    pub width_px: u32,
    pub height_px: u32,
    /// 0: keep the driver's current rate.
    pub fps: u32,
    /// mmap buffers to ask for (2..=32).
    pub buffer_count: u32,
    /// How long `read_into` waits for a frame before `CaptureError::Timeout`.
    pub timeout_ms: u64,
}

/// What the driver actually granted.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Granted {
    pub format: PixelFormat,
    pub width_px: u32,
    pub height_px: u32,
    /// Bytes per row of the first plane (0 for MJPEG).
    pub stride_bytes: u32,
    /// `None` when the driver does not report a frame interval.
    pub fps: Option<f32>,
}

/// An open, streaming V4L2 capture device.
pub struct V4l2Camera {
    device: PathBuf,
    // Dropped (unmapped) in `Drop` before `file` closes: a mapping keeps the
    // device file referenced, and vivid (like a real unplug) only re-registers
    // a disconnected device once every reference is gone.
    buffers: Vec<Mapping>,
    file: File,
    granted: Granted,
    /// Bytes of one uncompressed frame (all planes); 0 for MJPEG.
    frame_bytes: usize,
    timeout: Duration,
    sequence: SequenceCounter,
}

// Smallest buffer that can hold a JPEG at all (SOI, DQT, SOF, DHT, SOS, EOI
// headers alone take over a hundred bytes); anything shorter is a truncated
// transfer.
const MIN_MJPEG_BYTES: usize = 100;
const MAX_BUFFERS: u32 = 32;
// Enumeration loops stop here even if a buggy driver never says EINVAL.
const MAX_ENUM_ENTRIES: u32 = 1024;

impl V4l2Camera {
    /// Opens the device, negotiates format, size and rate, maps the buffers
    /// and starts streaming. Errors name the device and what is wrong.
    pub fn open(req: &V4l2Request) -> Result<V4l2Camera> {
        validate_request(req)?;
        let path = &req.device;
        let file = open_device(path)?;
        let fd = file.as_raw_fd();
        let caps = query_caps(fd).map_err(|e| describe_querycap_error(path, &e))?;
        check_capture_caps(path, &caps)?;

        let offered =
            enum_formats(fd).with_context(|| format!("{}: listing formats", path.display()))?;
        let format = choose_format(path, &offered, req.format)?;
        let size = choose_size(fd, format, req)
            .with_context(|| format!("{}: choosing a frame size", path.display()))?;
        let pix = set_format(fd, format, size).with_context(|| {
            format!(
                "{}: VIDIOC_S_FMT {}",
                path.display(),
                fourcc_name(fourcc_u32(format))
            )
        })?;
        let granted_format =
            PixelFormat::from_fourcc(&pix.pixelformat.to_le_bytes()).ok_or_else(|| {
                anyhow!(
                "{}: asked for {} but the driver switched to {}, which irdistill cannot convert",
                path.display(),
                fourcc_name(fourcc_u32(format)),
                fourcc_name(pix.pixelformat)
            )
            })?;
        let stride_bytes = effective_stride(granted_format, &pix);
        let frame_bytes = frame_bytes(granted_format, stride_bytes, pix.height);
        let fps = set_frame_rate(fd, &pix, req.fps)
            .with_context(|| format!("{}: setting the frame rate", path.display()))?;
        let granted = Granted {
            format: granted_format,
            width_px: pix.width,
            height_px: pix.height,
            stride_bytes,
            fps,
        };

        let buffers = map_buffers(fd, req.buffer_count, frame_bytes).with_context(|| {
            format!(
                "{}: setting up {} mmap buffers",
                path.display(),
                req.buffer_count
            )
        })?;
        for index in 0..buffers.len() as u32 {
            queue_buffer(fd, index).with_context(|| format!("{}: VIDIOC_QBUF", path.display()))?;
        }
        stream_on(fd).with_context(|| format!("{}: VIDIOC_STREAMON", path.display()))?;
        log_granted(req, &caps, &granted, buffers.len());

        Ok(V4l2Camera {
            device: path.clone(),
            buffers,
            file,
            granted,
            frame_bytes,
            timeout: Duration::from_millis(req.timeout_ms),
            sequence: SequenceCounter::default(),
        })
    }

    pub fn granted(&self) -> &Granted {
        &self.granted
    }

    pub fn device(&self) -> &Path {
        &self.device
    }

    /// Copies the next frame into `frame`, reusing its allocation when it is
    /// large enough. Waits at most `timeout_ms`.
    pub fn read_into(&mut self, frame: &mut Frame) -> Result<(), CaptureError> {
        let buf = self.dequeue()?;
        let copied = self.copy_out(&buf, frame);
        // The buffer goes back to the driver whatever its content was, so a
        // corrupt frame does not cost a buffer.
        queue_buffer(self.fd(), buf.index).map_err(|e| self.disconnected("VIDIOC_QBUF", &e))?;
        copied
    }

    fn fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }

    fn disconnected(&self, call: &str, err: &io::Error) -> CaptureError {
        CaptureError::Disconnected(format!(
            "{}: {call}: {}",
            self.device.display(),
            describe_errno(err)
        ))
    }

    /// Waits (poll, bounded by the timeout) for a filled buffer and takes it.
    fn dequeue(&self) -> Result<sys::v4l2_buffer, CaptureError> {
        let deadline = Instant::now() + self.timeout;
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            let revents =
                wait_readable(self.fd(), remaining).map_err(|e| self.disconnected("poll", &e))?;
            let Some(revents) = revents else {
                return Err(CaptureError::Timeout);
            };
            match dequeue_buffer(self.fd()) {
                Ok(buf) => return Ok(buf),
                // Woken without a buffer: wait again. With POLLERR/POLLHUP
                // no buffer will ever come (a stream without queued buffers).
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if revents & (libc::POLLERR | libc::POLLHUP | libc::POLLNVAL) != 0 {
                        return Err(CaptureError::Disconnected(format!(
                            "{}: poll reported an error (revents {revents:#x}) and no buffer is ready",
                            self.device.display()
                        )));
                    }
                }
                // ENODEV after an unplug, EIO after a fatal streaming error,
                // EPIPE on a broken pipeline: all need a reopen.
                Err(e) => return Err(self.disconnected("VIDIOC_DQBUF", &e)),
            }
        }
    }

    fn copy_out(&mut self, buf: &sys::v4l2_buffer, frame: &mut Frame) -> Result<(), CaptureError> {
        let sequence = self.sequence.extend(buf.sequence);
        if buf.flags & sys::V4L2_BUF_FLAG_ERROR != 0 {
            return Err(CaptureError::Corrupt(format!(
                "{}: the driver flagged frame {sequence} as corrupt",
                self.device.display()
            )));
        }
        let Some(mapping) = self.buffers.get(buf.index as usize) else {
            return Err(CaptureError::Disconnected(format!(
                "{}: the driver returned buffer {} of {}",
                self.device.display(),
                buf.index,
                self.buffers.len()
            )));
        };
        let used = (buf.bytesused as usize).min(mapping.len);
        let bytes =
            payload(self.granted.format, mapping.bytes(used), self.frame_bytes).map_err(|why| {
                CaptureError::Corrupt(format!(
                    "{}: frame {sequence}: {why}",
                    self.device.display()
                ))
            })?;

        frame.data.clear();
        frame.data.extend_from_slice(bytes);
        frame.format = self.granted.format;
        frame.width_px = self.granted.width_px;
        frame.height_px = self.granted.height_px;
        frame.stride_bytes = self.granted.stride_bytes;
        frame.sequence = sequence;
        frame.captured_at = capture_time(buf);
        Ok(())
    }
}

impl Drop for V4l2Camera {
    fn drop(&mut self) {
        // Errors are expected here (ENODEV after an unplug) and there is
        // nobody to report them to: the point is only to release the device.
        let fd = self.fd();
        let _ = stream_off(fd);
        self.buffers.clear();
        let _ = request_buffers(fd, 0);
    }
}

fn validate_request(req: &V4l2Request) -> Result<()> {
    if req.timeout_ms == 0 {
        bail!(
            "{}: timeout_ms must be at least 1 (a stalled camera would block forever)",
            req.device.display()
        );
    }
    if !(2..=MAX_BUFFERS).contains(&req.buffer_count) {
        bail!(
            "{}: buffer_count must be 2..={MAX_BUFFERS}, got {}",
            req.device.display(),
            req.buffer_count
        );
    }
    Ok(())
}

fn log_granted(req: &V4l2Request, caps: &Caps, granted: &Granted, buffer_count: usize) {
    tracing::info!(
        device = %req.device.display(),
        card = %caps.card,
        driver = %caps.driver,
        format = ?granted.format,
        width_px = granted.width_px,
        height_px = granted.height_px,
        stride_bytes = granted.stride_bytes,
        fps = ?granted.fps,
        buffers = buffer_count,
        "V4L2 camera streaming"
    );
    if req.format.is_some_and(|f| f != granted.format) {
        tracing::warn!(device = %req.device.display(), requested = ?req.format, granted = ?granted.format,
            "camera does not offer the requested pixel format");
    }
    let size_asked = req.width_px != 0 && req.height_px != 0;
    if size_asked && (req.width_px, req.height_px) != (granted.width_px, granted.height_px) {
        tracing::warn!(device = %req.device.display(),
            requested = %format_args!("{}x{}", req.width_px, req.height_px),
            granted = %format_args!("{}x{}", granted.width_px, granted.height_px),
            "camera granted a different frame size");
    }
    if req.fps != 0
        && granted
            .fps
            .is_some_and(|f| (f - req.fps as f32).abs() > 0.01)
    {
        tracing::warn!(device = %req.device.display(), requested = req.fps, granted = ?granted.fps,
            "camera granted a different frame rate");
    }
}

// --- negotiation -------------------------------------------------------------

/// The requested format if the camera offers it, else the best offered one.
fn choose_format(
    path: &Path,
    offered: &[RawFormat],
    wanted: Option<PixelFormat>,
) -> Result<PixelFormat> {
    let offers = |f: PixelFormat| offered.iter().any(|o| o.fourcc == fourcc_u32(f));
    if let Some(f) = wanted.filter(|&f| offers(f)) {
        return Ok(f);
    }
    PixelFormat::PREFERENCE.into_iter().find(|&f| offers(f)).ok_or_else(|| {
        let names: Vec<String> = offered.iter().map(|o| fourcc_name(o.fourcc)).collect();
        anyhow!(
            "{}: offers none of the pixel formats irdistill converts (YUYV, MJPG, NV12, RGB3, GREY); it offers: {}",
            path.display(),
            if names.is_empty() { "nothing".to_string() } else { names.join(", ") }
        )
    })
}

/// The frame size to ask for: the offered size nearest the request.
fn choose_size(fd: RawFd, format: PixelFormat, req: &V4l2Request) -> io::Result<(u32, u32)> {
    if req.width_px == 0 || req.height_px == 0 {
        let current = get_format(fd)?;
        return Ok((current.width, current.height));
    }
    let wanted = (req.width_px, req.height_px);
    // Drivers without size enumeration adjust the request in S_FMT themselves.
    Ok(match enum_frame_sizes(fd, fourcc_u32(format)) {
        Ok(sizes) => nearest_size(&sizes, wanted),
        Err(_) => wanted,
    })
}

/// Nearest by |Δw| + |Δh|; on a tie the larger size (more detail to downscale).
pub(crate) fn nearest_size(sizes: &FrameSizes, (want_w, want_h): (u32, u32)) -> (u32, u32) {
    match sizes {
        FrameSizes::Discrete { sizes } => sizes
            .iter()
            .map(|s| (s.width_px, s.height_px))
            .min_by_key(|&(w, h)| {
                (
                    want_w.abs_diff(w) + want_h.abs_diff(h),
                    std::cmp::Reverse(w * h),
                )
            })
            .unwrap_or((want_w, want_h)),
        FrameSizes::Stepwise(s) => (
            snap(want_w, s.min_width_px, s.max_width_px, s.step_width_px),
            snap(want_h, s.min_height_px, s.max_height_px, s.step_height_px),
        ),
    }
}

/// Clamps to [min, max] and rounds to the nearest step above min.
fn snap(want: u32, min: u32, max: u32, step: u32) -> u32 {
    let clamped = want.clamp(min, max.max(min));
    let step = step.max(1);
    let steps = ((clamped - min) + step / 2) / step;
    (min + steps * step).min(max.max(min))
}

/// Sets the frame interval nearest `fps` (when asked and supported) and
/// returns the rate the driver reports afterwards.
fn set_frame_rate(fd: RawFd, pix: &sys::v4l2_pix_format, fps: u32) -> io::Result<Option<f32>> {
    let mut parm = get_parm(fd)?;
    // SAFETY (union read): `get_parm` asked for VIDEO_CAPTURE, so the
    // driver filled the `capture` member.
    let can_set = unsafe { parm.parm.capture.capability } & sys::V4L2_CAP_TIMEPERFRAME != 0;
    if fps != 0 && can_set {
        let rates = enum_frame_intervals(fd, pix.pixelformat, pix.width, pix.height)
            .unwrap_or(FrameRates::Unknown);
        let interval = nearest_interval(&rates, fps);
        // Writing a union member is safe; `capture` is the one in use.
        parm.parm.capture.timeperframe = interval;
        set_parm(fd, &mut parm)?;
        parm = get_parm(fd)?;
    }
    // SAFETY: as above.
    let tpf = unsafe { parm.parm.capture.timeperframe };
    Ok(fps_of(tpf))
}

fn nearest_interval(rates: &FrameRates, fps: u32) -> sys::v4l2_fract {
    let exact = sys::v4l2_fract {
        numerator: 1,
        denominator: fps,
    };
    match rates {
        FrameRates::Discrete { fps: offered } if !offered.is_empty() => {
            let target = fps as f32;
            let best = offered
                .iter()
                .copied()
                .min_by(|a, b| {
                    let (da, db) = ((a - target).abs(), (b - target).abs());
                    da.total_cmp(&db).then(b.total_cmp(a))
                })
                .unwrap_or(target);
            // Discrete rates such as 12.5 fps need a fraction: 2/25.
            sys::v4l2_fract {
                numerator: 1000,
                denominator: (best * 1000.0).round() as u32,
            }
        }
        _ => exact,
    }
}

fn fps_of(interval: sys::v4l2_fract) -> Option<f32> {
    (interval.numerator != 0 && interval.denominator != 0)
        .then(|| interval.denominator as f32 / interval.numerator as f32)
}

/// Drivers may leave `bytesperline` 0; MJPEG has no rows at all.
fn effective_stride(format: PixelFormat, pix: &sys::v4l2_pix_format) -> u32 {
    let min_row = match format {
        PixelFormat::Mjpeg => return 0,
        PixelFormat::Yuyv => pix.width * 2,
        PixelFormat::Rgb24 => pix.width * 3,
        PixelFormat::Nv12 | PixelFormat::Grey => pix.width,
    };
    pix.bytesperline.max(min_row)
}

/// Bytes one uncompressed frame occupies (NV12: the Y plane, then the
/// interleaved UV plane with half the rows at the same stride).
fn frame_bytes(format: PixelFormat, stride_bytes: u32, height_px: u32) -> usize {
    let (stride, rows) = (stride_bytes as usize, height_px as usize);
    match format {
        PixelFormat::Mjpeg => 0,
        PixelFormat::Nv12 => stride * rows + stride * rows.div_ceil(2),
        PixelFormat::Yuyv | PixelFormat::Rgb24 | PixelFormat::Grey => stride * rows,
    }
}

/// The bytes of one frame within a dequeued buffer, or why it is unusable.
fn payload(format: PixelFormat, used: &[u8], frame_bytes: usize) -> Result<&[u8], String> {
    if format == PixelFormat::Mjpeg {
        if used.len() < MIN_MJPEG_BYTES {
            return Err(format!(
                "MJPEG buffer of {} bytes is too short to be a JPEG",
                used.len()
            ));
        }
        if used[..2] != [0xFF, 0xD8] {
            return Err("MJPEG buffer does not start with a JPEG SOI marker".to_string());
        }
        return Ok(used);
    }
    if used.len() < frame_bytes {
        return Err(format!(
            "short frame: {} bytes, expected {frame_bytes}",
            used.len()
        ));
    }
    Ok(&used[..frame_bytes])
}

/// Wall-clock time of capture: the driver's monotonic timestamp carried over
/// to the wall clock (they differ by the dequeue latency, up to a frame).
// time_t and suseconds_t are i32 on some 32-bit targets: the `from`s matter there.
#[allow(clippy::useless_conversion)]
fn capture_time(buf: &sys::v4l2_buffer) -> SystemTime {
    let now = SystemTime::now();
    if buf.flags & sys::V4L2_BUF_FLAG_TIMESTAMP_MASK != sys::V4L2_BUF_FLAG_TIMESTAMP_MONOTONIC {
        return now;
    }
    let stamp_us = i64::from(buf.timestamp.tv_sec) * 1_000_000 + i64::from(buf.timestamp.tv_usec);
    let age_us = monotonic_now_us() - stamp_us;
    // A negative or absurd age means a driver with its own idea of time.
    if (0..10_000_000).contains(&age_us) {
        now - Duration::from_micros(age_us as u64)
    } else {
        now
    }
}

#[allow(clippy::useless_conversion)] // see `capture_time`
fn monotonic_now_us() -> i64 {
    let mut ts: libc::timespec = zeroed();
    // SAFETY: `ts` is a valid timespec to write into.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    i64::from(ts.tv_sec) * 1_000_000 + i64::from(ts.tv_nsec) / 1000
}

/// Widens the driver's 32-bit frame counter so it never wraps.
#[derive(Default)]
struct SequenceCounter {
    last: Option<u32>,
    wraps: u64,
}

impl SequenceCounter {
    fn extend(&mut self, seq: u32) -> u64 {
        if self
            .last
            .is_some_and(|last| seq < last && last - seq > u32::MAX / 2)
        {
            self.wraps += 1;
        }
        self.last = Some(seq);
        (self.wraps << 32) | u64::from(seq)
    }
}

// --- device listing (`irdistill probe`) --------------------------------------

/// One device node as `irdistill probe` shows it.
#[derive(Clone, Debug, Serialize)]
pub struct DeviceInfo {
    pub path: PathBuf,
    pub driver: String,
    pub card: String,
    pub bus: String,
    /// Driver (kernel) version, `major.minor.patch`.
    pub version: String,
    /// V4L2 device capability names (`VIDEO_CAPTURE`, `STREAMING`, …).
    pub capabilities: Vec<String>,
    /// Single-planar video capture with streaming I/O: what irdistill needs.
    pub can_capture: bool,
    pub formats: Vec<FormatInfo>,
    /// Why the node could not be queried (only when scanning all nodes).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct FormatInfo {
    /// The fourcc as text (`YUYV`, `MJPG`; big-endian variants end in `-BE`).
    pub fourcc: String,
    pub description: String,
    /// Whether irdistill can convert this format.
    pub supported: bool,
    pub compressed: bool,
    pub sizes: FrameSizes,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum FrameSizes {
    Discrete {
        sizes: Vec<SizeInfo>,
    },
    /// Any size in the range on the step grid (continuous: step 1).
    Stepwise(StepwiseSizes),
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct StepwiseSizes {
    pub min_width_px: u32,
    pub max_width_px: u32,
    pub step_width_px: u32,
    pub min_height_px: u32,
    pub max_height_px: u32,
    pub step_height_px: u32,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SizeInfo {
    pub width_px: u32,
    pub height_px: u32,
    pub rates: FrameRates,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum FrameRates {
    Discrete {
        fps: Vec<f32>,
    },
    Range {
        min_fps: f32,
        max_fps: f32,
    },
    /// The driver does not enumerate frame intervals.
    Unknown,
}

/// Lists the given devices (all `/dev/video*` when `devices` is empty).
/// A named device that cannot be queried is an error; when scanning, such a
/// node is listed with its `error` instead.
pub fn probe(devices: &[PathBuf]) -> Result<Vec<DeviceInfo>> {
    if devices.is_empty() {
        return Ok(video_nodes()?
            .into_iter()
            .map(|path| probe_device(&path).unwrap_or_else(|e| DeviceInfo::unreadable(path, &e)))
            .collect());
    }
    devices.iter().map(|path| probe_device(path)).collect()
}

/// `/dev/video*` in numeric order.
fn video_nodes() -> Result<Vec<PathBuf>> {
    let mut nodes: Vec<(u32, PathBuf)> = std::fs::read_dir("/dev")
        .context("listing /dev")?
        .filter_map(|entry| entry.ok())
        .filter_map(|entry| {
            let name = entry.file_name();
            let number = name.to_str()?.strip_prefix("video")?.parse().ok()?;
            Some((number, entry.path()))
        })
        .collect();
    nodes.sort();
    Ok(nodes.into_iter().map(|(_, path)| path).collect())
}

fn probe_device(path: &Path) -> Result<DeviceInfo> {
    let file = open_device(path)?;
    let fd = file.as_raw_fd();
    let caps = query_caps(fd).map_err(|e| describe_querycap_error(path, &e))?;
    let can_capture = check_capture_caps(path, &caps).is_ok();
    let formats = if can_capture {
        enum_formats(fd)
            .with_context(|| format!("{}: listing formats", path.display()))?
            .into_iter()
            .map(|f| format_info(fd, f))
            .collect()
    } else {
        Vec::new()
    };
    Ok(DeviceInfo {
        path: path.to_path_buf(),
        driver: caps.driver.clone(),
        card: caps.card.clone(),
        bus: caps.bus.clone(),
        version: caps.version_string(),
        capabilities: capability_names(caps.device_caps),
        can_capture,
        formats,
        error: None,
    })
}

fn format_info(fd: RawFd, format: RawFormat) -> FormatInfo {
    let mut sizes =
        enum_frame_sizes(fd, format.fourcc).unwrap_or(FrameSizes::Discrete { sizes: Vec::new() });
    if let FrameSizes::Discrete { sizes } = &mut sizes {
        for size in sizes {
            size.rates = enum_frame_intervals(fd, format.fourcc, size.width_px, size.height_px)
                .unwrap_or(FrameRates::Unknown);
        }
    }
    FormatInfo {
        fourcc: fourcc_name(format.fourcc),
        description: format.description,
        supported: PixelFormat::from_fourcc(&format.fourcc.to_le_bytes()).is_some(),
        compressed: format.flags & sys::V4L2_FMT_FLAG_COMPRESSED != 0,
        sizes,
    }
}

impl DeviceInfo {
    fn unreadable(path: PathBuf, err: &anyhow::Error) -> DeviceInfo {
        DeviceInfo {
            path,
            driver: String::new(),
            card: String::new(),
            bus: String::new(),
            version: String::new(),
            capabilities: Vec::new(),
            can_capture: false,
            formats: Vec::new(),
            error: Some(format!("{err:#}")),
        }
    }
}

impl fmt::Display for DeviceInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(err) = &self.error {
            return writeln!(f, "{}: {err}", self.path.display());
        }
        writeln!(
            f,
            "{}: {} (driver {} {}, bus {})",
            self.path.display(),
            self.card,
            self.driver,
            self.version,
            self.bus
        )?;
        writeln!(f, "  capabilities: {}", self.capabilities.join(" "))?;
        if !self.can_capture {
            return writeln!(
                f,
                "  not a single-planar streaming capture device: irdistill cannot use it"
            );
        }
        for format in &self.formats {
            write!(f, "{format}")?;
        }
        Ok(())
    }
}

impl fmt::Display for FormatInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let usable = if self.supported {
            "supported"
        } else {
            "not supported"
        };
        writeln!(f, "  {:<7} {:<28} {usable}", self.fourcc, self.description)?;
        match &self.sizes {
            FrameSizes::Discrete { sizes } => {
                for size in sizes {
                    writeln!(
                        f,
                        "      {:>4}x{:<4}  {}",
                        size.width_px, size.height_px, size.rates
                    )?;
                }
            }
            FrameSizes::Stepwise(s) => writeln!(
                f,
                "      {}x{} to {}x{} in steps of {}x{}",
                s.min_width_px,
                s.min_height_px,
                s.max_width_px,
                s.max_height_px,
                s.step_width_px,
                s.step_height_px
            )?,
        }
        Ok(())
    }
}

impl fmt::Display for FrameRates {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameRates::Discrete { fps } => {
                let list: Vec<String> = fps.iter().map(|r| format!("{r}")).collect();
                write!(f, "{} fps", list.join(", "))
            }
            FrameRates::Range { min_fps, max_fps } => write!(f, "{min_fps} to {max_fps} fps"),
            FrameRates::Unknown => write!(f, "rates not listed"),
        }
    }
}

const CAPABILITY_NAMES: [(u32, &str); 14] = [
    (sys::V4L2_CAP_VIDEO_CAPTURE, "VIDEO_CAPTURE"),
    (sys::V4L2_CAP_VIDEO_CAPTURE_MPLANE, "VIDEO_CAPTURE_MPLANE"),
    (sys::V4L2_CAP_VIDEO_OUTPUT, "VIDEO_OUTPUT"),
    (sys::V4L2_CAP_VIDEO_OUTPUT_MPLANE, "VIDEO_OUTPUT_MPLANE"),
    (sys::V4L2_CAP_VIDEO_M2M, "VIDEO_M2M"),
    (sys::V4L2_CAP_VIDEO_M2M_MPLANE, "VIDEO_M2M_MPLANE"),
    (sys::V4L2_CAP_VIDEO_OVERLAY, "VIDEO_OVERLAY"),
    (sys::V4L2_CAP_VBI_CAPTURE, "VBI_CAPTURE"),
    (sys::V4L2_CAP_META_CAPTURE, "META_CAPTURE"),
    (sys::V4L2_CAP_TUNER, "TUNER"),
    (sys::V4L2_CAP_AUDIO, "AUDIO"),
    (sys::V4L2_CAP_READWRITE, "READWRITE"),
    (sys::V4L2_CAP_STREAMING, "STREAMING"),
    (sys::V4L2_CAP_TOUCH, "TOUCH"),
];

fn capability_names(caps: u32) -> Vec<String> {
    CAPABILITY_NAMES
        .iter()
        .filter(|(flag, _)| caps & flag != 0)
        .map(|(_, name)| name.to_string())
        .collect()
}

// --- device access -------------------------------------------------------------

fn open_device(path: &Path) -> Result<File> {
    // Non-blocking: DQBUF must never block; `poll` does the waiting.
    OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| anyhow!(describe_open_error(path, &e)))
}

fn describe_open_error(path: &Path, err: &io::Error) -> String {
    let path = path.display();
    match err.raw_os_error() {
        Some(libc::ENOENT) => format!("{path}: no such device (is the camera plugged in?)"),
        Some(libc::EACCES | libc::EPERM) => {
            format!("{path}: permission denied (run as a member of the 'video' group)")
        }
        Some(libc::ENODEV | libc::ENXIO) => {
            format!(
                "{path}: the device is gone (unplugged, or a disconnected device still held open)"
            )
        }
        Some(libc::EBUSY) => format!("{path}: busy (another program holds the camera)"),
        _ => format!("{path}: cannot open: {err}"),
    }
}

fn describe_querycap_error(path: &Path, err: &io::Error) -> anyhow::Error {
    match err.raw_os_error() {
        Some(libc::ENOTTY | libc::EINVAL) => anyhow!("{}: not a V4L2 device", path.display()),
        _ => anyhow!(
            "{}: VIDIOC_QUERYCAP: {}",
            path.display(),
            describe_errno(err)
        ),
    }
}

fn describe_errno(err: &io::Error) -> String {
    match err.raw_os_error() {
        Some(libc::ENODEV) => format!("device disconnected ({err})"),
        Some(libc::EIO) => format!("I/O error, the driver stopped streaming ({err})"),
        _ => err.to_string(),
    }
}

struct Caps {
    driver: String,
    card: String,
    bus: String,
    version: u32,
    /// The capabilities of this node (not of the whole physical device).
    device_caps: u32,
}

impl Caps {
    fn version_string(&self) -> String {
        let v = self.version;
        format!("{}.{}.{}", (v >> 16) & 0xff, (v >> 8) & 0xff, v & 0xff)
    }
}

fn check_capture_caps(path: &Path, caps: &Caps) -> Result<()> {
    let c = caps.device_caps;
    if c & sys::V4L2_CAP_VIDEO_CAPTURE == 0 {
        if c & sys::V4L2_CAP_VIDEO_CAPTURE_MPLANE != 0 {
            bail!(
                "{}: ({}) offers only multi-planar capture, which irdistill does not support",
                path.display(),
                caps.card
            );
        }
        bail!(
            "{}: ({}) is not a video capture device",
            path.display(),
            caps.card
        );
    }
    if c & sys::V4L2_CAP_STREAMING == 0 {
        bail!(
            "{}: ({}) does not support streaming I/O",
            path.display(),
            caps.card
        );
    }
    Ok(())
}

fn c_string(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).trim().to_string()
}

fn fourcc_u32(format: PixelFormat) -> u32 {
    u32::from_le_bytes(format.fourcc())
}

/// `YUYV`; big-endian variants (bit 31 set) get a `-BE` suffix: `Y16-BE`.
fn fourcc_name(code: u32) -> String {
    let big_endian = code & (1 << 31) != 0;
    let bytes = (code & !(1 << 31)).to_le_bytes();
    let text: String = bytes
        .iter()
        .map(|&b| {
            if b.is_ascii_graphic() || b == b' ' {
                b as char
            } else {
                '?'
            }
        })
        .collect();
    let text = text.trim_end().to_string();
    if big_endian {
        format!("{text}-BE")
    } else {
        text
    }
}

struct RawFormat {
    fourcc: u32,
    description: String,
    flags: u32,
}

// Thin wrappers, one per ioctl, so each `unsafe` block pairs a request with
// the struct the kernel expects for it.

fn ioctl<T>(fd: RawFd, request: vidioc::_IOC_TYPE, arg: &mut T) -> io::Result<()> {
    loop {
        // SAFETY: every caller passes the struct type its request is defined
        // with (see vidioc.rs); `arg` outlives the call.
        let result = unsafe { v4l::v4l2::ioctl(fd, request, arg as *mut T as *mut c_void) };
        match result {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}

/// An all-zero kernel struct (valid for every V4L2 struct: plain integers,
/// arrays and unions of them, null pointers).
fn zeroed<T>() -> T {
    // SAFETY: only used for the bindgen'd V4L2 structs, see above.
    unsafe { mem::zeroed() }
}

const CAPTURE: u32 = sys::v4l2_buf_type_V4L2_BUF_TYPE_VIDEO_CAPTURE;
const MMAP: u32 = sys::v4l2_memory_V4L2_MEMORY_MMAP;

fn query_caps(fd: RawFd) -> io::Result<Caps> {
    let mut cap: sys::v4l2_capability = zeroed();
    ioctl(fd, vidioc::VIDIOC_QUERYCAP, &mut cap)?;
    let device_caps = if cap.capabilities & sys::V4L2_CAP_DEVICE_CAPS != 0 {
        cap.device_caps
    } else {
        cap.capabilities
    };
    Ok(Caps {
        driver: c_string(&cap.driver),
        card: c_string(&cap.card),
        bus: c_string(&cap.bus_info),
        version: cap.version,
        device_caps,
    })
}

fn is_end_of_list(err: &io::Error) -> bool {
    err.raw_os_error() == Some(libc::EINVAL)
}

fn enum_formats(fd: RawFd) -> io::Result<Vec<RawFormat>> {
    let mut formats = Vec::new();
    for index in 0..MAX_ENUM_ENTRIES {
        let mut desc: sys::v4l2_fmtdesc = zeroed();
        desc.index = index;
        desc.type_ = CAPTURE;
        match ioctl(fd, vidioc::VIDIOC_ENUM_FMT, &mut desc) {
            Ok(()) => formats.push(RawFormat {
                fourcc: desc.pixelformat,
                description: c_string(&desc.description),
                flags: desc.flags,
            }),
            Err(e) if is_end_of_list(&e) => break,
            Err(e) => return Err(e),
        }
    }
    Ok(formats)
}

fn enum_frame_sizes(fd: RawFd, fourcc: u32) -> io::Result<FrameSizes> {
    let mut sizes = Vec::new();
    for index in 0..MAX_ENUM_ENTRIES {
        let mut e: sys::v4l2_frmsizeenum = zeroed();
        e.index = index;
        e.pixel_format = fourcc;
        match ioctl(fd, vidioc::VIDIOC_ENUM_FRAMESIZES, &mut e) {
            Ok(()) => {}
            Err(err) if is_end_of_list(&err) && index > 0 => break,
            Err(err) => return Err(err),
        }
        if e.type_ == sys::v4l2_frmsizetypes_V4L2_FRMSIZE_TYPE_DISCRETE {
            // SAFETY: type DISCRETE means the `discrete` member is filled.
            let d = unsafe { e.__bindgen_anon_1.discrete };
            sizes.push(SizeInfo {
                width_px: d.width,
                height_px: d.height,
                rates: FrameRates::Unknown,
            });
        } else {
            // SAFETY: STEPWISE and CONTINUOUS fill `stepwise`.
            let s = unsafe { e.__bindgen_anon_1.stepwise };
            return Ok(FrameSizes::Stepwise(StepwiseSizes {
                min_width_px: s.min_width,
                max_width_px: s.max_width,
                step_width_px: s.step_width.max(1),
                min_height_px: s.min_height,
                max_height_px: s.max_height,
                step_height_px: s.step_height.max(1),
            }));
        }
    }
    Ok(FrameSizes::Discrete { sizes })
}

fn enum_frame_intervals(
    fd: RawFd,
    fourcc: u32,
    width_px: u32,
    height_px: u32,
) -> io::Result<FrameRates> {
    let mut fps = Vec::new();
    for index in 0..MAX_ENUM_ENTRIES {
        let mut e: sys::v4l2_frmivalenum = zeroed();
        e.index = index;
        e.pixel_format = fourcc;
        e.width = width_px;
        e.height = height_px;
        match ioctl(fd, vidioc::VIDIOC_ENUM_FRAMEINTERVALS, &mut e) {
            Ok(()) => {}
            Err(err) if is_end_of_list(&err) && index > 0 => break,
            Err(err) => return Err(err),
        }
        if e.type_ == sys::v4l2_frmivaltypes_V4L2_FRMIVAL_TYPE_DISCRETE {
            // SAFETY: type DISCRETE means the `discrete` member is filled.
            fps.extend(fps_of(unsafe { e.__bindgen_anon_1.discrete }));
        } else {
            // SAFETY: STEPWISE and CONTINUOUS fill `stepwise`; the longest
            // interval is the lowest rate.
            let s = unsafe { e.__bindgen_anon_1.stepwise };
            return Ok(match (fps_of(s.max), fps_of(s.min)) {
                (Some(min_fps), Some(max_fps)) => FrameRates::Range { min_fps, max_fps },
                _ => FrameRates::Unknown,
            });
        }
    }
    Ok(FrameRates::Discrete { fps })
}

fn get_format(fd: RawFd) -> io::Result<sys::v4l2_pix_format> {
    let mut format: sys::v4l2_format = zeroed();
    format.type_ = CAPTURE;
    ioctl(fd, vidioc::VIDIOC_G_FMT, &mut format)?;
    // SAFETY: a VIDEO_CAPTURE format is described by the `pix` member.
    Ok(unsafe { format.fmt.pix })
}

/// S_FMT; returns what the driver made of the request (it adjusts in place).
fn set_format(
    fd: RawFd,
    format: PixelFormat,
    (width_px, height_px): (u32, u32),
) -> io::Result<sys::v4l2_pix_format> {
    let mut request: sys::v4l2_format = zeroed();
    request.type_ = CAPTURE;
    let mut pix: sys::v4l2_pix_format = zeroed();
    pix.width = width_px;
    pix.height = height_px;
    pix.pixelformat = fourcc_u32(format);
    pix.field = sys::v4l2_field_V4L2_FIELD_ANY;
    request.fmt.pix = pix;
    ioctl(fd, vidioc::VIDIOC_S_FMT, &mut request)?;
    // SAFETY: as in `get_format`.
    Ok(unsafe { request.fmt.pix })
}

fn get_parm(fd: RawFd) -> io::Result<sys::v4l2_streamparm> {
    let mut parm: sys::v4l2_streamparm = zeroed();
    parm.type_ = CAPTURE;
    ioctl(fd, vidioc::VIDIOC_G_PARM, &mut parm)?;
    Ok(parm)
}

fn set_parm(fd: RawFd, parm: &mut sys::v4l2_streamparm) -> io::Result<()> {
    ioctl(fd, vidioc::VIDIOC_S_PARM, parm)
}

fn request_buffers(fd: RawFd, count: u32) -> io::Result<u32> {
    let mut req: sys::v4l2_requestbuffers = zeroed();
    req.count = count;
    req.type_ = CAPTURE;
    req.memory = MMAP;
    ioctl(fd, vidioc::VIDIOC_REQBUFS, &mut req)?;
    Ok(req.count)
}

fn buffer_desc(index: u32) -> sys::v4l2_buffer {
    let mut buf: sys::v4l2_buffer = zeroed();
    buf.index = index;
    buf.type_ = CAPTURE;
    buf.memory = MMAP;
    buf
}

fn queue_buffer(fd: RawFd, index: u32) -> io::Result<()> {
    ioctl(fd, vidioc::VIDIOC_QBUF, &mut buffer_desc(index))
}

fn dequeue_buffer(fd: RawFd) -> io::Result<sys::v4l2_buffer> {
    let mut buf = buffer_desc(0);
    ioctl(fd, vidioc::VIDIOC_DQBUF, &mut buf)?;
    Ok(buf)
}

fn stream_on(fd: RawFd) -> io::Result<()> {
    let mut kind = CAPTURE as std::os::raw::c_int;
    ioctl(fd, vidioc::VIDIOC_STREAMON, &mut kind)
}

fn stream_off(fd: RawFd) -> io::Result<()> {
    let mut kind = CAPTURE as std::os::raw::c_int;
    ioctl(fd, vidioc::VIDIOC_STREAMOFF, &mut kind)
}

/// Waits until the fd is readable or has an error; `None` on timeout.
fn wait_readable(fd: RawFd, timeout: Duration) -> io::Result<Option<i16>> {
    let deadline = Instant::now() + timeout;
    loop {
        let mut pfd = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        let remaining_ms = deadline
            .saturating_duration_since(Instant::now())
            .as_millis();
        let remaining_ms = remaining_ms.min(i32::MAX as u128) as i32;
        // SAFETY: one valid pollfd, count 1.
        let ready = unsafe { libc::poll(&mut pfd, 1, remaining_ms) };
        match ready {
            0 => return Ok(None),
            n if n > 0 => return Ok(Some(pfd.revents)),
            _ => {
                let err = io::Error::last_os_error();
                if err.kind() != io::ErrorKind::Interrupted {
                    return Err(err);
                }
            }
        }
    }
}

/// One buffer mapped from the driver; unmapped on drop.
struct Mapping {
    ptr: *mut u8,
    len: usize,
}

// SAFETY: the mapping is plain shared memory owned by this value; moving it
// to another thread (the daemon's capture thread) is fine.
unsafe impl Send for Mapping {}

impl Mapping {
    fn bytes(&self, used: usize) -> &[u8] {
        // SAFETY: `ptr` maps `len` readable bytes for as long as `self` lives.
        unsafe { std::slice::from_raw_parts(self.ptr, used.min(self.len)) }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly what `map_buffers` mapped, once.
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
    }
}

fn map_buffers(fd: RawFd, wanted: u32, frame_bytes: usize) -> Result<Vec<Mapping>> {
    let granted = request_buffers(fd, wanted).context("VIDIOC_REQBUFS")?;
    if granted < 2 {
        bail!("the driver granted {granted} buffers; streaming needs at least 2");
    }
    let mut buffers = Vec::with_capacity(granted as usize);
    for index in 0..granted {
        let mut buf = buffer_desc(index);
        ioctl(fd, vidioc::VIDIOC_QUERYBUF, &mut buf).context("VIDIOC_QUERYBUF")?;
        let len = buf.length as usize;
        if len < frame_bytes {
            bail!("buffer {index} holds {len} bytes, a frame needs {frame_bytes}");
        }
        // SAFETY: for MMAP memory the driver filled `m.offset`.
        let offset = unsafe { buf.m.offset };
        // SAFETY: maps `len` bytes of the device at the offset the driver
        // gave for this buffer; checked for MAP_FAILED below.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd,
                offset as libc::off_t,
            )
        };
        if ptr == libc::MAP_FAILED {
            bail!("mmap of buffer {index}: {}", io::Error::last_os_error());
        }
        buffers.push(Mapping {
            ptr: ptr.cast(),
            len,
        });
    }
    Ok(buffers)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn discrete(sizes: &[(u32, u32)]) -> FrameSizes {
        FrameSizes::Discrete {
            sizes: sizes
                .iter()
                .map(|&(w, h)| SizeInfo {
                    width_px: w,
                    height_px: h,
                    rates: FrameRates::Unknown,
                })
                .collect(),
        }
    }

    #[test]
    fn nearest_discrete_size() {
        let sizes = discrete(&[(320, 180), (640, 360), (640, 480), (1280, 720)]);
        assert_eq!(nearest_size(&sizes, (700, 500)), (640, 480));
        assert_eq!(nearest_size(&sizes, (640, 480)), (640, 480));
        assert_eq!(nearest_size(&sizes, (10, 10)), (320, 180));
        assert_eq!(nearest_size(&sizes, (4000, 3000)), (1280, 720));
    }

    #[test]
    fn nearest_stepwise_size_snaps_to_grid() {
        let sizes = FrameSizes::Stepwise(StepwiseSizes {
            min_width_px: 16,
            max_width_px: 1920,
            step_width_px: 8,
            min_height_px: 16,
            max_height_px: 1080,
            step_height_px: 2,
        });
        // 479 lies halfway between 478 and 480: ties round up.
        assert_eq!(nearest_size(&sizes, (643, 479)), (640, 480));
        assert_eq!(nearest_size(&sizes, (5000, 1)), (1920, 16));
    }

    #[test]
    fn nearest_rate_prefers_closest_then_faster() {
        let rates = FrameRates::Discrete {
            fps: vec![5.0, 12.5, 25.0],
        };
        let f = nearest_interval(&rates, 12);
        assert_eq!(fps_of(f), Some(12.5));
        let f = nearest_interval(&rates, 100);
        assert_eq!(fps_of(f), Some(25.0));
        let f = nearest_interval(&FrameRates::Unknown, 30);
        assert_eq!((f.numerator, f.denominator), (1, 30));
    }

    #[test]
    fn payload_rejects_short_and_non_jpeg_buffers() {
        let raw = vec![7u8; 100];
        assert_eq!(payload(PixelFormat::Yuyv, &raw, 80).unwrap().len(), 80);
        assert!(payload(PixelFormat::Yuyv, &raw[..50], 80)
            .unwrap_err()
            .contains("short frame"));
        assert!(payload(PixelFormat::Mjpeg, &[], 0)
            .unwrap_err()
            .contains("too short"));
        assert!(payload(PixelFormat::Mjpeg, &raw, 0)
            .unwrap_err()
            .contains("SOI"));
        let mut jpeg = vec![0u8; 200];
        jpeg[..2].copy_from_slice(&[0xFF, 0xD8]);
        assert_eq!(payload(PixelFormat::Mjpeg, &jpeg, 0).unwrap().len(), 200);
    }

    #[test]
    fn frame_sizes_per_format() {
        assert_eq!(frame_bytes(PixelFormat::Yuyv, 1280, 480), 1280 * 480);
        assert_eq!(frame_bytes(PixelFormat::Nv12, 640, 480), 640 * 720);
        assert_eq!(frame_bytes(PixelFormat::Nv12, 640, 3), 640 * 5);
        assert_eq!(frame_bytes(PixelFormat::Mjpeg, 0, 480), 0);
    }

    #[test]
    fn sequence_counter_survives_wrap() {
        let mut c = SequenceCounter::default();
        assert_eq!(c.extend(u32::MAX - 1), u64::from(u32::MAX - 1));
        assert_eq!(c.extend(u32::MAX), u64::from(u32::MAX));
        assert_eq!(c.extend(0), 1 << 32);
        assert_eq!(c.extend(5), (1 << 32) + 5);
    }

    #[test]
    fn fourcc_names() {
        assert_eq!(fourcc_name(u32::from_le_bytes(*b"YUYV")), "YUYV");
        assert_eq!(
            fourcc_name(u32::from_le_bytes(*b"Y16 ") | 1 << 31),
            "Y16-BE"
        );
    }

    #[test]
    fn format_choice_follows_request_then_preference() {
        let offered: Vec<RawFormat> = [*b"GREY", *b"NV12", *b"BA81"]
            .iter()
            .map(|c| RawFormat {
                fourcc: u32::from_le_bytes(*c),
                description: String::new(),
                flags: 0,
            })
            .collect();
        let p = Path::new("/dev/video0");
        assert_eq!(
            choose_format(p, &offered, Some(PixelFormat::Grey)).unwrap(),
            PixelFormat::Grey
        );
        assert_eq!(
            choose_format(p, &offered, Some(PixelFormat::Yuyv)).unwrap(),
            PixelFormat::Nv12
        );
        assert_eq!(choose_format(p, &offered, None).unwrap(), PixelFormat::Nv12);
        let bayer_only = &offered[2..];
        let err = choose_format(p, bayer_only, None).unwrap_err().to_string();
        assert!(err.contains("/dev/video0") && err.contains("BA81"), "{err}");
    }
}
