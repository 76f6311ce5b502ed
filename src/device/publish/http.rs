//! The HTTP endpoints (tiny_http; loopback unless configured): `/metrics`
//! (Prometheus text), `/healthz` (200 while frames flow, 503 with the
//! reason otherwise), `/events` (the last object events, JSON) and
//! `/snapshot.jpg` (the latest annotated frame; rendered on request, so
//! idle scrapes cost the pipeline nothing).
//!
//! No client can stall the small answers: two threads answer `/metrics`,
//! `/healthz` and `/events` (a few kB, which fit in the socket's send
//! buffer, so even a client that never reads cannot block them), and
//! snapshots go to two other threads through a short queue (full: 503 at
//! once). Every connection has a write time-out (set on the listening
//! socket, which accepted ones inherit), so a client that stops reading is
//! dropped rather than holding a thread; idle and trickling connections
//! wait in tiny_http's own connection threads, never in ours. A request
//! with a body (which tiny_http would read to its end when answered) goes
//! to the snapshot threads' queue too. With
//! `http.token`, everything but `/healthz` needs `Authorization: Bearer`.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{Context, Result};
use crossbeam_channel::{Receiver, Sender, TrySendError};
use tiny_http::{Header, Request, Response, Server};

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
    /// The last object events (JSON), oldest first.
    events: Mutex<VecDeque<String>>,
}

/// Object events `/events` keeps.
pub const EVENTS_KEPT: usize = 100;

impl HttpState {
    pub fn new(metrics: Arc<Metrics>, stall: Duration) -> Self {
        Self {
            metrics,
            stall,
            snapshot_wanted: AtomicBool::new(false),
            latest: Mutex::new((0, None)),
            updated: Condvar::new(),
            requests: AtomicU64::new(0),
            events: Mutex::new(VecDeque::with_capacity(EVENTS_KEPT)),
        }
    }

    /// Keeps an object event for `/events` (the oldest goes beyond
    /// [`EVENTS_KEPT`]).
    pub fn push_event(&self, json: &str) {
        let mut e = self.events.lock().unwrap_or_else(PoisonError::into_inner);
        if e.len() == EVENTS_KEPT {
            e.pop_front();
        }
        e.push_back(json.to_string());
    }

    /// The last `n` events as a JSON array, oldest first.
    pub fn events_json(&self, n: usize) -> String {
        let e = self.events.lock().unwrap_or_else(PoisonError::into_inner);
        let skip = e.len().saturating_sub(n);
        let items: Vec<&str> = e.iter().skip(skip).map(String::as_str).collect();
        format!("[{}]\n", items.join(","))
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

/// How the server runs (from `[http]`).
#[derive(Debug, Clone)]
pub struct HttpOptions {
    /// Needed (`Authorization: Bearer …`) for everything but `/healthz`.
    pub token: Option<String>,
    /// A client that does not read for this long is dropped.
    pub write_timeout: Duration,
    /// This daemon's camera (`/snapshot.jpg?camera=…`).
    pub camera: String,
}

/// Threads answering the small endpoints; threads sending snapshots, and
/// how many snapshot requests may wait for them.
const FAST_THREADS: usize = 2;
const SNAPSHOT_THREADS: usize = 2;
const SNAPSHOT_QUEUE: usize = 4;

/// Binds `addr` (with the connections' time-outs) and serves until `stop`
/// is set; the returned thread ends when every server thread has.
pub fn serve(
    addr: SocketAddr,
    state: Arc<HttpState>,
    stop: Arc<AtomicBool>,
    opts: HttpOptions,
) -> Result<(SocketAddr, JoinHandle<()>)> {
    let listener = listen(addr, &opts).with_context(|| format!("--http {addr}: cannot listen"))?;
    let server = Arc::new(
        Server::from_listener(listener, None)
            .map_err(|e| anyhow::anyhow!("--http {addr}: cannot serve: {e}"))?,
    );
    let bound = server.server_addr().to_ip().unwrap_or(addr);
    let opts = Arc::new(opts);
    let (snap_tx, snap_rx) = crossbeam_channel::bounded::<Request>(SNAPSHOT_QUEUE);
    let mut threads = Vec::new();
    for i in 0..FAST_THREADS {
        let (server, state, stop, opts, snap_tx) = (
            server.clone(),
            state.clone(),
            stop.clone(),
            opts.clone(),
            snap_tx.clone(),
        );
        threads.push(
            std::thread::Builder::new()
                .name(format!("http-{i}"))
                .spawn(move || accept_loop(&server, &state, &stop, &opts, &snap_tx))?,
        );
    }
    drop(snap_tx);
    for i in 0..SNAPSHOT_THREADS {
        let (state, rx) = (state.clone(), snap_rx.clone());
        threads.push(
            std::thread::Builder::new()
                .name(format!("http-snap-{i}"))
                .spawn(move || snapshot_loop(&state, &rx))?,
        );
    }
    let handle = std::thread::Builder::new()
        .name("http".into())
        .spawn(move || {
            for t in threads {
                let _ = t.join();
            }
        })?;
    Ok((bound, handle))
}

/// A listening socket whose accepted connections inherit its write
/// time-out (Linux copies it on accept). Not a read time-out: on a
/// listening socket that one also bounds `accept`, and tiny_http stops
/// serving at the first failed accept.
fn listen(addr: SocketAddr, opts: &HttpOptions) -> Result<std::net::TcpListener> {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    socket.set_write_timeout(Some(opts.write_timeout))?;
    socket.bind(&addr.into())?;
    socket.listen(128)?;
    Ok(socket.into())
}

/// Takes requests until `stop`: answers the small endpoints here, queues
/// snapshots for the snapshot threads.
fn accept_loop(
    server: &Server,
    state: &HttpState,
    stop: &AtomicBool,
    opts: &HttpOptions,
    snapshots: &Sender<Request>,
) {
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
        if has_body(&request) {
            // answering it reads the body: not on this thread
            if let Err(TrySendError::Full(r) | TrySendError::Disconnected(r)) =
                snapshots.try_send(request)
            {
                drop(std::thread::spawn(move || {
                    respond(r, text_response(503, "busy\n".into()))
                }));
            }
            continue;
        }
        let url = request.url().to_string();
        let (path, query) = url.split_once('?').unwrap_or((url.as_str(), ""));
        let get = *request.method() == tiny_http::Method::Get;
        let open = get && path == "/healthz";
        if !open && !authorised(&request, opts) {
            let r = Response::from_string("irdistill: Authorization: Bearer <http.token> needed\n")
                .with_status_code(401)
                .with_header(header("WWW-Authenticate", "Bearer"));
            respond(request, r);
            continue;
        }
        match (get, path) {
            (true, "/metrics") => respond(
                request,
                Response::from_string(state.metrics.render()).with_header(header(
                    "Content-Type",
                    "text/plain; version=0.0.4; charset=utf-8",
                )),
            ),
            (true, "/healthz") => {
                let (code, text) = match state.health() {
                    Ok(t) => (200, t),
                    Err(t) => (503, t),
                };
                respond(request, text_response(code, text + "\n"));
            }
            (true, "/events") => {
                let n = query_value(query, "limit")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(EVENTS_KEPT);
                respond(
                    request,
                    Response::from_string(state.events_json(n))
                        .with_header(header("Content-Type", "application/json")),
                );
            }
            (true, "/snapshot.jpg") => {
                if query_value(query, "camera").is_some_and(|c| c != opts.camera) {
                    let text = format!("no such camera (this is {})\n", opts.camera);
                    respond(request, text_response(404, text));
                    continue;
                }
                match snapshots.try_send(request) {
                    Ok(()) => {}
                    Err(TrySendError::Full(r) | TrySendError::Disconnected(r)) => respond(
                        r,
                        text_response(503, "busy: too many snapshot requests\n".into()),
                    ),
                }
            }
            _ => respond(
                request,
                text_response(
                    404,
                    "irdistill: GET /metrics, /healthz, /events or /snapshot.jpg\n".into(),
                ),
            ),
        }
    }
}

/// Sends snapshots (and answers requests with a body: 405) until the
/// accepting threads are gone.
fn snapshot_loop(state: &HttpState, requests: &Receiver<Request>) {
    for request in requests {
        if has_body(&request) {
            respond(request, text_response(405, "irdistill: GET only\n".into()));
            continue;
        }
        let response = match state.snapshot(Duration::from_secs(2)) {
            Some(jpeg) => Response::from_data(jpeg.as_slice())
                .with_header(header("Content-Type", "image/jpeg"))
                .with_header(header("Cache-Control", "no-store"))
                .boxed(),
            None => text_response(503, "no frame yet\n".into()).boxed(),
        };
        respond(request, response);
    }
}

fn text_response(code: u16, text: String) -> Response<std::io::Cursor<Vec<u8>>> {
    Response::from_string(text)
        .with_status_code(code)
        .with_header(header("Content-Type", "text/plain; charset=utf-8"))
}

fn respond<R: std::io::Read>(request: Request, response: Response<R>) {
    if let Err(e) = request.respond(response) {
        tracing::debug!("http: response failed: {e}");
    }
}

/// Whether the request announces a body (a length above 0, or chunks).
fn has_body(request: &Request) -> bool {
    request.body_length().is_some_and(|n| n > 0)
        || request
            .headers()
            .iter()
            .any(|h| h.field.equiv("Transfer-Encoding"))
}

/// Whether the request carries the configured token (always, when none
/// is configured). Compared in constant time.
fn authorised(request: &Request, opts: &HttpOptions) -> bool {
    let Some(token) = &opts.token else {
        return true;
    };
    let given = request
        .headers()
        .iter()
        .find(|h| h.field.equiv("Authorization"))
        .and_then(|h| {
            // the scheme is case-insensitive (RFC 7235)
            let v = h.value.as_str();
            v.get(..7)
                .filter(|s| s.eq_ignore_ascii_case("bearer "))
                .map(|_| &v[7..])
        })
        .unwrap_or("");
    given.len() == token.len()
        && given
            .bytes()
            .zip(token.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

/// `key`'s value in a query string (`a=1&b=2`), not percent-decoded.
fn query_value<'a>(query: &'a str, key: &str) -> Option<&'a str> {
    query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == key)
        .map(|(_, v)| v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_keep_the_last_ones_and_queries_parse() {
        let state = HttpState::new(
            Arc::new(Metrics::new(vec![], vec![])),
            Duration::from_secs(1),
        );
        assert_eq!(state.events_json(10), "[]\n");
        for i in 0..EVENTS_KEPT + 5 {
            state.push_event(&format!("{{\"n\":{i}}}"));
        }
        let all: Vec<serde_json::Value> = serde_json::from_str(&state.events_json(1000)).unwrap();
        assert_eq!(all.len(), EVENTS_KEPT);
        assert_eq!(all[0]["n"], 5);
        let last: Vec<serde_json::Value> = serde_json::from_str(&state.events_json(2)).unwrap();
        assert_eq!(last.len(), 2);
        assert_eq!(last[1]["n"], EVENTS_KEPT + 4);
        assert_eq!(query_value("camera=yard&limit=3", "limit"), Some("3"));
        assert_eq!(query_value("camera=yard", "limit"), None);
    }
}
