//! IP cameras over RTSP: H.264 over RTSP/TCP (interleaved, so it crosses
//! NAT and firewalls and loses no packets to UDP), received by `retina`
//! (pure Rust) and decoded by OpenH264. Decoded pictures are handed on as
//! NV12, which the converter already letterboxes, so a frame costs one
//! plane copy beyond the decode.
//!
//! retina is async; each camera gets its own current-thread tokio runtime,
//! driven by the capture thread inside `open` and `read_into`, so the
//! pipeline stays the same blocking loop it is for V4L2. A lost stream
//! (server restart, network down, the camera silent for three timeouts)
//! is `Disconnected`, and the pipeline reopens it with its usual backoff.
//!
//! Credentials come from the URL's userinfo and go to retina as
//! credentials, never into a log line: the URL retina sees (and so any
//! error it prints) has them removed, and `name()` shows `***`.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{bail, Context, Result};
use futures_util::StreamExt;
use openh264::decoder::Decoder;
use openh264::formats::YUVSource;
use retina::client::{
    Credentials, Demuxed, PlayOptions, Session, SessionGroup, SessionOptions, SetupOptions,
    TcpTransportOptions, Transport,
};
use retina::codec::{CodecItem, FrameFormat, ParametersRef};
use tokio::runtime::Runtime;

use super::source::{redact_credentials, SourceConfig};
use super::url_credentials::split_credentials;
use super::{CaptureError, Frame, Opener, PixelFormat, Source};

/// Consecutive read timeouts after which a silent stream is given up and
/// reconnected (a half-open TCP connection never reports an error).
const SILENT_TIMEOUTS_BEFORE_RECONNECT: u32 = 3;

pub struct RtspOpener {
    /// The URL without credentials.
    url: url::Url,
    creds: Option<Credentials>,
    /// The URL as logs show it.
    display: String,
    runtime: Arc<Runtime>,
    /// Tracks sessions being torn down, across reconnects (some servers
    /// refuse a new session while an old one lingers).
    group: Arc<SessionGroup>,
    timeout: Duration,
}

impl RtspOpener {
    pub fn new(spec: &str, cfg: &SourceConfig) -> Result<Self> {
        let display = redact_credentials(spec);
        let (url, creds) = split_credentials(spec)
            .with_context(|| format!("source {display}: not a valid URL"))?;
        let creds = creds.map(|c| Credentials {
            username: c.username,
            password: c.password,
        });
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .build()
            .context("starting the RTSP client's runtime")?;
        Ok(Self {
            url,
            creds,
            display,
            runtime: Arc::new(runtime),
            group: Arc::new(SessionGroup::default()),
            timeout: Duration::from_millis(cfg.timeout_ms.max(1)),
        })
    }
}

impl Opener for RtspOpener {
    fn open(&mut self) -> Result<Box<dyn Source>> {
        let options = SessionOptions::default()
            .creds(self.creds.clone())
            .session_group(self.group.clone())
            .user_agent(format!("irdistill/{}", env!("CARGO_PKG_VERSION")));
        // Connect, DESCRIBE, SETUP, PLAY: bounded as a whole, so a server
        // that accepts and then says nothing cannot hang the camera thread.
        let connect_timeout = self.timeout.max(Duration::from_secs(5));
        let opened = self.runtime.block_on(async {
            tokio::time::timeout(connect_timeout, start_session(self.url.clone(), options)).await
        });
        let (session, info) = match opened {
            Ok(result) => result.with_context(|| format!("source {}", self.display))?,
            Err(_) => bail!(
                "source {}: no answer within {} ms",
                self.display,
                connect_timeout.as_millis()
            ),
        };
        let decoder = Decoder::new().context("starting the H.264 decoder")?;
        Ok(Box::new(RtspSource {
            runtime: self.runtime.clone(),
            group: self.group.clone(),
            session: Some(session),
            decoder,
            info,
            timeout: self.timeout,
            silent_timeouts: 0,
            sequence: 0,
        }))
    }

    fn name(&self) -> String {
        self.display.clone()
    }

    fn live(&self) -> bool {
        true
    }
}

/// What the server announced for the video stream, for the log.
struct StreamInfo {
    width_px: u32,
    height_px: u32,
    fps: Option<f64>,
}

/// DESCRIBE, SETUP of the first H.264 video stream over TCP, PLAY.
async fn start_session(url: url::Url, options: SessionOptions) -> Result<(Demuxed, StreamInfo)> {
    let mut session = Session::describe(url, options)
        .await
        .context("RTSP DESCRIBE")?;
    let Some((index, stream)) = session
        .streams()
        .iter()
        .enumerate()
        .find(|(_, s)| s.media() == "video" && s.encoding_name() == "h264")
    else {
        let offered: Vec<String> = session
            .streams()
            .iter()
            .map(|s| format!("{}/{}", s.media(), s.encoding_name()))
            .collect();
        bail!(
            "no H.264 video stream (the server offers {}); set the camera's stream to H.264",
            offered.join(", ")
        );
    };
    let info = match stream.parameters() {
        Some(ParametersRef::Video(v)) => StreamInfo {
            width_px: v.pixel_dimensions().0,
            height_px: v.pixel_dimensions().1,
            fps: v.frame_rate().map(|(num, den)| den as f64 / num as f64),
        },
        // parameters can come in-band, with the first key frame
        _ => StreamInfo {
            width_px: 0,
            height_px: 0,
            fps: None,
        },
    };
    session
        .setup(
            index,
            SetupOptions::default()
                .transport(Transport::Tcp(TcpTransportOptions::default()))
                .frame_format(FrameFormat::SIMPLE),
        )
        .await
        .context("RTSP SETUP")?;
    let playing = session
        .play(PlayOptions::default())
        .await
        .context("RTSP PLAY")?;
    let demuxed = playing.demuxed().context("RTSP stream")?;
    Ok((demuxed, info))
}

struct RtspSource {
    runtime: Arc<Runtime>,
    group: Arc<SessionGroup>,
    /// `None` only while being dropped.
    session: Option<Demuxed>,
    decoder: Decoder,
    info: StreamInfo,
    timeout: Duration,
    silent_timeouts: u32,
    sequence: u64,
}

impl Source for RtspSource {
    fn read_into(&mut self, frame: &mut Frame) -> Result<(), CaptureError> {
        let deadline = Instant::now() + self.timeout;
        loop {
            let session = self
                .session
                .as_mut()
                .ok_or_else(|| CaptureError::Disconnected("session closed".into()))?;
            let left = deadline.saturating_duration_since(Instant::now());
            let item = self
                .runtime
                .block_on(async { tokio::time::timeout(left, session.next()).await });
            let video = match item {
                Err(_) => return Err(self.timed_out()),
                Ok(None) => {
                    return Err(CaptureError::Disconnected(
                        "the server ended the stream".into(),
                    ))
                }
                Ok(Some(Err(e))) => return Err(CaptureError::Disconnected(e.to_string())),
                Ok(Some(Ok(CodecItem::VideoFrame(v)))) => v,
                Ok(Some(Ok(_))) => continue,
            };
            self.silent_timeouts = 0;
            match self.decoder.decode(video.data()) {
                Ok(Some(picture)) => {
                    write_nv12(&picture, frame);
                    frame.sequence = self.sequence;
                    frame.captured_at = SystemTime::now();
                    self.sequence += 1;
                    return Ok(());
                }
                // parameter sets alone, or a picture still incomplete
                Ok(None) => continue,
                Err(e) => {
                    let lost = video.loss();
                    return Err(CaptureError::Corrupt(if lost > 0 {
                        format!("H.264 after {lost} lost packets: {e}")
                    } else {
                        format!("H.264: {e}")
                    }));
                }
            }
        }
    }

    fn describe(&self) -> String {
        let size = if self.info.width_px > 0 {
            format!("{}x{}", self.info.width_px, self.info.height_px)
        } else {
            "size in-band".to_string()
        };
        let fps = self
            .info
            .fps
            .map_or("the stream's rate".to_string(), |f| format!("{f:.1} fps"));
        format!("H.264 {size} at {fps} over RTSP/TCP")
    }
}

impl RtspSource {
    /// A read timed out: a stall, or after several in a row a lost stream.
    fn timed_out(&mut self) -> CaptureError {
        self.silent_timeouts += 1;
        if self.silent_timeouts >= SILENT_TIMEOUTS_BEFORE_RECONNECT {
            CaptureError::Disconnected(format!(
                "no data for {} ms",
                self.timeout.as_millis() * self.silent_timeouts as u128
            ))
        } else {
            CaptureError::Timeout
        }
    }
}

impl Drop for RtspSource {
    /// Tears the session down inside its runtime (retina sends TEARDOWN
    /// from a task it spawns there) and waits briefly for it, so that a
    /// reconnect or a restart does not leave a session open on a camera
    /// that allows only a few.
    fn drop(&mut self) {
        let _inside = self.runtime.enter();
        drop(self.session.take());
        let group = self.group.clone();
        let _ = self.runtime.block_on(async {
            tokio::time::timeout(Duration::from_secs(2), group.await_teardown()).await
        });
    }
}

/// Copies a decoded I420 picture into `frame` as NV12 (Y plane, then U and
/// V interleaved), cropped to even dimensions as NV12 needs.
pub fn write_nv12(picture: &impl YUVSource, frame: &mut Frame) {
    let (w, h) = picture.dimensions();
    let (w, h) = (w & !1, h & !1);
    let (y_stride, u_stride, v_stride) = picture.strides();
    let (y, u, v) = (picture.y(), picture.u(), picture.v());
    frame.data.clear();
    frame.data.reserve(w * h * 3 / 2);
    for row in 0..h {
        frame
            .data
            .extend_from_slice(&y[row * y_stride..row * y_stride + w]);
    }
    for row in 0..h / 2 {
        let u_row = &u[row * u_stride..row * u_stride + w / 2];
        let v_row = &v[row * v_stride..row * v_stride + w / 2];
        frame
            .data
            .extend(u_row.iter().zip(v_row).flat_map(|(&u, &v)| [u, v]));
    }
    frame.format = PixelFormat::Nv12;
    frame.width_px = w as u32;
    frame.height_px = h as u32;
    frame.stride_bytes = w as u32;
}

/// The decode cost of an RTSP camera, for `irdistill bench`: `scenes`
/// (RGB, even sizes) encoded once as one H.264 stream by OpenH264 (a key
/// frame, then P-frames), then decoded into an NV12 [`Frame`] `rounds`
/// times over; milliseconds per frame (decode + copy), ascending.
pub fn time_h264_decode(scenes: &[image::RgbImage], rounds: usize) -> Result<Vec<f64>> {
    use openh264::formats::{RgbSliceU8, YUVBuffer};
    let mut encoder = openh264::encoder::Encoder::new().context("H.264 encoder")?;
    let mut stream = Vec::new();
    for scene in scenes {
        let (w, h) = (scene.width() as usize, scene.height() as usize);
        let yuv = YUVBuffer::from_rgb_source(RgbSliceU8::new(scene.as_raw(), (w, h)));
        stream.push(encoder.encode(&yuv).context("H.264 encoding")?.to_vec());
    }
    let mut frame = Frame::empty();
    let mut ms = Vec::with_capacity(rounds * stream.len());
    for _ in 0..rounds {
        let mut decoder = Decoder::new().context("H.264 decoder")?;
        for access_unit in &stream {
            let t0 = Instant::now();
            if let Some(picture) = decoder.decode(access_unit).context("H.264 decoding")? {
                write_nv12(&picture, &mut frame);
            }
            ms.push(t0.elapsed().as_secs_f64() * 1e3);
        }
    }
    ms.sort_by(f64::total_cmp);
    Ok(ms)
}

#[cfg(test)]
mod tests {
    use super::*;
    use openh264::encoder::Encoder;
    use openh264::formats::YUVBuffer;

    /// An H.264 round trip: a picture with a known colour per quadrant,
    /// encoded by OpenH264, decoded and copied as NV12, converted back.
    #[test]
    fn decoded_h264_becomes_nv12_with_the_right_colours() {
        let (w, h) = (64usize, 48usize);
        // quadrant colours in limited-range YUV: (Y, U, V)
        let quadrant = |x: usize, y: usize| match (x < w / 2, y < h / 2) {
            (true, true) => (180u8, 128u8, 128u8), // light grey
            (false, true) => (81, 90, 240),        // red
            (true, false) => (145, 54, 34),        // green
            (false, false) => (41, 240, 110),      // blue
        };
        let mut yuv = vec![0u8; w * h * 3 / 2];
        let (yp, uv) = yuv.split_at_mut(w * h);
        let (up, vp) = uv.split_at_mut(w * h / 4);
        for y in 0..h {
            for x in 0..w {
                let (yy, u, v) = quadrant(x, y);
                yp[y * w + x] = yy;
                if x % 2 == 0 && y % 2 == 0 {
                    up[(y / 2) * (w / 2) + x / 2] = u;
                    vp[(y / 2) * (w / 2) + x / 2] = v;
                }
            }
        }
        let source = YUVBuffer::from_vec(yuv, w, h);
        let mut encoder = Encoder::new().unwrap();
        let bitstream = encoder.encode(&source).unwrap().to_vec();
        let mut decoder = Decoder::new().unwrap();
        let picture = decoder.decode(&bitstream).unwrap().expect("a picture");
        let mut frame = Frame::empty();
        write_nv12(&picture, &mut frame);
        assert_eq!(frame.format, PixelFormat::Nv12);
        assert_eq!((frame.width_px, frame.height_px), (w as u32, h as u32));
        assert_eq!(frame.data.len(), w * h * 3 / 2);
        let rgb = crate::device::convert::Converter::new()
            .to_rgb_image(&frame)
            .unwrap();
        // the centre of each quadrant, within the codec's loss
        for (x, y) in [(16, 12), (48, 12), (16, 36), (48, 36)] {
            let (yy, u, v) = quadrant(x, y);
            let want = crate::device::convert::yuv_to_rgb(yy, u, v);
            let got = rgb.get_pixel(x as u32, y as u32).0;
            let close = got
                .iter()
                .zip(want)
                .all(|(&a, b)| (a as f32 - b).abs() <= 12.0);
            assert!(close, "({x}, {y}): decoded {got:?}, encoded {want:?}");
        }
    }
}
