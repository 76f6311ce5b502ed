//! The camera daemon (`irdistill run`), in the order a frame travels:
//!
//! ```text
//! camera ─ capture ─ Frame (YUYV, MJPEG, NV12, GREY, RGB24)
//!   └ convert   ─ [3, S, S] f32 model input (pixel format + letterbox in one pass)
//!   └ infer     ─ [4 + nc, N] f32 model output (tract)
//!   └ postprocess ─ Vec<Detection> (NMS, zones, size and class filters)
//!   └ track     ─ stable track IDs
//!   └ publish   ─ JSON lines, MQTT, snapshots, HTTP (/metrics, /healthz, /snapshot.jpg)
//! ```
//!
//! [`pipeline`] runs those stages on threads joined by bounded channels;
//! [`daemon`] wires a [`config`] (the validated TOML file) into a running
//! pipeline, and [`report`] is what a run sums up (`--summary`, `demo`).
//! Beside them: [`metrics`] (the counters the stages share), [`service`]
//! (the systemd life cycle), [`model_path`] (where the bundled model is
//! found), and the same stages behind the other commands:
//! [`detect_files`] (`irdistill detect`), [`bench`] and [`demo`].
//! Nothing here needs candle or names the trainer.

pub mod bench;
pub mod capture;
pub mod config;
pub mod convert;
pub mod daemon;
pub mod demo;
pub mod detect_files;
pub mod events;
pub mod infer;
pub mod metrics;
pub mod model_path;
pub mod pipeline;
pub mod postprocess;
pub mod publish;
pub mod report;
pub mod service;
pub mod track;
pub mod val;
