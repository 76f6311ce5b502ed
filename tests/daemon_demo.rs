//! `irdistill demo` end to end on a student exported by the trainer (the
//! bundled model may be absent): summary.json's fields against
//! detections.jsonl, the snapshots, a rerun replacing the outputs, the
//! model search in an installed layout, and clear errors (exit 78 for what
//! a restart cannot fix).
#![cfg(feature = "trainer")]

mod daemon_common;

use std::path::Path;
use std::process::Command;

use daemon_common::{irdistill, model, NAMES};
use serde_json::Value;

/// Runs `irdistill ARGS`; (exit code, stdout, stderr).
fn run_code(cmd: &mut Command) -> (i32, String, String) {
    let out = cmd.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn demo(out: &Path, frames: u32) -> (i32, String, String) {
    run_code(irdistill().args([
        "demo",
        "--model",
        model().to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--frames",
        &frames.to_string(),
        "--size",
        "320x240",
        "--threads",
        "1",
    ]))
}

fn condition_of(frame: u64, hold: u64) -> &'static str {
    // 4 scenes per condition, day → night → fog
    ["day", "night", "fog"][((frame / hold / 4) % 3) as usize]
}

fn snapshot_files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("snap-"))
        .collect();
    names.sort();
    names
}

#[test]
fn demo_writes_detections_snapshots_and_summary() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("demo");
    // 36 frames: 12 scenes of 3 frames, 12 frames per condition
    let (code, stdout, stderr) = demo(&out, 36);
    assert_eq!(code, 0, "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");

    let s: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap()).unwrap();
    assert_eq!(s["frames"], 36, "{s}");
    assert_eq!(s["frames_dropped"], 0, "{s}");
    assert_eq!(s["source"], "synthetic");
    assert_eq!(s["imgsz"], serde_json::json!([128, 128]));
    assert!(s["fps"].as_f64().unwrap() > 0.0, "{s}");
    assert!(s["elapsed_s"].as_f64().unwrap() > 0.0, "{s}");
    for key in ["latency_ms", "inference_ms", "convert_ms"] {
        let (p50, p95) = (
            s[key]["p50"].as_f64().unwrap(),
            s[key]["p95"].as_f64().unwrap(),
        );
        assert!(p50 > 0.0 && p95 >= p50, "{key}: {s}");
    }
    // capture → published includes inference
    assert!(s["latency_ms"]["p50"].as_f64() >= s["inference_ms"]["p50"].as_f64());
    assert!(s["peak_rss_bytes"].as_u64().unwrap() > 1 << 20);

    // detections.jsonl: one line per frame, counts as in the summary
    let text = std::fs::read_to_string(out.join("detections.jsonl")).unwrap();
    let frames: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(frames.len(), 36);
    let mut per_condition = std::collections::BTreeMap::<&str, (u64, u64)>::new();
    let mut per_label = std::collections::BTreeMap::<String, u64>::new();
    for f in &frames {
        assert_eq!(f["camera"], "demo");
        assert_eq!(
            (f["width"].as_u64(), f["height"].as_u64()),
            (Some(320), Some(240))
        );
        let dets = f["detections"].as_array().unwrap();
        let e = per_condition
            .entry(condition_of(f["frame"].as_u64().unwrap(), 3))
            .or_default();
        e.0 += 1;
        e.1 += dets.len() as u64;
        for d in dets {
            *per_label
                .entry(d["label"].as_str().unwrap().into())
                .or_default() += 1;
        }
    }
    let total: u64 = per_condition.values().map(|(_, d)| d).sum();
    assert!(total > 0, "the seeded model should detect something");
    assert_eq!(s["detections"]["frames"], 36);
    assert_eq!(s["detections"]["detections"], total, "{s}");
    for name in NAMES {
        assert_eq!(
            s["detections"]["by_label"][name].as_u64().unwrap(),
            per_label.get(name).copied().unwrap_or(0),
            "{name}: {s}"
        );
    }
    let conds = s["conditions"].as_object().unwrap();
    assert_eq!(
        conds.keys().collect::<Vec<_>>(),
        ["day", "fog", "night"],
        "{s}"
    );
    for (c, (n, d)) in &per_condition {
        assert_eq!(conds[*c]["frames"], *n, "{c}: {s}");
        assert_eq!(*n, 12);
        assert_eq!(conds[*c]["detections"], *d, "{c}: {s}");
        let per_frame = conds[*c]["per_frame"].as_f64().unwrap();
        assert!((per_frame - *d as f64 / 12.0).abs() < 1e-9);
        // scored against the generator's boxes: every detection is a hit
        // or a false alarm, and every scene has objects
        let a = &conds[*c]["accuracy"];
        let (tp, fp) = (
            a["true_positives"].as_u64().unwrap(),
            a["false_positives"].as_u64().unwrap(),
        );
        assert_eq!(tp + fp, *d, "{c}: {s}");
        let labels = a["labels"].as_u64().unwrap();
        assert!(labels >= 12, "{c}: {s}");
        assert!((a["recall"].as_f64().unwrap() - tp as f64 / labels as f64).abs() < 1e-9);
        for name in NAMES {
            let r = a["by_label"][name]["recall"].as_f64().unwrap();
            assert!((0.0..=1.0).contains(&r), "{c} {name}: {s}");
        }
    }
    let all = &s["detections"]["accuracy"];
    let labels: u64 = conds
        .values()
        .map(|c| c["accuracy"]["labels"].as_u64().unwrap())
        .sum();
    assert_eq!(all["labels"].as_u64().unwrap(), labels, "{s}");
    assert!(stdout.contains("against the generator's boxes"), "{stdout}");

    // snapshots: annotated frames with detections, at least a scene apart,
    // each listed with its frame and condition
    let snaps = s["snapshots"].as_array().unwrap();
    assert!(!snaps.is_empty(), "{s}");
    let files = snapshot_files(&out.join("snapshots"));
    assert_eq!(files.len(), snaps.len(), "{files:?} vs {s}");
    let mut last: Option<u64> = None;
    for snap in snaps {
        let path = Path::new(snap["path"].as_str().unwrap());
        let frame = snap["frame"].as_u64().unwrap();
        assert!(path.starts_with(out.join("snapshots")), "{snap}");
        let img = image::open(path).unwrap();
        assert_eq!((img.width(), img.height()), (320, 240));
        assert_eq!(snap["condition"], condition_of(frame, 3), "{snap}");
        assert!(snap["detections"].as_u64().unwrap() > 0, "{snap}");
        let line = &frames[frame as usize];
        assert_eq!(
            line["detections"].as_array().unwrap().len() as u64,
            snap["detections"].as_u64().unwrap()
        );
        if let Some(l) = last {
            assert!(frame >= l + 3, "snapshots closer than a scene: {s}");
        }
        last = Some(frame);
    }

    // the console: scene lines and the summary table
    assert!(stdout.contains("frame     0  day"), "{stdout}");
    assert!(stdout.contains("irdistill demo: 36 frames"), "{stdout}");
    for row in ["day", "night", "fog", "all"] {
        assert!(
            stdout.lines().any(|l| l.trim_start().starts_with(row)),
            "no {row} row in\n{stdout}"
        );
    }
    assert!(stdout.contains("fps") && stdout.contains("p95"), "{stdout}");

    // events.jsonl: every track announced is ended (the last at the
    // demo's end), counted on the console
    let text = std::fs::read_to_string(out.join("events.jsonl")).unwrap();
    let events: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let count = |t: &str| events.iter().filter(|e| e["type"] == t).count();
    assert!(count("new") > 0, "the seeded model's tracks: {text}");
    assert_eq!(count("new"), count("end"), "{text}");
    assert!(
        stdout.contains(&format!(
            "new {}, update {}, end {}",
            count("new"),
            count("update"),
            count("end")
        )),
        "{stdout}"
    );

    // A rerun replaces the demo's outputs and leaves other files alone.
    std::fs::write(out.join("snapshots/keep.txt"), b"mine").unwrap();
    let (code, _, stderr) = demo(&out, 12);
    assert_eq!(code, 0, "{stderr}");
    let s: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap()).unwrap();
    assert_eq!(s["frames"], 12);
    let lines = std::fs::read_to_string(out.join("detections.jsonl"))
        .unwrap()
        .lines()
        .count();
    assert_eq!(lines, 12);
    assert_eq!(
        snapshot_files(&out.join("snapshots")).len(),
        s["snapshots"].as_array().unwrap().len()
    );
    assert!(out.join("snapshots/keep.txt").is_file());
}

/// The binary finds the model where the .deb puts it
/// (`/usr/bin/irdistill` → `/usr/share/irdistill/models/student-p.onnx`),
/// and without one says how to get it.
#[test]
fn model_search_and_missing_model() {
    let dir = tempfile::tempdir().unwrap();
    let bin_dir = dir.path().join("usr/bin");
    std::fs::create_dir_all(&bin_dir).unwrap();
    let exe = bin_dir.join("irdistill");
    std::fs::copy(env!("CARGO_BIN_EXE_irdistill"), &exe).unwrap();
    let work = dir.path().join("work");
    std::fs::create_dir(&work).unwrap();
    let demo_cmd = || {
        let mut c = Command::new(&exe);
        c.current_dir(&work)
            .env_remove("RUST_LOG")
            .env_remove("NOTIFY_SOCKET")
            .args([
                "demo",
                "--frames",
                "3",
                "--size",
                "160x120",
                "--threads",
                "1",
            ]);
        c
    };
    let (code, stdout, stderr) = run_code(&mut demo_cmd());
    assert_eq!(code, 78, "{stdout}\n{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    for want in [
        "no model",
        "--model",
        "models/student-p.onnx",
        "share/irdistill",
        "trainer -- train",
        "trainer -- export",
    ] {
        assert!(stderr.contains(want), "{want:?} not in {stderr}");
    }
    assert!(!work.join("runs").exists(), "outputs made before the error");

    let share = dir.path().join("usr/share/irdistill/models");
    std::fs::create_dir_all(&share).unwrap();
    std::fs::copy(model(), share.join("student-p.onnx")).unwrap();
    let (code, stdout, stderr) = run_code(&mut demo_cmd());
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains("share/irdistill/models/student-p.onnx"),
        "{stdout}"
    );
    assert!(work.join("runs/daemon-demo/summary.json").is_file());
}

#[test]
fn bad_input_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("o");
    let m = model().to_str().unwrap();
    let o = out.to_str().unwrap();
    let missing = dir.path().join("nope.onnx");
    let lfs = dir.path().join("lfs.onnx");
    std::fs::write(
        &lfs,
        "version https://git-lfs.github.com/spec/v1\noid sha256:0\nsize 1\n",
    )
    .unwrap();
    let bad_config = dir.path().join("bad.toml");
    std::fs::write(&bad_config, "[detect]\nconf = 7\n").unwrap();
    let cases: Vec<(Vec<&str>, i32, Vec<&str>)> = vec![
        (
            vec!["demo", "--model", m, "--out", o, "--frames", "0"],
            78,
            vec!["--frames"],
        ),
        (
            vec!["demo", "--model", m, "--out", o, "--size", "big"],
            78,
            vec!["--size"],
        ),
        (
            vec!["demo", "--model", m, "--out", o, "--conf", "2"],
            78,
            vec!["detect.conf"],
        ),
        (
            vec!["demo", "--model", missing.to_str().unwrap(), "--out", o],
            78,
            vec!["nope.onnx", "no such file"],
        ),
        (
            vec!["demo", "--model", lfs.to_str().unwrap(), "--out", o],
            78,
            vec!["lfs.onnx", "git lfs pull"],
        ),
        (
            vec!["run", "--config", bad_config.to_str().unwrap()],
            78,
            vec!["bad.toml", "detect.conf"],
        ),
        (vec!["demo", "--frames", "many"], 2, vec!["--frames"]),
    ];
    for (args, want_code, wants) in cases {
        let (code, _, stderr) = run_code(irdistill().args(&args));
        assert_eq!(code, want_code, "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        for w in wants {
            assert!(stderr.contains(w), "{args:?}: {w:?} not in {stderr}");
        }
    }
}

/// The bundled model (models/student-p.onnx, see models/README.md) is what
/// the daemon runs without `--model`: a trained student of the documented
/// input size and classes, which finds objects in the synthetic day scenes.
#[test]
fn bundled_model_is_the_default_and_detects() {
    let bundled = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/student-p.onnx");
    assert!(bundled.is_file(), "{} missing", bundled.display());
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("demo");
    let mut cmd = irdistill();
    cmd.env_remove("RUST_LOG")
        .env_remove("NOTIFY_SOCKET")
        .args(["demo", "--out", out.to_str().unwrap(), "--frames", "36"])
        .args(["--size", "320x240", "--threads", "1", "--quiet"]);
    let (code, stdout, stderr) = run_code(&mut cmd);
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    assert!(stdout.contains("models/student-p.onnx"), "{stdout}");
    let s: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap()).unwrap();
    assert_eq!(s["imgsz"], serde_json::json!([160, 160]), "{s}");
    let text = std::fs::read_to_string(out.join("detections.jsonl")).unwrap();
    let mut day_detections = 0;
    for line in text.lines() {
        let f: Value = serde_json::from_str(line).unwrap();
        for d in f["detections"].as_array().unwrap() {
            assert!(NAMES.contains(&d["label"].as_str().unwrap()), "{d}");
        }
        if condition_of(f["frame"].as_u64().unwrap(), 3) == "day" {
            day_detections += f["detections"].as_array().unwrap().len();
        }
    }
    assert!(day_detections > 0, "no detections in 12 day frames: {s}");
}
