//! The HTTP endpoints (tiny_http, one thread; loopback unless configured):
//! `/metrics` (Prometheus text), `/healthz` (200 while frames flow, 503
//! with the reason otherwise) and `/snapshot.jpg` (the latest annotated
//! frame; rendered on request, so idle scrapes cost the pipeline nothing).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::Result;
use tiny_http::{Header, Response, Server};

use crate::device::metrics::Metrics;

/// What the HTTP thread shares with the pipeline.
pub struct HttpState {
    pub metrics: Arc<Metrics>,
    /// A frame older than this means the pipeline is stalled.
    pub stall: Duration,
    /// Set by `/snapshot.jpg`; the publish stage renders the next frame.
    pub snapshot_wanted: AtomicBool,
    latest: Mutex<(u64, Option<Arc<Vec<u8>>>)>,
    updated: Condvar,
    pub requests: AtomicU64,
}

impl HttpState {
    pub fn new(metrics: Arc<Metrics>, stall: Duration) -> Self {
        Self {
            metrics,
            stall,
            snapshot_wanted: AtomicBool::new(false),
            latest: Mutex::new((0, None)),
            updated: Condvar::new(),
            requests: AtomicU64::new(0),
        }
    }

    /// The publish stage hands over a freshly annotated JPEG.
    pub fn set_snapshot(&self, jpeg: Arc<Vec<u8>>) {
        let mut l = self.latest.lock().expect("snapshot slot");
        l.0 += 1;
        l.1 = Some(jpeg);
        self.snapshot_wanted.store(false, Ordering::Relaxed);
        self.updated.notify_all();
    }

    /// Asks for a fresh snapshot and waits up to `wait` for it; falls back
    /// to the latest one (e.g. while the camera is away).
    pub fn snapshot(&self, wait: Duration) -> Option<Arc<Vec<u8>>> {
        let l = self.latest.lock().expect("snapshot slot");
        let version = l.0;
        self.snapshot_wanted.store(true, Ordering::Relaxed);
        let (l, _) = self
            .updated
            .wait_timeout_while(l, wait, |l| l.0 == version)
            .expect("snapshot slot");
        l.1.clone()
    }

    /// `Ok` while processed frames are recent, else why not.
    pub fn health(&self) -> Result<String, String> {
        let m = &self.metrics;
        let age = m.last_frame_age();
        if !m.any_frame() {
            return Err(format!(
                "no frame processed yet ({:.1} s since start)",
                age.as_secs_f64()
            ));
        }
        if age > self.stall {
            let camera = if m.camera_connected.load(Ordering::Relaxed) == 0 {
                "camera disconnected"
            } else {
                "camera stalled"
            };
            return Err(format!(
                "{camera}: last frame {:.1} s ago",
                age.as_secs_f64()
            ));
        }
        Ok(format!(
            "ok: {} frames, last {:.0} ms ago",
            m.frames.load(Ordering::Relaxed),
            age.as_secs_f64() * 1000.0
        ))
    }
}

fn header(k: &str, v: &str) -> Header {
    Header::from_bytes(k.as_bytes(), v.as_bytes()).expect("static header is valid")
}

/// Binds `addr` and serves until `stop` is set.
pub fn serve(
    addr: SocketAddr,
    state: Arc<HttpState>,
    stop: Arc<AtomicBool>,
) -> Result<(SocketAddr, JoinHandle<()>)> {
    let server =
        Server::http(addr).map_err(|e| anyhow::anyhow!("--http {addr}: cannot listen: {e}"))?;
    let bound = server.server_addr().to_ip().unwrap_or(addr);
    let handle = std::thread::Builder::new()
        .name("http".into())
        .spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let request = match server.recv_timeout(Duration::from_millis(200)) {
                    Ok(Some(r)) => r,
                    Ok(None) => continue,
                    Err(e) => {
                        tracing::warn!("http: {e}");
                        continue;
                    }
                };
                state.requests.fetch_add(1, Ordering::Relaxed);
                let path = request.url().split('?').next().unwrap_or("").to_string();
                let result = match (request.method(), path.as_str()) {
                    (tiny_http::Method::Get, "/metrics") => {
                        request.respond(Response::from_string(state.metrics.render()).with_header(
                            header("Content-Type", "text/plain; version=0.0.4; charset=utf-8"),
                        ))
                    }
                    (tiny_http::Method::Get, "/healthz") => {
                        let (code, text) = match state.health() {
                            Ok(t) => (200, t),
                            Err(t) => (503, t),
                        };
                        request.respond(
                            Response::from_string(text + "\n")
                                .with_status_code(code)
                                .with_header(header("Content-Type", "text/plain; charset=utf-8")),
                        )
                    }
                    (tiny_http::Method::Get, "/snapshot.jpg") => {
                        match state.snapshot(Duration::from_secs(2)) {
                            Some(jpeg) => request.respond(
                                Response::from_data(jpeg.as_slice())
                                    .with_header(header("Content-Type", "image/jpeg"))
                                    .with_header(header("Cache-Control", "no-store")),
                            ),
                            None => request.respond(
                                Response::from_string("no frame yet\n").with_status_code(503),
                            ),
                        }
                    }
                    _ => request.respond(
                        Response::from_string(
                            "irdistill: GET /metrics, /healthz or /snapshot.jpg\n",
                        )
                        .with_status_code(404),
                    ),
                };
                if let Err(e) = result {
                    tracing::debug!("http: response failed: {e}");
                }
            }
        })?;
    Ok((bound, handle))
}
