//! `irdistill run` end to end, on a student exported by the trainer:
//! the synthetic camera to JSON lines and snapshots, the fault-injecting
//! camera (corrupt frames, a stall, an unplug) with `/metrics`, `/healthz`
//! and `/snapshot.jpg` scraped while it runs, an image folder with broken
//! files, and a clean drain on SIGTERM.
#![cfg(feature = "trainer")]

mod daemon_common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use daemon_common::{free_port, http_get, irdistill, model, run, NAMES};
use serde_json::Value;

/// Parses a JSON-lines file of frame messages and checks each line's shape.
fn read_frames(path: &Path, w: f64, h: f64) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap();
    text.lines()
        // object events (lines with a `type`) are checked in daemon_mqtt.rs
        .filter(|line| !line.contains("\"type\":"))
        .map(|line| {
            let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
            assert!(v["camera"].as_str().is_some(), "{line}");
            assert!(v["timestamp"].as_str().unwrap().ends_with('Z'), "{line}");
            assert_eq!(
                (v["width"].as_f64(), v["height"].as_f64()),
                (Some(w), Some(h)),
                "{line}"
            );
            for d in v["detections"].as_array().unwrap() {
                let class = d["class_id"].as_u64().unwrap() as usize;
                assert_eq!(d["label"], NAMES[class], "{line}");
                let score = d["score"].as_f64().unwrap();
                assert!((0.25..=1.0).contains(&score), "{line}");
                let b: Vec<f64> = d["box"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|x| x.as_f64().unwrap())
                    .collect();
                assert!(0.0 <= b[0] && b[0] <= b[2] && b[2] <= w, "{line}");
                assert!(0.0 <= b[1] && b[1] <= b[3] && b[3] <= h, "{line}");
                assert!(d["track_id"].is_u64() || d["track_id"].is_null(), "{line}");
            }
            v
        })
        .collect()
}

/// Prometheus text → (name{labels} → value); checks every sample line.
fn parse_metrics(text: &str) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for line in text
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        let (key, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("bad sample {line:?}"));
        let v: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("bad value in {line:?}"));
        assert!(out.insert(key.to_string(), v).is_none(), "duplicate {key}");
    }
    out
}

#[test]
fn synthetic_camera_to_jsonl_and_snapshots() {
    let dir = tempfile::tempdir().unwrap();
    let jsonl = dir.path().join("frames.jsonl");
    let snaps = dir.path().join("snaps");
    let config = dir.path().join("irdistill.toml");
    std::fs::write(
        &config,
        format!(
            r#"
            [camera]
            name = "porch"
            [source]
            spec = "synthetic"
            fps = 0
            width_px = 320
            height_px = 240
            format = "NV12"
            [source.synthetic]
            hold_frames = 12
            scenes_per_condition = 1
            [model]
            path = "{}"
            threads = 1
            [snapshots]
            dir = "{}"
            min_interval_ms = 0
            max_total_bytes = 65536
            "#,
            model().display(),
            snaps.display()
        ),
    )
    .unwrap();
    let (ok, _, err) = run(&[
        "run",
        "--config",
        config.to_str().unwrap(),
        "--frames",
        "36",
        "--jsonl",
        jsonl.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    let frames = read_frames(&jsonl, 320.0, 240.0);
    assert_eq!(frames.len(), 36);
    // a non-live source (fps 0) waits for the pipeline: no frame is dropped
    let seqs: Vec<u64> = frames
        .iter()
        .map(|f| f["frame"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, (0..36).collect::<Vec<_>>());
    assert!(frames.iter().all(|f| f["camera"] == "porch"));
    let dets: usize = frames
        .iter()
        .map(|f| f["detections"].as_array().unwrap().len())
        .sum();
    assert!(
        dets > 0,
        "the seeded model should detect something in 36 frames"
    );
    // Each scene is held 12 frames: the same objects keep their track IDs,
    // and a new scene gets new IDs.
    let ids = |f: &Value| -> BTreeSet<u64> {
        f["detections"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|d| d["track_id"].as_u64())
            .collect()
    };
    for scene in 0..3 {
        let first = ids(&frames[scene * 12]);
        for k in 1..12 {
            assert_eq!(
                ids(&frames[scene * 12 + k]),
                first,
                "scene {scene}, frame {k}"
            );
        }
    }
    // Snapshots: JPEGs of the frame, and the folder stays under its cap
    // (the newest file may overshoot it alone).
    let files: Vec<_> = std::fs::read_dir(&snaps)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert!(!files.is_empty());
    let total: u64 = files
        .iter()
        .map(|p| std::fs::metadata(p).unwrap().len())
        .sum();
    let largest = files
        .iter()
        .map(|p| std::fs::metadata(p).unwrap().len())
        .max()
        .unwrap();
    assert!(total <= 65536 + largest, "{total}");
    for f in &files {
        assert!(f
            .file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .starts_with("snap-"));
        let img = image::open(f).unwrap();
        assert_eq!((img.width(), img.height()), (320, 240));
    }
}

#[test]
fn fault_source_recovers_and_metrics_tell() {
    let dir = tempfile::tempdir().unwrap();
    let jsonl = dir.path().join("frames.jsonl");
    let summary = dir.path().join("summary.json");
    let config = dir.path().join("c.toml");
    std::fs::write(
        &config,
        r#"
        [source]
        fps = 25
        width_px = 320
        height_px = 240
        timeout_ms = 200
        [reconnect]
        initial_ms = 50
        max_ms = 200
        "#,
    )
    .unwrap();
    let port = free_port();
    let mut child = irdistill()
        .args([
            "run",
            "--config",
            config.to_str().unwrap(),
            "--threads",
            "1",
            "--model",
        ])
        .arg(model())
        .args([
            "--source",
            "fault:corrupt@3,error@5,stall@12+900,disconnect@20+700",
            "--frames",
            "45",
            "--jsonl",
        ])
        .arg(&jsonl)
        .arg("--summary")
        .arg(&summary)
        .args(["--http", &port.to_string()])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Scrape while it runs.
    let start = Instant::now();
    let mut metrics = None;
    let mut health = None;
    let mut snapshot = None;
    while start.elapsed() < Duration::from_secs(60)
        && (metrics.is_none() || health.is_none() || snapshot.is_none())
    {
        std::thread::sleep(Duration::from_millis(100));
        if health.is_none() {
            if let Ok((200, body)) = http_get(port, "/healthz") {
                health = Some(String::from_utf8(body).unwrap());
            }
        }
        if snapshot.is_none() {
            if let Ok((200, body)) = http_get(port, "/snapshot.jpg") {
                snapshot = Some(body);
            }
        }
        if let Ok((200, body)) = http_get(port, "/metrics") {
            let m = parse_metrics(&String::from_utf8(body).unwrap());
            if m["irdistill_frames_total"] >= 10.0 {
                metrics = Some(m);
            }
        }
    }
    let status = child.wait().unwrap();
    let mut log = String::new();
    for line in BufReader::new(child.stderr.take().unwrap()).lines() {
        log.push_str(&line.unwrap());
        log.push('\n');
    }
    assert!(status.success(), "{log}");
    assert!(
        health
            .expect("/healthz never answered 200")
            .starts_with("ok"),
        "{log}"
    );
    let jpeg = snapshot.expect("/snapshot.jpg never answered");
    let img = image::load_from_memory_with_format(&jpeg, image::ImageFormat::Jpeg).unwrap();
    assert_eq!((img.width(), img.height()), (320, 240));
    let m = metrics.expect("/metrics never reached 10 frames");
    for name in [
        "irdistill_frames_total",
        "irdistill_frames_captured_total",
        "irdistill_frames_dropped_total",
        "irdistill_frames_corrupt_total",
        "irdistill_camera_reconnects_total",
        "irdistill_inference_seconds_count",
        "irdistill_inference_seconds_sum",
        "irdistill_inference_seconds_bucket{le=\"+Inf\"}",
        "irdistill_camera_connected",
        "irdistill_detections_total{label=\"person\"}",
        "irdistill_detections_total{label=\"car\"}",
        "process_resident_memory_bytes",
    ] {
        assert!(m.contains_key(name), "/metrics lacks {name}");
    }
    // histogram buckets are cumulative and end at the count
    let buckets: Vec<f64> = m
        .iter()
        .filter(|(k, _)| k.starts_with("irdistill_inference_seconds_bucket"))
        .map(|(_, v)| *v)
        .collect();
    assert!(buckets.len() > 5);
    assert_eq!(
        m["irdistill_inference_seconds_bucket{le=\"+Inf\"}"],
        m["irdistill_inference_seconds_count"]
    );
    assert!(m["irdistill_inference_seconds_count"] >= m["irdistill_frames_total"]);

    let s: Value = serde_json::from_str(&std::fs::read_to_string(&summary).unwrap()).unwrap();
    assert_eq!(s["frames"], 45, "{s}");
    // the truncated MJPEG (rejected by the converter) and the flagged frame
    assert_eq!(s["frames_corrupt"], 2, "{s}\n{log}");
    assert_eq!(s["camera_reconnects"], 1, "{s}\n{log}");
    assert!(s["capture_timeouts"].as_u64().unwrap() >= 2, "{s}");
    // each state change is logged once
    for (what, times) in [
        ("lost:", 1),
        ("reconnected:", 1),
        ("stalled:", 1),
        ("unavailable:", 1),
        ("skipping corrupt frames", 1),
    ] {
        assert_eq!(log.matches(what).count(), times, "{what:?} in\n{log}");
    }
    let frames = read_frames(&jsonl, 320.0, 240.0);
    assert_eq!(frames.len(), 45);
    let seqs: BTreeSet<u64> = frames
        .iter()
        .map(|f| f["frame"].as_u64().unwrap())
        .collect();
    assert!(!seqs.contains(&3) && !seqs.contains(&5), "{seqs:?}");
    // frames after the corrupt ones and after the reconnect (which one is
    // published depends on the load: a live source drops frames when the
    // pipeline falls behind)
    assert!(
        seqs.contains(&4) && seqs.iter().any(|&s| s > 25),
        "{seqs:?}"
    );
}

#[test]
fn image_folder_skips_broken_files() {
    let dir = tempfile::tempdir().unwrap();
    let imgs = dir.path().join("imgs");
    std::fs::create_dir(&imgs).unwrap();
    let g = irdistill::shared::synth::Generator::new(Default::default(), 3).unwrap();
    for i in 0..3 {
        g.pair(i)
            .pair
            .rgb
            .save(imgs.join(format!("a{i}.png")))
            .unwrap();
    }
    let rgb = g.pair(4).pair.rgb;
    let mut jpeg = Vec::new();
    image::codecs::jpeg::JpegEncoder::new(&mut jpeg)
        .encode_image(&rgb)
        .unwrap();
    std::fs::write(imgs.join("b-good.jpg"), &jpeg).unwrap();
    std::fs::write(imgs.join("c-truncated.jpg"), &jpeg[..jpeg.len() / 2]).unwrap();
    std::fs::write(imgs.join("d-garbage.png"), b"not a png").unwrap();
    std::fs::write(imgs.join("notes.txt"), b"ignored").unwrap();
    let jsonl = dir.path().join("out.jsonl");
    let summary = dir.path().join("s.json");
    let source = format!("images:{}", imgs.display());
    let (ok, _, err) = run(&[
        "run",
        "--source",
        &source,
        "--fps",
        "0",
        "--threads",
        "1",
        "--model",
        model().to_str().unwrap(),
        "--jsonl",
        jsonl.to_str().unwrap(),
        "--summary",
        summary.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    let frames = read_frames(&jsonl, 320.0, 256.0);
    let seqs: Vec<u64> = frames
        .iter()
        .map(|f| f["frame"].as_u64().unwrap())
        .collect();
    // a0 a1 a2 b-good; c-truncated (4) and d-garbage (5) skipped
    assert_eq!(seqs, [0, 1, 2, 3]);
    let s: Value = serde_json::from_str(&std::fs::read_to_string(&summary).unwrap()).unwrap();
    assert_eq!(s["frames_corrupt"], 2, "{s}\n{err}");
    assert!(err.contains("end of stream"), "{err}");
    // a glob works too
    let glob = format!("images:{}/a*.png", imgs.display());
    let (ok, out, err) = run(&[
        "run",
        "--source",
        &glob,
        "--fps",
        "0",
        "--threads",
        "1",
        "--model",
        model().to_str().unwrap(),
        "--jsonl",
        "-",
    ]);
    assert!(ok, "{err}");
    // one line per image (object events have a `type`)
    let frames = out.lines().filter(|l| !l.contains("\"type\":")).count();
    assert_eq!(frames, 3, "{out}");
}

#[test]
fn sigterm_drains_and_exits_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let jsonl = dir.path().join("frames.jsonl");
    let mut child = irdistill()
        .args([
            "run",
            "--threads",
            "1",
            "--fps",
            "20",
            "--size",
            "320x240",
            "--model",
        ])
        .arg(model())
        .arg("--jsonl")
        .arg(&jsonl)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while std::fs::read_to_string(&jsonl).map_or(0, |t| t.lines().count()) < 3 {
        assert!(start.elapsed() < Duration::from_secs(60), "no frames");
        assert!(child.try_wait().unwrap().is_none(), "exited early");
        std::thread::sleep(Duration::from_millis(50));
    }
    let kill = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "did not exit after SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut log = String::new();
    for line in BufReader::new(child.stderr.take().unwrap()).lines() {
        log.push_str(&line.unwrap());
        log.push('\n');
    }
    assert_eq!(status.code(), Some(0), "{log}");
    assert!(
        log.contains("signal received") && log.contains("done:"),
        "{log}"
    );
    // every line written is whole
    let frames = read_frames(&jsonl, 320.0, 240.0);
    assert!(frames.len() >= 3);
}

/// Under systemd: READY=1 once frames flow, STATUS= lines, WATCHDOG=1 from
/// the frame loop that stop while the camera stalls.
#[test]
fn systemd_notifications_follow_the_frames() {
    use std::os::unix::net::UnixDatagram;
    let dir = tempfile::tempdir().unwrap();
    let sock_path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    // systemd sets WATCHDOG_PID to the service's pid: exec keeps the shell's.
    let mut child = std::process::Command::new("sh")
        .args(["-c", "WATCHDOG_PID=$$ exec \"$0\" \"$@\""])
        .arg(env!("CARGO_BIN_EXE_irdistill"))
        .args([
            "run",
            "--threads",
            "1",
            "--fps",
            "20",
            "--size",
            "320x240",
            "--model",
        ])
        .arg(model())
        // a 3 s stall from frame 15 on
        .args(["--source", "fault:stall@15+3000", "--frames", "40"])
        .env("NOTIFY_SOCKET", &sock_path)
        .env("WATCHDOG_USEC", "200000")
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    let mut messages: Vec<(f64, String)> = Vec::new();
    let mut buf = [0u8; 4096];
    while child.try_wait().unwrap().is_none() {
        assert!(start.elapsed() < Duration::from_secs(90), "did not finish");
        if let Ok(n) = sock.recv(&mut buf) {
            messages.push((
                start.elapsed().as_secs_f64(),
                String::from_utf8_lossy(&buf[..n]).into_owned(),
            ));
        }
    }
    while let Ok(n) = sock.recv(&mut buf) {
        messages.push((
            start.elapsed().as_secs_f64(),
            String::from_utf8_lossy(&buf[..n]).into_owned(),
        ));
    }
    assert!(child.wait().unwrap().success());
    let ready: Vec<&(f64, String)> = messages
        .iter()
        .filter(|(_, m)| m.contains("READY=1"))
        .collect();
    assert_eq!(ready.len(), 1, "{messages:?}");
    let pings: Vec<f64> = messages
        .iter()
        .filter(|(_, m)| m.contains("WATCHDOG=1"))
        .map(|(t, _)| *t)
        .collect();
    assert!(pings.len() >= 3, "{messages:?}");
    assert!(
        pings[0] >= ready[0].0,
        "watchdog before ready: {messages:?}"
    );
    // the stall shows as one long silence of the watchdog
    let longest = pings.windows(2).map(|w| w[1] - w[0]).fold(0.0, f64::max);
    assert!(
        longest >= 2.5,
        "watchdog kept pinging through the stall: {pings:?}"
    );
    assert!(
        messages.iter().any(|(_, m)| m.contains("STATUS=")),
        "{messages:?}"
    );
}

/// SIGHUP re-reads the config: a new threshold and JSON lines file apply
/// without dropping the camera (frame numbers go on); a bad config is
/// refused, named in the log, and the running one kept.
#[test]
fn sighup_reloads_the_config_and_refuses_a_bad_one() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("c.toml");
    let (a, b) = (dir.path().join("a.jsonl"), dir.path().join("b.jsonl"));
    let write_config = |conf: f32, jsonl: &Path| {
        let text = format!(
            "[source]\nfps = 20\nwidth_px = 320\nheight_px = 240\n[detect]\nconf = {conf}\n[output]\njsonl = {:?}\n",
            jsonl.to_str().unwrap()
        );
        std::fs::write(&config, text).unwrap();
    };
    write_config(0.25, &a);
    let mut child = irdistill()
        .args(["run", "--threads", "1", "--model"])
        .arg(model())
        .arg("--config")
        .arg(&config)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let frame_lines = |p: &Path| {
        std::fs::read_to_string(p).map_or(0, |t| {
            t.lines().filter(|l| !l.contains("\"type\":")).count()
        })
    };
    let wait_for = |p: &Path, n: usize, child: &mut std::process::Child| {
        let start = Instant::now();
        while frame_lines(p) < n {
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "{}: no frames",
                p.display()
            );
            assert!(child.try_wait().unwrap().is_none(), "exited early");
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    let signal = |sig: &str, child: &std::process::Child| {
        let ok = std::process::Command::new("kill")
            .args([sig, &child.id().to_string()])
            .status()
            .unwrap();
        assert!(ok.success());
    };
    wait_for(&a, 5, &mut child);
    write_config(0.6, &b);
    signal("-HUP", &child);
    wait_for(&b, 5, &mut child);
    // a bad one: refused, the daemon goes on with conf 0.6 into b.jsonl
    std::fs::write(&config, "[detect]\nconf = 2.0\n").unwrap();
    signal("-HUP", &child);
    let before = frame_lines(&b);
    wait_for(&b, before + 10, &mut child);
    signal("-TERM", &child);
    let status = child.wait().unwrap();
    let mut log = String::new();
    for line in BufReader::new(child.stderr.take().unwrap()).lines() {
        log.push_str(&line.unwrap());
        log.push('\n');
    }
    assert_eq!(status.code(), Some(0), "{log}");
    assert!(log.contains("reloaded"), "{log}");
    assert!(
        log.contains("reload refused") && log.contains("detect.conf"),
        "{log}"
    );
    let (fa, fb) = (read_frames(&a, 320.0, 240.0), read_frames(&b, 320.0, 240.0));
    // the camera was never reopened: frame numbers go on from a into b
    let last_a = fa
        .iter()
        .map(|f| f["frame"].as_u64().unwrap())
        .max()
        .unwrap();
    let first_b = fb
        .iter()
        .map(|f| f["frame"].as_u64().unwrap())
        .min()
        .unwrap();
    assert!(first_b > last_a, "{last_a} then {first_b}");
    for f in &fb {
        for d in f["detections"].as_array().unwrap() {
            assert!(d["score"].as_f64().unwrap() >= 0.6 - 1e-4, "{f}");
        }
    }
}

/// Without `--threads`, the daemon times each thread count at load
/// (`model.threads = "auto"`) and reports the one it kept.
#[test]
fn auto_threads_are_timed_and_reported() {
    let dir = tempfile::tempdir().unwrap();
    let summary = dir.path().join("s.json");
    let out = irdistill()
        .args(["run", "--model"])
        .arg(model())
        .args(["--frames", "5", "--summary"])
        .arg(&summary)
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{log}");
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    // one timing per count from 1 to the cores (at most 8)
    let line = log
        .lines()
        .find(|l| l.contains("model.threads auto:"))
        .unwrap_or_else(|| panic!("no auto line in\n{log}"));
    for t in 1..=cores.min(8) {
        assert!(line.contains(&format!("{t}: ")), "{line}");
    }
    let s: Value = serde_json::from_str(&std::fs::read_to_string(&summary).unwrap()).unwrap();
    let chosen = s["threads"].as_u64().unwrap() as usize;
    assert!((1..=cores.min(8)).contains(&chosen), "{s}");
    assert!(line.ends_with(&format!("using {chosen}")), "{line}");
}
