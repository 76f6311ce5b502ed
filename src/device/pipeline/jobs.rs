//! What travels between the stages and how it travels: a [`Job`] per frame,
//! the fixed [`Pools`] every job and input tensor comes from and goes back
//! to (so memory does not grow with load), and the bounded [`Queue`]s that
//! join the stages (a live source drops the oldest queued frame instead of
//! waiting).

use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, Receiver, RecvTimeoutError, Sender, TrySendError};

use crate::device::capture::Frame;
use crate::device::metrics::Metrics;
use crate::shared::bbox::Detection;
use crate::shared::letterbox::Letterbox;

/// One frame on its way through the stages.
pub(super) struct Job {
    pub frame: Frame,
    /// `[3, H, W]` model input; taken from the tensor pool by convert,
    /// returned by inference (empty otherwise).
    pub tensor: Vec<f32>,
    pub letterbox: Option<Letterbox>,
    pub src_w_px: u32,
    pub src_h_px: u32,
    /// `[4 + nc, N]` model output.
    pub output: Vec<f32>,
    pub detections: Vec<Detection>,
    pub track_ids: Vec<Option<u64>>,
    pub captured: Instant,
}

impl Job {
    fn new() -> Self {
        Self {
            frame: Frame::empty(),
            tensor: Vec::new(),
            letterbox: None,
            src_w_px: 0,
            src_h_px: 0,
            output: Vec::new(),
            detections: Vec::new(),
            track_ids: Vec::new(),
            captured: Instant::now(),
        }
    }
}

/// Returns jobs (and their tensors) to the pools.
#[derive(Clone)]
pub(super) struct Pools {
    pub jobs: Sender<Box<Job>>,
    pub tensors: Sender<Vec<f32>>,
}

impl Pools {
    pub fn recycle(&self, mut job: Box<Job>) {
        if !job.tensor.is_empty() {
            let _ = self.tensors.send(std::mem::take(&mut job.tensor));
        }
        // The pool channel holds every job, so this never blocks.
        let _ = self.jobs.send(job);
    }
}

/// The taking ends of the pools: free jobs (for capture) and free input
/// tensors (for convert).
pub(super) struct PoolTakers {
    pub jobs: Receiver<Box<Job>>,
    pub tensors: Receiver<Vec<f32>>,
}

/// Pools sized for queues of `queue_frames`, filled up front: every job and
/// tensor (`input_len` floats) exists from the start, none is made later.
pub(super) fn filled_pools(queue_frames: usize, input_len: usize) -> (Pools, PoolTakers) {
    let jobs_total = 4 * queue_frames + 5;
    let tensors_total = queue_frames + 2;
    let (job_tx, job_rx) = bounded::<Box<Job>>(jobs_total);
    let (tensor_tx, tensor_rx) = bounded::<Vec<f32>>(tensors_total);
    for _ in 0..jobs_total {
        job_tx.send(Box::new(Job::new())).expect("pool has room");
    }
    for _ in 0..tensors_total {
        tensor_tx.send(vec![0.0; input_len]).expect("pool has room");
    }
    let pools = Pools {
        jobs: job_tx,
        tensors: tensor_tx,
    };
    let takers = PoolTakers {
        jobs: job_rx,
        tensors: tensor_rx,
    };
    (pools, takers)
}

/// Takes a free job, waiting while all are in flight; `None` on stop.
pub(super) fn free_job(pool: &Receiver<Box<Job>>, stop: &AtomicBool) -> Option<Box<Job>> {
    loop {
        if stop.load(Relaxed) {
            return None;
        }
        match pool.recv_timeout(Duration::from_millis(50)) {
            Ok(job) => return Some(job),
            Err(RecvTimeoutError::Timeout) => continue,
            Err(RecvTimeoutError::Disconnected) => return None,
        }
    }
}

/// A stage's output queue. With `drop_oldest`, a full queue loses its
/// oldest job (counted) instead of blocking the sender.
pub(super) struct Queue {
    tx: Sender<Box<Job>>,
    rx: Receiver<Box<Job>>,
    drop_oldest: bool,
}

impl Queue {
    /// A queue holding at most `capacity_frames` jobs.
    pub fn new(capacity_frames: usize, drop_oldest: bool) -> Self {
        let (tx, rx) = bounded::<Box<Job>>(capacity_frames);
        Self {
            tx,
            rx,
            drop_oldest,
        }
    }

    /// The consuming end, for the next stage. The queue itself (and with it
    /// the only sender) goes to the producing stage, so the consumer's
    /// loop ends when the producer does.
    pub fn receiver(&self) -> Receiver<Box<Job>> {
        self.rx.clone()
    }

    pub fn send(&self, mut job: Box<Job>, pools: &Pools, metrics: &Metrics) -> bool {
        if !self.drop_oldest {
            return self.tx.send(job).is_ok();
        }
        loop {
            match self.tx.try_send(job) {
                Ok(()) => return true,
                Err(TrySendError::Disconnected(_)) => return false,
                Err(TrySendError::Full(back)) => {
                    job = back;
                    // The consumer may have taken it meanwhile: then retry.
                    if let Ok(old) = self.rx.try_recv() {
                        metrics.frames_dropped.fetch_add(1, Relaxed);
                        pools.recycle(old);
                    }
                }
            }
        }
    }
}
