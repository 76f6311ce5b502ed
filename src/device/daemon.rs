//! Wires a validated config into a running daemon: loads the model, opens
//! the source, starts the HTTP endpoints and the outputs, runs the
//! pipeline and sums the run up in a [`Report`]. It lives in the library,
//! not the `irdistill` binary, so that `run`, `demo` and `bench` share one
//! start-up path and the binary only parses arguments and prints.
//! [`StartupError`] marks the failures a restart cannot fix.

use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{Context, Result};

use crate::device::capture;
use crate::device::config::{parse_listen, Config};
use crate::device::events::EventTracker;
use crate::device::infer::{Detector, ModelInfo, ModelOptions};
use crate::device::metrics::Metrics;
use crate::device::model_path::resolve_model;
use crate::device::pipeline::{self, FrameEvent, Observer, Outputs, RunSummary};
use crate::device::publish::http::{self, HttpState};
use crate::device::publish::jsonl::JsonlWriter;
use crate::device::publish::snapshot::SnapshotWriter;
use crate::device::report::{condition_map, Report, Tally};
use crate::device::service;
use crate::shared::condition::Condition;

/// Marks an error that restarting cannot fix (invalid configuration,
/// unusable model): `irdistill` then exits with [`EXIT_CONFIG`], which the
/// systemd unit excludes from restarts (`RestartPreventExitStatus=`).
#[derive(Debug)]
pub struct StartupError;

impl std::fmt::Display for StartupError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("cannot start")
    }
}

/// `EX_CONFIG` from sysexits.h.
pub const EXIT_CONFIG: i32 = 78;

/// Per-frame console output of a caller (the demo), with the frame's
/// condition when the source is the synthetic camera.
pub type Printer = Box<dyn FnMut(&FrameEvent, Option<Condition>) + Send>;

/// Loads the model named by the config (or the default one).
pub fn load_model(cfg: &Config) -> Result<Detector> {
    let path = resolve_model(None, cfg.model.path.as_deref())?;
    let opts = ModelOptions {
        imgsz: cfg.model.imgsz.map(|s| (s, s)),
        names: cfg.model.names.clone(),
        threads: cfg.model.threads,
    };
    Detector::load(&path, &opts)
}

/// Re-reads and validates the configuration (file and flags), for SIGHUP.
pub type ConfigLoader = Box<dyn FnMut() -> Result<Config> + Send>;

/// Runs the daemon on a validated config until it stops (signal, source
/// end, `pipeline.max_frames`); `printer` sees every published frame.
/// With `reload`, SIGHUP re-reads the configuration through it and
/// applies what can change without dropping the camera; without, SIGHUP
/// stops the run like SIGTERM.
pub fn execute(
    cfg: &Config,
    printer: Option<Printer>,
    reload: Option<ConfigLoader>,
) -> Result<Report> {
    // Signals first: a SIGTERM while the model loads still stops cleanly.
    let stop = service::stop_flag(reload.is_none())?;
    let reload = match reload {
        Some(load) => Some(pipeline::Reload {
            requested: service::reload_flag()?,
            load,
            open: Box::new(reopen_outputs),
        }),
        None => None,
    };
    let opener = capture::opener(&cfg.source).context(StartupError)?;
    let detector = load_model(cfg).context(StartupError)?;
    let info = detector.info().clone();
    pipeline::detect_filter(cfg, &info).context(StartupError)?;
    log_model(&info);
    let metrics = Arc::new(daemon_metrics(cfg, &info));
    let mut http = start_http(cfg, &metrics)?;
    let tally = Arc::new(Mutex::new(Tally::default()));
    let observer = tally_observer(cfg, tally.clone(), printer)?;
    let outputs = open_outputs(cfg, http.state.take(), observer)?;
    let summary = pipeline::run(
        cfg,
        opener,
        detector,
        outputs,
        metrics.clone(),
        stop,
        reload,
    )?;
    http.shut_down();
    log_done(&summary);
    let tally = std::mem::take(&mut *tally.lock().expect("tally"));
    Ok(Report::from_run(cfg, &info, &summary, &metrics, tally))
}

fn log_model(info: &ModelInfo) {
    tracing::info!(
        "model {}: input {}x{}, classes {}, {} anchors, {} threads",
        info.path.display(),
        info.input_w_px,
        info.input_h_px,
        info.names.join(", "),
        info.anchors,
        info.threads
    );
    if !info.thread_timings_ms.is_empty() {
        let timed: Vec<String> = info
            .thread_timings_ms
            .iter()
            .map(|(t, ms)| format!("{t}: {ms:.2} ms"))
            .collect();
        tracing::info!(
            "model.threads auto: median time per run by thread count {}; using {}",
            timed.join(", "),
            info.threads
        );
    }
}

/// The run's counters, labelled with the version, camera and model.
fn daemon_metrics(cfg: &Config, info: &ModelInfo) -> Metrics {
    Metrics::new(
        info.names.clone(),
        vec![
            ("version".into(), env!("CARGO_PKG_VERSION").into()),
            ("camera".into(), cfg.camera.name.clone()),
            ("model".into(), info.path.display().to_string()),
            ("threads".into(), info.threads.to_string()),
        ],
    )
    .with_thread_timings(&info.thread_timings_ms)
}

/// The HTTP endpoints of a run: the state the publish stage feeds (until
/// taken for the outputs) and the server thread with its stop flag.
struct HttpEndpoints {
    /// `None` when `http.listen` is not configured (or once taken).
    state: Option<Arc<HttpState>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl HttpEndpoints {
    /// Stops the server thread and waits for it.
    fn shut_down(self) {
        self.stop.store(true, Relaxed);
        if let Some(h) = self.thread {
            let _ = h.join();
        }
    }
}

/// Serves `/metrics`, `/healthz` and `/snapshot.jpg` when `http.listen`
/// is configured.
fn start_http(cfg: &Config, metrics: &Arc<Metrics>) -> Result<HttpEndpoints> {
    let stop = Arc::new(AtomicBool::new(false));
    let Some(listen) = &cfg.http.listen else {
        return Ok(HttpEndpoints {
            state: None,
            stop,
            thread: None,
        });
    };
    let addr = parse_listen(listen).context("--http")?;
    let state = Arc::new(HttpState::new(
        metrics.clone(),
        Duration::from_millis(cfg.pipeline.stall_ms),
    ));
    let opts = http::HttpOptions {
        token: cfg.http.bearer_token()?,
        write_timeout: Duration::from_millis(cfg.http.write_timeout_ms),
        camera: cfg.camera.name.clone(),
    };
    let token = if opts.token.is_some() {
        ", bearer token required but for /healthz"
    } else {
        ""
    };
    let (bound, handle) = http::serve(addr, state.clone(), stop.clone(), opts)?;
    tracing::info!(
        "http: listening on http://{bound} (/metrics, /healthz, /events, /snapshot.jpg{token})"
    );
    Ok(HttpEndpoints {
        state: Some(state),
        stop,
        thread: Some(handle),
    })
}

/// The observer that adds every published frame to `tally` (with its
/// condition, for the synthetic camera) and hands it to `printer`.
fn tally_observer(
    cfg: &Config,
    tally: Arc<Mutex<Tally>>,
    mut printer: Option<Printer>,
) -> Result<Observer> {
    let conditions = condition_map(cfg)?;
    // the current scene's boxes, painted again only when the scene changes
    let mut truth: Option<((u64, u32), Vec<crate::shared::bbox::Label>)> = None;
    Ok(Box::new(move |event: &FrameEvent| {
        let condition = conditions
            .as_ref()
            .map(|s| s.condition_of(event.message.frame));
        if let Some(s) = conditions.as_ref() {
            // the same boxes while neither scene nor pan changes
            let f = event.message.frame;
            let key = (s.scene_of(f), s.pan_offset_px(f));
            if truth.as_ref().map(|(k, _)| *k) != Some(key) {
                truth = Some((key, s.labels_of_frame(f)));
            }
        }
        let labels = truth.as_ref().map(|(_, l)| l.as_slice());
        tally
            .lock()
            .expect("tally")
            .record(event, condition, labels);
        if let Some(p) = printer.as_mut() {
            p(event, condition);
        }
    }))
}

/// Opens the configured outputs: JSON lines, MQTT, the snapshot folder,
/// and hands them the HTTP state and the observer.
fn open_outputs(cfg: &Config, http: Option<Arc<HttpState>>, observer: Observer) -> Result<Outputs> {
    Ok(Outputs {
        camera: cfg.camera.name.clone(),
        jsonl: open_jsonl(cfg.output.jsonl.as_deref())?,
        events_jsonl: open_jsonl(cfg.output.events_jsonl.as_deref())
            .context("output.events_jsonl")?,
        #[cfg(feature = "mqtt")]
        mqtt: start_mqtt(cfg)?,
        snapshots: open_snapshots(cfg)?,
        snapshot_quality: cfg.snapshots.jpeg_quality,
        zones: cfg.zones(),
        http,
        observer: Some(observer),
        events: cfg
            .events
            .active(cfg.track.enabled)
            .then(|| EventTracker::new(cfg.events.clone(), &cfg.camera.name, cfg.zones())),
    })
}

/// The outputs of a reloaded configuration `new` (the MQTT connection is
/// replaced only when `[mqtt]` changed).
fn reopen_outputs(old: &Config, new: &Config) -> Result<pipeline::OutputsUpdate> {
    #[cfg(not(feature = "mqtt"))]
    let _ = old;
    Ok(pipeline::OutputsUpdate {
        jsonl: open_jsonl(new.output.jsonl.as_deref())?,
        events_jsonl: open_jsonl(new.output.events_jsonl.as_deref())
            .context("output.events_jsonl")?,
        #[cfg(feature = "mqtt")]
        mqtt: if old.mqtt != new.mqtt {
            Some(start_mqtt(new)?)
        } else {
            None
        },
        snapshots: open_snapshots(new)?,
        snapshot_quality: new.snapshots.jpeg_quality,
        zones: new.zones(),
        events: new
            .events
            .active(new.track.enabled)
            .then(|| new.events.clone()),
    })
}

fn open_jsonl(target: Option<&str>) -> Result<Option<JsonlWriter>> {
    target.map(JsonlWriter::open).transpose()
}

#[cfg(feature = "mqtt")]
fn start_mqtt(cfg: &Config) -> Result<Option<crate::device::publish::mqtt::MqttPublisher>> {
    let Some(m) = &cfg.mqtt else {
        return Ok(None);
    };
    let p = crate::device::publish::mqtt::MqttPublisher::start(m)
        .with_context(|| format!("mqtt {}", m.url))?;
    tracing::info!("mqtt: publishing to {}", m.url);
    Ok(Some(p))
}

fn open_snapshots(cfg: &Config) -> Result<Option<SnapshotWriter>> {
    let s = &cfg.snapshots;
    s.dir
        .as_deref()
        .map(|d| {
            SnapshotWriter::new(
                d,
                Duration::from_millis(s.min_interval_ms),
                s.max_total_bytes,
            )
            .map(|w| w.with_min_interval_frames(s.min_interval_frames))
        })
        .transpose()
}

fn log_done(summary: &RunSummary) {
    tracing::info!(
        "done: {} frames processed in {:.1} s ({:.1} fps), {} captured, {} dropped, {} corrupt, {} timeouts, {} reconnects",
        summary.frames,
        summary.elapsed.as_secs_f64(),
        summary.fps(),
        summary.frames_captured,
        summary.frames_dropped,
        summary.frames_corrupt,
        summary.capture_timeouts,
        summary.camera_reconnects
    );
}
