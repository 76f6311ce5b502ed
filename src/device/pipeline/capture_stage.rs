//! The capture stage: reads frames from the source into pooled jobs and
//! owns the camera's life cycle. A camera that cannot be opened, or is
//! lost, is reopened with capped exponential backoff; each state change
//! (open, unavailable, lost, reconnected, stalled, flowing again, corrupt
//! frames) is logged once rather than per frame, and reconnects, timeouts
//! and corrupt frames are counted.

use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;

use super::jobs::{free_job, Job, Queue};
use super::{spawn_worker, StageContext, Worker};
use crate::device::capture::{sleep_unless, CaptureError, Opener, Source};
use crate::device::config::Config;

/// How capture waits for a lost camera and for a frame.
#[derive(Debug, Clone, Copy)]
pub(super) struct CaptureSettings {
    pub reconnect_initial: Duration,
    pub reconnect_max: Duration,
    /// How long a read may wait before the camera counts as stalled.
    pub timeout: Duration,
}

impl CaptureSettings {
    pub fn new(cfg: &Config) -> Self {
        Self {
            reconnect_initial: Duration::from_millis(cfg.reconnect.initial_ms),
            reconnect_max: Duration::from_millis(cfg.reconnect.max_ms),
            timeout: Duration::from_millis(cfg.source.timeout_ms),
        }
    }
}

/// Starts the capture thread: frames from `opener`'s source, in jobs taken
/// from `job_pool`, go to `out` until the source ends or the pipeline stops.
pub(super) fn spawn(
    mut opener: Box<dyn Opener>,
    job_pool: Receiver<Box<Job>>,
    out: Queue,
    settings: CaptureSettings,
    ctx: StageContext,
) -> std::io::Result<Worker> {
    spawn_worker("capture", move || {
        let stage = CaptureStage {
            name: opener.name(),
            job_pool: &job_pool,
            out: &out,
            ctx: &ctx,
            settings,
        };
        stage.run(opener.as_mut());
    })
}

/// How a run of reads from one opened source ended.
enum ReadsEnd {
    /// The pipeline stops (stop flag, downstream closed, end of stream).
    Stop,
    /// The camera went away: reopen it after the backoff.
    Lost,
}

/// Capped exponential backoff between attempts to (re)open the camera.
struct Backoff {
    initial: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    fn new(settings: &CaptureSettings) -> Self {
        Self {
            initial: settings.reconnect_initial,
            max: settings.reconnect_max,
            next: settings.reconnect_initial,
        }
    }

    /// Sleeps the current delay and doubles it (up to the cap); true when
    /// `stop` was set during the sleep.
    fn wait(&mut self, stop: &AtomicBool) -> bool {
        if sleep_unless(stop, self.next) {
            return true;
        }
        self.next = (self.next * 2).min(self.max);
        false
    }

    fn reset(&mut self) {
        self.next = self.initial;
    }
}

/// What the log already said about the camera's connection, so that each
/// state change is logged once.
#[derive(Default)]
struct ConnectionLog {
    ever_open: bool,
    lost: bool,
    unavailable_logged: bool,
}

/// What the log already said about the frames of one opened source.
#[derive(Default)]
struct ReadLog {
    stalled: bool,
    corrupt_logged: bool,
}

/// The capture thread's view of the pipeline.
struct CaptureStage<'a> {
    /// The source's name in logs.
    name: String,
    job_pool: &'a Receiver<Box<Job>>,
    out: &'a Queue,
    ctx: &'a StageContext,
    settings: CaptureSettings,
}

impl CaptureStage<'_> {
    /// Opens the source (again after a loss) and reads from it until the
    /// pipeline stops.
    fn run(&self, opener: &mut dyn Opener) {
        let (metrics, stop) = (&self.ctx.metrics, &*self.ctx.stop);
        let mut backoff = Backoff::new(&self.settings);
        let mut log = ConnectionLog::default();
        while !stop.load(Relaxed) {
            let source = match opener.open() {
                Ok(s) => s,
                Err(e) => {
                    self.unavailable(&e, &mut log);
                    if backoff.wait(stop) {
                        break;
                    }
                    continue;
                }
            };
            self.opened(source.as_ref(), &mut log);
            backoff.reset();
            match self.read_frames(source) {
                ReadsEnd::Stop => break,
                ReadsEnd::Lost => {
                    log.lost = true;
                    if backoff.wait(stop) {
                        break;
                    }
                }
            }
        }
        metrics.camera_connected.store(0, Relaxed);
    }

    /// The source could not be opened: logged once, then at debug level.
    fn unavailable(&self, e: &anyhow::Error, log: &mut ConnectionLog) {
        let name = &self.name;
        self.ctx.metrics.camera_connected.store(0, Relaxed);
        if !log.unavailable_logged {
            log.unavailable_logged = true;
            tracing::warn!(
                "camera {name}: unavailable: {e:#}; retrying with backoff ({} ms doubling up to {} ms)",
                self.settings.reconnect_initial.as_millis(),
                self.settings.reconnect_max.as_millis()
            );
        } else {
            tracing::debug!("camera {name}: still unavailable: {e:#}");
        }
    }

    /// The source is open: a reopening counts as a reconnect.
    fn opened(&self, source: &dyn Source, log: &mut ConnectionLog) {
        let (name, metrics) = (&self.name, &self.ctx.metrics);
        metrics.camera_connected.store(1, Relaxed);
        if log.lost {
            metrics.camera_reconnects.fetch_add(1, Relaxed);
            tracing::info!("camera {name}: reconnected: {}", source.describe());
        } else if !log.ever_open {
            tracing::info!("camera {name}: open: {}", source.describe());
        }
        log.ever_open = true;
        log.unavailable_logged = false;
    }

    /// Reads frames into free jobs and queues them until the source fails
    /// for good; the source is closed on return.
    fn read_frames(&self, mut source: Box<dyn Source>) -> ReadsEnd {
        let (name, metrics) = (&self.name, &self.ctx.metrics);
        let mut log = ReadLog::default();
        loop {
            let Some(mut job) = free_job(self.job_pool, &self.ctx.stop) else {
                return ReadsEnd::Stop;
            };
            match source.read_into(&mut job.frame) {
                Ok(()) => {
                    if log.stalled {
                        log.stalled = false;
                        tracing::info!("camera {name}: frames flowing again");
                    }
                    metrics.frames_captured.fetch_add(1, Relaxed);
                    job.captured = Instant::now();
                    if !self.out.send(job, &self.ctx.pools, metrics) {
                        return ReadsEnd::Stop;
                    }
                }
                Err(e) => {
                    self.ctx.pools.recycle(job);
                    if let Some(end) = self.read_failed(e, &mut log) {
                        return end;
                    }
                }
            }
        }
    }

    /// Counts and logs a failed read; `Some` when reading must end.
    fn read_failed(&self, e: CaptureError, log: &mut ReadLog) -> Option<ReadsEnd> {
        let (name, metrics) = (&self.name, &self.ctx.metrics);
        match e {
            CaptureError::Timeout => {
                metrics.capture_timeouts.fetch_add(1, Relaxed);
                if !log.stalled {
                    log.stalled = true;
                    tracing::warn!(
                        "camera {name}: stalled: no frame within {} ms",
                        self.settings.timeout.as_millis()
                    );
                }
                None
            }
            CaptureError::Corrupt(why) => {
                metrics.frames_corrupt.fetch_add(1, Relaxed);
                if !log.corrupt_logged {
                    log.corrupt_logged = true;
                    tracing::warn!("camera {name}: skipping corrupt frames (counted in irdistill_frames_corrupt_total): {why}");
                } else {
                    tracing::debug!("camera {name}: corrupt frame: {why}");
                }
                None
            }
            CaptureError::Disconnected(why) => {
                metrics.camera_connected.store(0, Relaxed);
                tracing::warn!("camera {name}: lost: {why}; reconnecting");
                Some(ReadsEnd::Lost)
            }
            CaptureError::EndOfStream => {
                tracing::info!("source {name}: end of stream");
                Some(ReadsEnd::Stop)
            }
        }
    }
}
