//! IP cameras over HTTP(S): an MJPEG stream (`multipart/x-mixed-replace`,
//! what mjpg-streamer, ESP32-CAMs, Axis `/mjpg/video.mjpg` and most IP
//! cameras serve), or a still-image URL (`image/jpeg`) polled at
//! `source.fps`. Each JPEG goes on as an MJPEG frame, decoded later by the
//! converter like a V4L2 MJPEG webcam's.
//!
//! HTTP is ureq's (HTTP/1.1, chunked bodies, redirects, rustls for
//! https); the multipart framing is read here, since no maintained crate
//! reads an endless multipart stream incrementally. Basic and Digest
//! authentication (`http_auth`, the challenge answered once per request)
//! take the credentials from the URL's userinfo; they never reach a log
//! line, and the URL sent has them removed.

use std::io::{BufRead, BufReader, Read};
use std::time::{Duration, SystemTime};

use anyhow::{anyhow, bail, Context, Result};

use super::source::{redact_credentials, SourceConfig};
use super::url_credentials::{split_credentials, UrlCredentials};
use super::{CaptureError, Frame, Opener, Pacer, PixelFormat, Source};

/// A frame larger than this is refused (a 4K JPEG is ~2 MB): a broken or
/// hostile server cannot make the daemon allocate without bound.
const MAX_FRAME_BYTES: usize = 16 << 20;
/// Part headers larger than this end the stream as corrupt.
const MAX_HEADER_BYTES: usize = 16 << 10;

#[derive(Clone)]
pub struct MjpegHttpOpener {
    /// The URL without credentials.
    url: String,
    creds: Option<UrlCredentials>,
    display: String,
    agent: ureq::Agent,
    fps: f32,
}

impl MjpegHttpOpener {
    pub fn new(spec: &str, cfg: &SourceConfig) -> Result<Self> {
        let display = redact_credentials(spec);
        let (url, creds) = split_credentials(spec)
            .with_context(|| format!("source {display}: not a valid URL"))?;
        // Every transport read is bounded, so a silent camera is a timeout
        // rather than a thread stuck in read(2); the body as a whole is not
        // (a stream never ends).
        let timeout = Some(Duration::from_millis(cfg.timeout_ms.max(1)));
        let config = ureq::Agent::config_builder()
            .timeout_connect(timeout)
            .timeout_recv_response(timeout)
            .timeout_per_read(timeout)
            .http_status_as_error(false)
            .user_agent(format!("irdistill/{}", env!("CARGO_PKG_VERSION")))
            .build();
        Ok(Self {
            url: url.to_string(),
            creds,
            display,
            agent: ureq::Agent::new_with_config(config),
            fps: cfg.fps,
        })
    }

    /// GET the URL, answering one Basic or Digest challenge.
    fn get(&self) -> Result<ureq::http::Response<ureq::Body>> {
        let response = self.agent.get(&self.url).call()?;
        if response.status() != 401 {
            return Ok(response);
        }
        let Some(creds) = &self.creds else {
            bail!("the camera asks for a password (401): put it in the URL, http://user:password@host/…");
        };
        let challenge: Vec<&str> = response
            .headers()
            .get_all("www-authenticate")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
        let mut client = http_auth::PasswordClient::try_from(challenge.join(", ").as_str())
            .map_err(|e| anyhow!("the camera's authentication challenge: {e}"))?;
        let uri = url::Url::parse(&self.url)
            .map(|u| match u.query() {
                Some(q) => format!("{}?{q}", u.path()),
                None => u.path().to_string(),
            })
            .unwrap_or_else(|_| "/".into());
        let authorization = client
            .respond(&http_auth::PasswordParams {
                username: &creds.username,
                password: &creds.password,
                uri: &uri,
                method: "GET",
                body: Some(&[]),
            })
            .map_err(|e| anyhow!("answering the camera's authentication challenge: {e}"))?;
        let response = self
            .agent
            .get(&self.url)
            .header("authorization", authorization)
            .call()?;
        if response.status() == 401 {
            bail!("the camera refused the user name and password (401)");
        }
        Ok(response)
    }
}

impl Opener for MjpegHttpOpener {
    fn open(&mut self) -> Result<Box<dyn Source>> {
        let response = self
            .get()
            .with_context(|| format!("source {}", self.display))?;
        let status = response.status();
        if !status.is_success() {
            bail!("source {}: HTTP {status}", self.display);
        }
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let kind =
            stream_kind(&content_type).with_context(|| format!("source {}", self.display))?;
        let reader = BufReader::with_capacity(64 << 10, response.into_body().into_reader());
        Ok(match kind {
            StreamKind::Multipart(boundary) => Box::new(MultipartSource {
                parts: MultipartReader::new(reader, &boundary),
                sequence: 0,
            }),
            StreamKind::Still => Box::new(StillSource {
                opener: self.clone(),
                first: Some(reader),
                pacer: Pacer::new(self.fps),
                sequence: 0,
            }),
        })
    }

    fn name(&self) -> String {
        self.display.clone()
    }

    fn live(&self) -> bool {
        true
    }
}

#[derive(Debug, PartialEq)]
enum StreamKind {
    /// `multipart/x-mixed-replace` with this boundary (without `--`).
    Multipart(String),
    /// One `image/jpeg` per request.
    Still,
}

fn stream_kind(content_type: &str) -> Result<StreamKind> {
    let lower = content_type.to_ascii_lowercase();
    if lower.starts_with("image/jpeg") || lower.starts_with("image/jpg") {
        return Ok(StreamKind::Still);
    }
    if !lower.starts_with("multipart/") {
        bail!("content type {content_type:?} is neither an MJPEG stream (multipart/x-mixed-replace) nor a JPEG image");
    }
    let boundary = content_type
        .split(';')
        .filter_map(|p| p.trim().split_once('='))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("boundary"))
        .map(|(_, v)| v.trim().trim_matches('"'))
        .filter(|b| !b.is_empty())
        .ok_or_else(|| anyhow!("content type {content_type:?} names no boundary"))?;
    // some servers put the delimiter's leading dashes into the parameter
    Ok(StreamKind::Multipart(
        boundary.strip_prefix("--").unwrap_or(boundary).to_string(),
    ))
}

/// Reads the parts of a `multipart/x-mixed-replace` body one by one.
struct MultipartReader<R> {
    reader: R,
    /// `--boundary`.
    delimiter: Vec<u8>,
    line: Vec<u8>,
    /// Whether the delimiter line of the next part was already consumed
    /// (while finding the end of a part without Content-Length).
    at_part_headers: bool,
}

impl<R: BufRead> MultipartReader<R> {
    fn new(reader: R, boundary: &str) -> Self {
        Self {
            reader,
            delimiter: format!("--{boundary}").into_bytes(),
            line: Vec::new(),
            at_part_headers: false,
        }
    }

    /// The next part's body into `out`.
    fn next_part(&mut self, out: &mut Vec<u8>) -> Result<(), CaptureError> {
        if !self.at_part_headers {
            self.skip_to_delimiter()?;
        }
        self.at_part_headers = false;
        let content_length = self.read_part_headers()?;
        out.clear();
        match content_length {
            Some(n) => {
                if n > MAX_FRAME_BYTES {
                    // unread, it would leave the stream's framing lost
                    return Err(CaptureError::Disconnected(format!(
                        "a part of {n} bytes (more than {MAX_FRAME_BYTES})"
                    )));
                }
                out.resize(n, 0);
                self.reader.read_exact(out).map_err(read_error)?;
            }
            None => {
                self.read_until_delimiter(out)?;
                self.at_part_headers = true;
            }
        }
        Ok(())
    }

    /// One line, without its CR LF; end of stream is a disconnect.
    fn read_line(&mut self) -> Result<(), CaptureError> {
        self.line.clear();
        let n = (&mut self.reader)
            .take(MAX_HEADER_BYTES as u64)
            .read_until(b'\n', &mut self.line)
            .map_err(read_error)?;
        if n == 0 {
            return Err(CaptureError::Disconnected(
                "the server ended the stream".into(),
            ));
        }
        if self.line.last() != Some(&b'\n') && n == MAX_HEADER_BYTES {
            return Err(CaptureError::Disconnected(format!(
                "a multipart line longer than {MAX_HEADER_BYTES} bytes"
            )));
        }
        while matches!(self.line.last(), Some(b'\n' | b'\r')) {
            self.line.pop();
        }
        Ok(())
    }

    fn skip_to_delimiter(&mut self) -> Result<(), CaptureError> {
        // bounded: a stream that never shows the boundary is not MJPEG
        for _ in 0..64 {
            self.read_line()?;
            if self.line.starts_with(&self.delimiter) {
                if self.line[self.delimiter.len()..].starts_with(b"--") {
                    return Err(CaptureError::Disconnected(
                        "the server closed the multipart stream".into(),
                    ));
                }
                return Ok(());
            }
        }
        Err(CaptureError::Disconnected(
            "no multipart boundary in the stream".into(),
        ))
    }

    /// The part's headers up to the blank line; its Content-Length if any.
    fn read_part_headers(&mut self) -> Result<Option<usize>, CaptureError> {
        let mut content_length = None;
        for _ in 0..64 {
            self.read_line()?;
            if self.line.is_empty() {
                return Ok(content_length);
            }
            let text = String::from_utf8_lossy(&self.line);
            if let Some((name, value)) = text.split_once(':') {
                if name.trim().eq_ignore_ascii_case("content-length") {
                    content_length = value.trim().parse::<usize>().ok();
                }
            }
        }
        Err(CaptureError::Disconnected(
            "a multipart part with over 64 header lines".into(),
        ))
    }

    /// A part without Content-Length: everything up to the next
    /// delimiter line (whose CR LF belongs to the delimiter).
    fn read_until_delimiter(&mut self, out: &mut Vec<u8>) -> Result<(), CaptureError> {
        loop {
            let start = out.len();
            let n = self.reader.read_until(b'\n', out).map_err(read_error)?;
            if n == 0 {
                return Err(CaptureError::Disconnected(
                    "the server ended the stream".into(),
                ));
            }
            let line = &out[start..];
            let trimmed = line
                .strip_suffix(b"\n")
                .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
                .unwrap_or(line);
            if trimmed.starts_with(&self.delimiter) {
                out.truncate(start);
                // the CR LF before the delimiter is not the image's
                if out.ends_with(b"\r\n") {
                    out.truncate(out.len() - 2);
                } else if out.ends_with(b"\n") {
                    out.truncate(out.len() - 1);
                }
                return Ok(());
            }
            if out.len() > MAX_FRAME_BYTES {
                return Err(CaptureError::Disconnected(format!(
                    "a part longer than {MAX_FRAME_BYTES} bytes without a boundary"
                )));
            }
        }
    }
}

/// A read error: a timeout is a stall; anything else loses the stream.
fn read_error(e: std::io::Error) -> CaptureError {
    let timed_out = matches!(
        e.kind(),
        std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock
    ) || e.to_string().to_ascii_lowercase().contains("timeout");
    if timed_out {
        // the stream's framing is lost mid-part: reconnect
        CaptureError::Disconnected(format!("no data within the timeout ({e})"))
    } else if e.kind() == std::io::ErrorKind::UnexpectedEof {
        CaptureError::Disconnected("the server ended the stream mid-frame".into())
    } else {
        CaptureError::Disconnected(e.to_string())
    }
}

fn fill_mjpeg(frame: &mut Frame, sequence: u64) -> Result<(), CaptureError> {
    // the JPEG's own markers are checked by the decoder; a part that is
    // not even a JPEG start is a corrupt frame, not a lost stream
    if !frame.data.starts_with(&[0xFF, 0xD8]) {
        return Err(CaptureError::Corrupt(format!(
            "a part of {} bytes that is not a JPEG",
            frame.data.len()
        )));
    }
    frame.format = PixelFormat::Mjpeg;
    frame.width_px = 0;
    frame.height_px = 0;
    frame.stride_bytes = 0;
    frame.sequence = sequence;
    frame.captured_at = SystemTime::now();
    Ok(())
}

type BodyReader = BufReader<ureq::BodyReader<'static>>;

struct MultipartSource {
    parts: MultipartReader<BodyReader>,
    sequence: u64,
}

impl Source for MultipartSource {
    fn read_into(&mut self, frame: &mut Frame) -> Result<(), CaptureError> {
        self.parts.next_part(&mut frame.data)?;
        self.sequence += 1;
        fill_mjpeg(frame, self.sequence - 1)
    }

    fn describe(&self) -> String {
        "MJPEG over HTTP (multipart stream, the camera's rate)".into()
    }
}

/// A still-image URL fetched once per frame.
struct StillSource {
    opener: MjpegHttpOpener,
    /// The first response, from `open`.
    first: Option<BodyReader>,
    pacer: Pacer,
    sequence: u64,
}

impl Source for StillSource {
    fn read_into(&mut self, frame: &mut Frame) -> Result<(), CaptureError> {
        self.pacer.wait();
        let mut body = match self.first.take() {
            Some(body) => body,
            None => {
                let response = self
                    .opener
                    .get()
                    .map_err(|e| CaptureError::Disconnected(format!("{e:#}")))?;
                if !response.status().is_success() {
                    return Err(CaptureError::Disconnected(format!(
                        "HTTP {}",
                        response.status()
                    )));
                }
                BufReader::new(response.into_body().into_reader())
            }
        };
        frame.data.clear();
        (&mut body)
            .take(MAX_FRAME_BYTES as u64 + 1)
            .read_to_end(&mut frame.data)
            .map_err(read_error)?;
        if frame.data.len() > MAX_FRAME_BYTES {
            return Err(CaptureError::Corrupt(format!(
                "an image larger than {MAX_FRAME_BYTES} bytes"
            )));
        }
        self.sequence += 1;
        fill_mjpeg(frame, self.sequence - 1)
    }

    fn describe(&self) -> String {
        format!(
            "JPEG stills over HTTP, polled at {}",
            if self.opener.fps > 0.0 {
                format!("{} fps", self.opener.fps)
            } else {
                "the server's pace".into()
            }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_types() {
        assert_eq!(
            stream_kind("multipart/x-mixed-replace; boundary=frame").unwrap(),
            StreamKind::Multipart("frame".into())
        );
        assert_eq!(
            stream_kind("multipart/x-mixed-replace;boundary=\"--myboundary\"").unwrap(),
            StreamKind::Multipart("myboundary".into())
        );
        assert_eq!(stream_kind("image/jpeg").unwrap(), StreamKind::Still);
        let err = stream_kind("text/html; charset=utf-8")
            .unwrap_err()
            .to_string();
        assert!(err.contains("text/html"), "{err}");
        assert!(stream_kind("multipart/x-mixed-replace").is_err());
    }

    fn parts_of(stream: &[u8], boundary: &str) -> Vec<Result<Vec<u8>, String>> {
        let mut reader = MultipartReader::new(stream, boundary);
        let mut out = Vec::new();
        for _ in 0..8 {
            let mut part = Vec::new();
            match reader.next_part(&mut part) {
                Ok(()) => out.push(Ok(part)),
                Err(e) => {
                    out.push(Err(e.to_string()));
                    break;
                }
            }
        }
        out
    }

    #[test]
    fn parts_with_and_without_content_length() {
        let jpeg_a = b"\xFF\xD8abc\r\n--notaboundary\r\n\xFF\xD9".to_vec();
        let jpeg_b = b"\xFF\xD8second\xFF\xD9".to_vec();
        let mut stream = Vec::new();
        stream.extend_from_slice(b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: ");
        stream.extend_from_slice(format!("{}\r\n\r\n", jpeg_a.len()).as_bytes());
        stream.extend_from_slice(&jpeg_a);
        stream.extend_from_slice(b"\r\n--frame\r\nContent-Type: image/jpeg\r\n\r\n");
        stream.extend_from_slice(&jpeg_b);
        stream.extend_from_slice(b"\r\n--frame\r\ncontent-type: image/jpeg\r\n\r\n");
        stream.extend_from_slice(&jpeg_b);
        stream.extend_from_slice(b"\r\n--frame--\r\n");
        let parts = parts_of(&stream, "frame");
        assert_eq!(parts[0], Ok(jpeg_a));
        assert_eq!(parts[1], Ok(jpeg_b.clone()));
        assert_eq!(parts[2], Ok(jpeg_b));
        let end = parts[3].as_ref().unwrap_err();
        assert!(end.contains("disconnected"), "{end}");
    }

    #[test]
    fn truncated_and_oversized_parts_end_the_stream_cleanly() {
        let stream = b"--b\r\nContent-Length: 100\r\n\r\n\xFF\xD8short";
        let parts = parts_of(stream, "b");
        assert!(
            parts[0].as_ref().unwrap_err().contains("mid-frame"),
            "{parts:?}"
        );
        let huge = format!("--b\r\nContent-Length: {}\r\n\r\n", MAX_FRAME_BYTES + 1);
        let parts = parts_of(huge.as_bytes(), "b");
        assert!(
            parts[0].as_ref().unwrap_err().contains("bytes"),
            "{parts:?}"
        );
        let parts = parts_of(b"garbage\r\n".repeat(100).as_slice(), "b");
        assert!(
            parts[0].as_ref().unwrap_err().contains("boundary"),
            "{parts:?}"
        );
    }
}
