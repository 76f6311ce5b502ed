//! The three stages that turn a captured frame into detections: convert
//! (pixel format and letterbox into a pooled `[3, H, W]` input tensor),
//! inference (the model) and postprocess (NMS, zones, size and class
//! filters, then tracking). A frame that cannot be converted or inferred is
//! counted, logged once and skipped; the stages keep going.

use std::sync::atomic::Ordering::Relaxed;
use std::time::Instant;

use anyhow::{anyhow, Result};
use crossbeam_channel::Receiver;

use super::jobs::{Job, Queue};
use super::{spawn_worker, StageContext, Worker};
use crate::device::config::Config;
use crate::device::convert::{Converter, CorruptFrame};
use crate::device::infer::{Detector, ModelInfo};
use crate::device::postprocess::{frame_detections, DetectFilter};
use crate::device::track::Tracker;
use crate::shared::nms::NmsParams;

/// The detection filter for `cfg` and a model's class names; per-class
/// thresholds must name known labels.
pub fn detect_filter(cfg: &Config, info: &ModelInfo) -> Result<DetectFilter> {
    let mut class_conf = Vec::new();
    for (label, t) in &cfg.detect.class_conf {
        let id = info.names.iter().position(|n| n == label).ok_or_else(|| {
            anyhow!(
                "detect.class_conf.{label}: the model has no class {label:?} (it has {})",
                info.names.join(", ")
            )
        })?;
        class_conf.push((id, *t));
    }
    Ok(DetectFilter {
        class_conf,
        min_area_px: cfg.detect.min_area_px,
        max_area_px: cfg.detect.max_area_px,
        zones: cfg.zones(),
    })
}

/// What postprocess does with a model output, from the config.
pub struct PostprocessSettings {
    /// Classes in the model output.
    pub nc: usize,
    pub nms: NmsParams,
    pub filter: DetectFilter,
    /// `None` when tracking is off.
    pub tracker: Option<Tracker>,
}

impl PostprocessSettings {
    /// Fails when the config's per-class thresholds name unknown labels.
    pub(super) fn new(cfg: &Config, info: &ModelInfo) -> Result<Self> {
        Ok(Self {
            nc: info.nc(),
            nms: NmsParams {
                conf: cfg.detect.conf,
                iou: cfg.detect.iou,
                max_det: cfg.detect.max_det,
                multi_label: false,
            },
            filter: detect_filter(cfg, info)?,
            tracker: cfg.track.enabled.then(|| Tracker::new(cfg.track.tracker())),
        })
    }
}

/// Starts the convert thread: frames from `input` become model inputs of
/// `info`'s size in tensors taken from `tensors`.
pub(super) fn spawn_convert(
    input: Receiver<Box<Job>>,
    out: Queue,
    tensors: Receiver<Vec<f32>>,
    info: &ModelInfo,
    ctx: StageContext,
) -> std::io::Result<Worker> {
    let (w, h) = (info.input_w_px, info.input_h_px);
    spawn_worker("convert", move || {
        convert_stage(&input, &out, &tensors, w, h, &ctx)
    })
}

/// Starts the inference thread; it owns `detector`.
pub(super) fn spawn_inference(
    input: Receiver<Box<Job>>,
    out: Queue,
    mut detector: Detector,
    ctx: StageContext,
) -> std::io::Result<Worker> {
    spawn_worker("inference", move || {
        inference_stage(&input, &out, &mut detector, &ctx)
    })
}

/// Starts the postprocess thread; it owns the tracker.
pub(super) fn spawn_postprocess(
    input: Receiver<Box<Job>>,
    out: Queue,
    settings: PostprocessSettings,
    reloaded: Receiver<PostprocessSettings>,
    ctx: StageContext,
) -> std::io::Result<Worker> {
    spawn_worker("postprocess", move || {
        postprocess_stage(&input, &out, settings, &reloaded, &ctx)
    })
}

fn convert_stage(
    input: &Receiver<Box<Job>>,
    out: &Queue,
    tensors: &Receiver<Vec<f32>>,
    w: u32,
    h: u32,
    ctx: &StageContext,
) {
    let (pools, metrics) = (&ctx.pools, &*ctx.metrics);
    let mut converter = Converter::new();
    let mut corrupt_logged = false;
    for mut job in input.iter() {
        let Ok(tensor) = tensors.recv() else {
            pools.recycle(job);
            break;
        };
        job.tensor = tensor;
        let t0 = Instant::now();
        match converter.letterbox_frame(&job.frame, w, h, &mut job.tensor) {
            Ok(lb) => {
                metrics.convert.observe(t0.elapsed());
                (job.src_w_px, job.src_h_px) = converter.source_size();
                job.letterbox = Some(lb);
                if !out.send(job, pools, metrics) {
                    break;
                }
            }
            Err(e) => {
                if e.downcast_ref::<CorruptFrame>().is_some() {
                    metrics.frames_corrupt.fetch_add(1, Relaxed);
                } else {
                    metrics.inference_errors.fetch_add(1, Relaxed);
                }
                if !corrupt_logged {
                    corrupt_logged = true;
                    tracing::warn!("skipping unconvertible frames (counted): {e:#}");
                } else {
                    tracing::debug!("skipping frame {}: {e:#}", job.frame.sequence);
                }
                pools.recycle(job);
            }
        }
    }
}

fn inference_stage(
    input: &Receiver<Box<Job>>,
    out: &Queue,
    detector: &mut Detector,
    ctx: &StageContext,
) {
    let (pools, metrics) = (&ctx.pools, &*ctx.metrics);
    let mut error_logged = false;
    for mut job in input.iter() {
        let t0 = Instant::now();
        let result = detector.run(&job.tensor, &mut job.output);
        // The tensor is copied into tract's input: back to the pool now.
        let _ = pools.tensors.send(std::mem::take(&mut job.tensor));
        match result {
            Ok(()) => {
                metrics.inference.observe(t0.elapsed());
                if !out.send(job, pools, metrics) {
                    break;
                }
            }
            Err(e) => {
                metrics.inference_errors.fetch_add(1, Relaxed);
                if !error_logged {
                    error_logged = true;
                    tracing::error!(
                        "inference failed (counted in irdistill_inference_errors_total): {e:#}"
                    );
                }
                pools.recycle(job);
            }
        }
    }
}

fn postprocess_stage(
    input: &Receiver<Box<Job>>,
    out: &Queue,
    mut settings: PostprocessSettings,
    reloaded: &Receiver<PostprocessSettings>,
    ctx: &StageContext,
) {
    let (pools, metrics) = (&ctx.pools, &*ctx.metrics);
    for mut job in input.iter() {
        if let Ok(mut new) = reloaded.try_recv() {
            // tracks (and their IDs) live on unless tracking changed
            let same_tracking = match (&settings.tracker, &new.tracker) {
                (Some(old), Some(n)) => old.config() == n.config(),
                (None, None) => true,
                _ => false,
            };
            if same_tracking {
                new.tracker = settings.tracker.take();
            }
            settings = new;
        }
        let t0 = Instant::now();
        let lb = job.letterbox.expect("set by convert");
        job.detections = frame_detections(
            &job.output,
            settings.nc,
            &settings.nms,
            &settings.filter,
            &lb,
            job.src_w_px,
            job.src_h_px,
        );
        job.track_ids = match settings.tracker.as_mut() {
            Some(t) => {
                let ids = t.update(&job.detections);
                metrics.tracks_active.store(t.active() as u64, Relaxed);
                ids
            }
            None => Vec::new(),
        };
        metrics.postprocess.observe(t0.elapsed());
        if !out.send(job, pools, metrics) {
            break;
        }
    }
}
