//! `irdistill demo`: `run` on embedded defaults. The synthetic camera
//! shows day, night and fog scenes in equal parts, the bundled model
//! detects, and the run writes `detections.jsonl`, annotated snapshots (about
//! one per scene) and `summary.json` to the output folder, then prints a
//! summary: throughput, latency, detections per condition.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{ensure, Context, Result};
use irdistill::device::config::Config;
use irdistill::device::daemon::{execute, Printer, StartupError};
use irdistill::device::demo::{clear_outputs, schedule_scenes};
use irdistill::device::model_path::resolve_model;
use irdistill::device::pipeline::FrameEvent;
use irdistill::device::report::{DetectionCounts, Report};
use irdistill::shared::condition::Condition;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The ONNX model (default: the bundled models/student-p.onnx).
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Output folder: detections.jsonl, events.jsonl, snapshots/, summary.json (those
    /// files of an earlier demo are replaced; nothing else is touched).
    #[arg(long, default_value = "runs/daemon-demo")]
    pub out: PathBuf,
    /// Frames to process, split evenly over day, night and fog.
    #[arg(long, default_value_t = 300)]
    pub frames: u64,
    /// Camera frame size WxH.
    #[arg(long, default_value = "640x480")]
    pub size: String,
    /// Camera pace in frames per second; 0 = as fast as the pipeline goes
    /// (every frame processed, none dropped).
    #[arg(long, default_value_t = 0.0)]
    pub fps: f32,
    /// Confidence threshold.
    #[arg(long, default_value_t = 0.25)]
    pub conf: f32,
    /// Seed of the generated scenes.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Inference threads (default: auto, the fastest count timed at load).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Print only the summary, not the first frame of each scene.
    #[arg(long)]
    pub quiet: bool,
}

/// The demo's configuration (validated).
fn demo_config(a: &Args) -> Result<Config> {
    ensure!(
        a.frames >= 1,
        "--frames must be at least 1 (the demo always stops)"
    );
    let model = resolve_model(a.model.as_deref(), None)?;
    // Before any output is written.
    ensure!(
        model.is_file(),
        "model {}: no such file (--model)",
        model.display()
    );
    let run_args = crate::run::Args {
        config: None,
        source: Some("synthetic".into()),
        model: Some(model),
        frames: Some(a.frames),
        jsonl: Some(
            a.out
                .join("detections.jsonl")
                .to_string_lossy()
                .into_owned(),
        ),
        mqtt: None,
        http: None,
        snapshots: Some(a.out.join("snapshots")),
        camera: Some("demo".into()),
        fps: Some(a.fps),
        size: Some(a.size.clone()),
        format: None,
        conf: Some(a.conf),
        iou: None,
        imgsz: None,
        threads: a.threads,
        no_track: false,
        summary: None,
    };
    let mut cfg = crate::run::effective_config(&run_args)?;
    // object events beside the frames, so detections.jsonl stays one
    // line per frame
    cfg.output.events_jsonl = Some(a.out.join("events.jsonl").to_string_lossy().into_owned());
    schedule_scenes(&mut cfg, a.frames, a.seed)?;
    Ok(cfg)
}

/// One console line for the first frame of each scene.
fn frame_line(event: &FrameEvent, condition: Option<Condition>) -> String {
    let m = event.message;
    let mut line = format!(
        "frame {:>5}  {:<5}  ",
        m.frame,
        condition.map_or("", |c| c.as_str())
    );
    if m.detections.is_empty() {
        line.push_str("no detections");
    } else {
        let _ = write!(line, "{:>2} detected:", m.detections.len());
        for (i, d) in m.detections.iter().take(6).enumerate() {
            let sep = if i == 0 { " " } else { ", " };
            let _ = write!(line, "{sep}{} {:.2}", d.label, d.score);
            if let Some(Some(t)) = d.track_id {
                let _ = write!(line, " #{t}");
            }
        }
        if m.detections.len() > 6 {
            let _ = write!(line, ", …");
        }
    }
    if let Some(p) = event.snapshot {
        let name = p.file_name().map_or(p.as_os_str(), |n| n);
        let _ = write!(line, "  [snapshot {}]", name.to_string_lossy());
    }
    line
}

/// The printed summary.
fn summary_text(r: &Report, cfg: &Config, out: &Path) -> String {
    let mut s = String::new();
    let names = &r.classes;
    let _ = writeln!(
        s,
        "\nirdistill demo: {} frames of the synthetic camera ({}x{}, day/night/fog, {} frames per scene) through {} ({}x{}, {} threads)",
        r.frames,
        cfg.source.width_px,
        cfg.source.height_px,
        cfg.source.synthetic.hold_frames,
        r.model.display(),
        r.imgsz[1],
        r.imgsz[0],
        r.threads
    );
    let _ = writeln!(
        s,
        "  {:.1} fps over {:.1} s, {} dropped; latency capture→published p50 {:.1} ms, p95 {:.1} ms; inference p50 {:.1} ms, p95 {:.1} ms",
        r.fps,
        r.elapsed_s,
        r.frames_dropped,
        r.latency_ms.p50,
        r.latency_ms.p95,
        r.inference_ms.p50,
        r.inference_ms.p95
    );
    if cfg.source.fps == 0.0 {
        let _ = writeln!(
            s,
            "  (--fps 0: frames queue for the pipeline, so latency includes waiting; --fps 15 paces it like a camera)"
        );
    }
    let _ = write!(
        s,
        "\n  {:<9} {:>6} {:>10} {:>9}",
        "condition", "frames", "detections", "per frame"
    );
    for n in names {
        let _ = write!(s, " {n:>8}");
    }
    s.push('\n');
    for (name, d) in condition_rows(r) {
        let _ = write!(
            s,
            "  {:<9} {:>6} {:>10} {:>9.2}",
            name, d.frames, d.detections, d.per_frame
        );
        for n in names {
            let _ = write!(s, " {:>8}", d.by_label.get(n).copied().unwrap_or(0));
        }
        s.push('\n');
    }
    if r.detections.accuracy.is_some() {
        let _ = write!(
            s,
            "\n  against the generator's boxes (IoU 0.5):\n  {:<9} {:>6} {:>7} {:>9}",
            "condition", "boxes", "recall", "precision"
        );
        for n in names {
            let _ = write!(s, " {:>14}", format!("{n} recall"));
        }
        s.push('\n');
        for (name, d) in condition_rows(r) {
            let Some(a) = &d.accuracy else { continue };
            let _ = write!(
                s,
                "  {:<9} {:>6} {:>7.3} {:>9.3}",
                name, a.labels, a.recall, a.precision
            );
            for n in names {
                let _ = write!(s, " {:>14.3}", a.by_label.get(n).map_or(0.0, |l| l.recall));
            }
            s.push('\n');
        }
    }
    let _ = writeln!(
        s,
        "\n  object events (tracks announced, updated, ended): {}",
        event_counts(&out.join("events.jsonl"))
    );
    let _ = writeln!(
        s,
        "\n  wrote {} ({} lines), {}, {} ({} annotated JPEGs), {}",
        out.join("detections.jsonl").display(),
        r.frames,
        out.join("events.jsonl").display(),
        out.join("snapshots").display(),
        r.snapshots.len(),
        out.join("summary.json").display()
    );
    s
}

/// `new N, update N, end N` from an events file (what the run wrote).
fn event_counts(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut counts = std::collections::BTreeMap::<String, usize>::new();
    for line in text.lines() {
        if let Ok(v) = serde_json::from_str::<serde_json::Value>(line) {
            if let Some(t) = v["type"].as_str() {
                *counts.entry(t.to_string()).or_default() += 1;
            }
        }
    }
    ["new", "update", "end"]
        .iter()
        .map(|k| format!("{k} {}", counts.get(*k).copied().unwrap_or(0)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The summary's rows: each condition of the synthetic camera, then all.
fn condition_rows(r: &Report) -> impl Iterator<Item = (&str, &DetectionCounts)> {
    r.conditions
        .iter()
        .map(|(c, d)| (c.as_str(), d))
        .chain(std::iter::once(("all", &r.detections)))
}

pub fn demo(a: Args) -> Result<()> {
    let cfg = demo_config(&a).context(StartupError)?;
    clear_outputs(&a.out)?;
    let hold = u64::from(cfg.source.synthetic.hold_frames);
    let printer: Option<Printer> = (!a.quiet).then(|| {
        Box::new(move |event: &FrameEvent, condition: Option<Condition>| {
            if event.message.frame % hold == 0 {
                let mut out = std::io::stdout().lock();
                let _ = writeln!(out, "{}", frame_line(event, condition));
            }
        }) as Printer
    });
    let report = execute(&cfg, printer, None)?;
    let summary_path = a.out.join("summary.json");
    report.write(&summary_path)?;
    print!("{}", summary_text(&report, &cfg, &a.out));
    std::io::stdout().flush()?;
    Ok(())
}
