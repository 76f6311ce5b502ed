//! `irdistill detect`, `check-config` and the model checks: the JSON line
//! per image (checked against ultralytics' letterbox + NMS in numpy with
//! the model in onnxruntime, `tests/detect_ref.py`), `--save`, and clear
//! errors for bad configs and unusable models.
//!
//! The onnxruntime comparison needs `pip install onnxruntime numpy`; set
//! IRDISTILL_SKIP_PYREF=1 to skip it where Python packages cannot be
//! installed.
#![cfg(feature = "trainer")]

mod daemon_common;

use std::path::{Path, PathBuf};
use std::process::Command;

use daemon_common::{export_to, model, run, NAMES};
use irdistill::trainer::export::graph::{value_info_f32, Dim, Graph};
use serde_json::Value;
use tract_onnx::pb;

/// Synthetic test images: a 320x256 scene and a tall crop (other padding axis).
fn images(dir: &Path) -> Vec<PathBuf> {
    let g = irdistill::shared::synth::Generator::new(Default::default(), 11).unwrap();
    let mut out = Vec::new();
    for i in 0..3 {
        let rgb = g.pair(i).pair.rgb;
        let p = dir.join(format!("scene{i}.png"));
        rgb.save(&p).unwrap();
        out.push(p);
    }
    let tall = image::imageops::crop_imm(&g.pair(3).pair.rgb, 60, 0, 150, 256).to_image();
    let p = dir.join("tall.png");
    tall.save(&p).unwrap();
    out.push(p);
    out
}

fn detect_lines(stdout: &str) -> Vec<Value> {
    stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn detect_prints_one_line_per_image_and_saves_copies() {
    let dir = tempfile::tempdir().unwrap();
    let imgs = images(dir.path());
    let save = dir.path().join("annotated");
    let mut args: Vec<String> = [
        "detect",
        "--threads",
        "1",
        "--model",
        model().to_str().unwrap(),
        "--save",
        save.to_str().unwrap(),
    ]
    .map(String::from)
    .to_vec();
    args.extend(imgs.iter().map(|p| p.display().to_string()));
    let args: Vec<&str> = args.iter().map(|s| s.as_str()).collect();
    let (ok, out, err) = run(&args);
    assert!(ok, "{err}");
    let lines = detect_lines(&out);
    assert_eq!(lines.len(), imgs.len());
    let mut total = 0;
    for ((line, raw), path) in lines.iter().zip(out.lines()).zip(&imgs) {
        // the keys, in the documented order
        let at = |k: &str| raw.find(&format!("\"{k}\":")).unwrap_or(usize::MAX);
        let order = ["image", "width", "height", "detections"].map(at);
        assert!(
            order.windows(2).all(|w| w[0] < w[1]) && order[3] < usize::MAX,
            "{raw}"
        );
        assert_eq!(line.as_object().unwrap().len(), 4, "{raw}");
        assert_eq!(line["image"], path.display().to_string());
        let img = image::open(path).unwrap();
        assert_eq!(
            (line["width"].as_u64(), line["height"].as_u64()),
            (Some(img.width() as u64), Some(img.height() as u64))
        );
        for d in line["detections"].as_array().unwrap() {
            // (serde_json's map sorts its keys)
            let keys: Vec<&str> = d.as_object().unwrap().keys().map(|k| k.as_str()).collect();
            assert_eq!(keys, ["box", "class_id", "label", "score"]);
            assert_eq!(d["label"], NAMES[d["class_id"].as_u64().unwrap() as usize]);
            assert!(d["score"].as_f64().unwrap() >= 0.25);
            total += 1;
        }
        let saved = save.join(path.file_name().unwrap());
        let copy = image::open(&saved).unwrap().to_rgb8();
        assert_eq!(copy.dimensions(), img.to_rgb8().dimensions());
        // boxes were drawn: the copy differs from the input exactly when there were detections
        let drawn = copy != img.to_rgb8();
        assert_eq!(
            drawn,
            !line["detections"].as_array().unwrap().is_empty(),
            "{}",
            saved.display()
        );
    }
    assert!(total > 0, "the seeded model should detect something");
    // a higher threshold keeps a subset
    let (ok, out_high, _) = run(&[
        "detect",
        "--threads",
        "1",
        "--conf",
        "0.6",
        "--model",
        model().to_str().unwrap(),
        imgs[0].to_str().unwrap(),
    ]);
    assert!(ok);
    let high = detect_lines(&out_high);
    let low = &lines[0]["detections"];
    for d in high[0]["detections"].as_array().unwrap() {
        assert!(d["score"].as_f64().unwrap() >= 0.6);
        assert!(
            low.as_array().unwrap().contains(d),
            "{d} not among the 0.25 detections"
        );
    }
    // --save never writes over an input
    let (ok, _, err) = run(&[
        "detect",
        "--model",
        model().to_str().unwrap(),
        "--save",
        dir.path().to_str().unwrap(),
        imgs[0].to_str().unwrap(),
    ]);
    assert!(!ok && err.contains("would overwrite"), "{err}");
}

#[test]
fn detect_errors_name_the_file_and_continue() {
    let dir = tempfile::tempdir().unwrap();
    let imgs = images(dir.path());
    let bad = dir.path().join("broken.png");
    std::fs::write(&bad, b"garbage").unwrap();
    let missing = dir.path().join("missing.png");
    let (ok, out, err) = run(&[
        "detect",
        "--model",
        model().to_str().unwrap(),
        bad.to_str().unwrap(),
        imgs[0].to_str().unwrap(),
        missing.to_str().unwrap(),
    ]);
    assert!(!ok);
    assert_eq!(out.lines().count(), 1, "the good image is still processed");
    assert!(
        err.contains("broken.png") && err.contains("missing.png"),
        "{err}"
    );
    assert!(err.contains("2 of 3 images failed"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

/// Writes `img` as an RGB uint8 [H, W, 3] .npy.
fn write_npy(path: &Path, img: &image::RgbImage) {
    let mut header = format!(
        "{{'descr': '|u1', 'fortran_order': False, 'shape': ({}, {}, 3), }}",
        img.height(),
        img.width()
    );
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
    bytes.extend_from_slice(&(header.len() as u16).to_le_bytes());
    bytes.extend_from_slice(header.as_bytes());
    bytes.extend_from_slice(img.as_raw());
    std::fs::write(path, bytes).unwrap();
}

/// Every reference detection clearly above the threshold has a match in
/// ours (same class, IoU ≥ 0.9, score within 0.02), and vice versa.
fn assert_same_detections(ours: &Value, reference: &Value, conf: f64) {
    let boxes = |v: &Value| -> Vec<(u64, f64, [f64; 4])> {
        v["detections"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| {
                let b: Vec<f64> = d["box"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|x| x.as_f64().unwrap())
                    .collect();
                (
                    d["class_id"].as_u64().unwrap(),
                    d["score"].as_f64().unwrap(),
                    [b[0], b[1], b[2], b[3]],
                )
            })
            .collect()
    };
    let iou = |a: &[f64; 4], b: &[f64; 4]| {
        let w = (a[2].min(b[2]) - a[0].max(b[0])).max(0.0);
        let h = (a[3].min(b[3]) - a[1].max(b[1])).max(0.0);
        let area = |z: &[f64; 4]| (z[2] - z[0]) * (z[3] - z[1]);
        w * h / (area(a) + area(b) - w * h)
    };
    let (o, r) = (boxes(ours), boxes(reference));
    for (x, y, name) in [(&r, &o, "reference"), (&o, &r, "irdistill")] {
        for (c, s, b) in x.iter().filter(|d| d.1 > conf + 0.03) {
            assert!(
                y.iter().any(|(c2, s2, b2)| c2 == c && (s - s2).abs() < 0.02 && iou(b, b2) > 0.9),
                "{name} detection class {c} score {s} box {b:?} has no match in\nours {ours}\nreference {reference}"
            );
        }
    }
}

#[test]
fn detect_matches_ultralytics_letterbox_in_onnxruntime() {
    let skip = std::env::var("IRDISTILL_SKIP_PYREF").is_ok_and(|v| v == "1");
    let dir = tempfile::tempdir().unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/detect_ref.py");
    let mut compared = 0;
    for img_path in images(dir.path()) {
        let rgb = image::open(&img_path).unwrap().to_rgb8();
        let npy = img_path.with_extension("npy");
        write_npy(&npy, &rgb);
        let out = Command::new("python3")
            .arg(&script)
            .arg(model())
            .arg(&npy)
            .output();
        let out = match out {
            Ok(o) if o.status.code() == Some(3) && skip => {
                eprintln!("skipped the onnxruntime reference (IRDISTILL_SKIP_PYREF=1)");
                return;
            }
            Ok(o) => o,
            Err(e) if skip => {
                eprintln!("skipped the onnxruntime reference: {e}");
                return;
            }
            Err(e) => {
                panic!("python3: {e}; pip install onnxruntime numpy (or IRDISTILL_SKIP_PYREF=1)")
            }
        };
        assert!(
            out.status.success(),
            "detect_ref.py failed (pip install onnxruntime numpy, or IRDISTILL_SKIP_PYREF=1):\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let reference: Value = serde_json::from_slice(&out.stdout).unwrap();
        let (ok, ours, err) = run(&[
            "detect",
            "--threads",
            "1",
            "--model",
            model().to_str().unwrap(),
            img_path.to_str().unwrap(),
        ]);
        assert!(ok, "{err}");
        let ours: Value = serde_json::from_str(ours.trim()).unwrap();
        assert_eq!(
            (&ours["width"], &ours["height"]),
            (&reference["width"], &reference["height"])
        );
        assert_same_detections(&ours, &reference, 0.25);
        compared += reference["detections"].as_array().unwrap().len();
    }
    assert!(compared > 0, "nothing was compared");
}

#[test]
fn dynamic_batch_export_gives_the_same_detections() {
    let dir = tempfile::tempdir().unwrap();
    let imgs = images(dir.path());
    let fixed = export_to(dir.path(), 128, false);
    let dynamic = export_to(dir.path(), 128, true);
    let img = imgs[0].to_str().unwrap();
    let (ok_a, a, err_a) = run(&[
        "detect",
        "--threads",
        "1",
        "--model",
        fixed.to_str().unwrap(),
        img,
    ]);
    let (ok_b, b, err_b) = run(&[
        "detect",
        "--threads",
        "1",
        "--model",
        dynamic.to_str().unwrap(),
        img,
    ]);
    assert!(ok_a && ok_b, "{err_a}{err_b}");
    assert_eq!(a, b);
}

/// A valid ONNX model that is not a detector: `[1, 3, 64, 64]` → global
/// average pool → `[1, 3, 1, 1]`.
fn not_a_detector(path: &Path) {
    let mut g = Graph::default();
    g.node("pool", "GlobalAveragePool", &["images"], vec![]);
    g.rename_last_output("output0");
    let model = pb::ModelProto {
        ir_version: 8,
        opset_import: vec![pb::OperatorSetIdProto {
            domain: String::new(),
            version: 17,
        }],
        graph: Some(pb::GraphProto {
            node: g.nodes,
            name: "g".into(),
            input: vec![value_info_f32(
                "images",
                &[Dim::Fixed(1), Dim::Fixed(3), Dim::Fixed(64), Dim::Fixed(64)],
            )],
            output: vec![value_info_f32(
                "output0",
                &[Dim::Fixed(1), Dim::Fixed(3), Dim::Fixed(1), Dim::Fixed(1)],
            )],
            ..Default::default()
        }),
        ..Default::default()
    };
    std::fs::write(
        path,
        irdistill::trainer::export::proto::encode_model(&model).unwrap(),
    )
    .unwrap();
}

#[test]
fn unusable_models_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let img = images(dir.path()).remove(0);
    let img = img.to_str().unwrap();
    let wrong = dir.path().join("pool.onnx");
    not_a_detector(&wrong);
    let garbage = dir.path().join("garbage.onnx");
    std::fs::write(&garbage, b"this is not protobuf").unwrap();
    let missing = dir.path().join("nope.onnx");
    let cases: [(&Path, &[&str]); 3] = [
        (&wrong, &["pool.onnx", "not the YOLOv8 layout [1, 4+nc, N]"]),
        (&garbage, &["garbage.onnx", "not a readable ONNX model"]),
        (&missing, &["nope.onnx", "no such file", "--model"]),
    ];
    for (path, wants) in cases {
        for cmd in [
            vec!["detect", "--model", path.to_str().unwrap(), img],
            vec!["run", "--frames", "1", "--model", path.to_str().unwrap()],
        ] {
            let (ok, out, err) = run(&cmd);
            assert!(!ok && out.is_empty(), "{cmd:?}");
            assert!(!err.contains("panicked"), "{cmd:?}: {err}");
            for w in wants {
                assert!(err.contains(w), "{cmd:?}: {w:?} not in {err}");
            }
        }
    }
}

#[test]
fn check_config_accepts_the_example_and_names_bad_fields() {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("systemd/irdistill.toml");
    let (ok, out, err) = run(&["check-config", example.to_str().unwrap()]);
    assert!(ok, "{err}");
    assert!(out.contains(": ok"), "{out}");
    let dir = tempfile::tempdir().unwrap();
    // a file named .onnx that is not one
    let junk = dir.path().join("junk.onnx");
    std::fs::write(&junk, "not a model").unwrap();
    let junk_model = format!("[model]\npath = {:?}\n", junk.to_str().unwrap());
    let cases: [(&str, &str); 17] = [
        ("[detect]\nconf = 2.0\n", "detect.conf"),
        ("[detect]\nconfidence = 0.5\n", "confidence"),
        ("[source]\nspec = \"webcam0\"\n", "source.spec"),
        // a network camera without a host (and the password not echoed:
        // checked below)
        (
            "[source]\nspec = \"rtsp://admin:hunter2@/live\"\n",
            "source.spec",
        ),
        ("[source]\nfps = -1\n", "source.fps"),
        (
            "[[zones]]\nname = \"z\"\nmode = \"include\"\npoints = [[0, 0], [2, 0], [0, 1]]\n",
            "zones[0].points",
        ),
        ("[http]\nlisten = \"everywhere\"\n", "http.listen"),
        ("[camera]\nname = \"front door\"\n", "camera.name"),
        ("[model]\npath = \"/no/such/model.onnx\"\n", "model.path"),
        ("[snapshots]\njpeg_quality = 0\n", "snapshots.jpeg_quality"),
        ("not toml at all [", "config"),
        // checked against the model: its labels and its file
        (
            "[detect]\nclass_conf = { zebra = 0.5 }\n",
            "detect.class_conf.zebra",
        ),
        (&junk_model, "junk.onnx"),
        ("[events]\nmin_frames = 0\n", "events.min_frames"),
        (
            "[track]\nenabled = false\n[events]\nenabled = true\n",
            "track.enabled",
        ),
        (
            "[source.synthetic]\npan_px_per_frame = -1\n",
            "source.synthetic.pan_px_per_frame",
        ),
        (
            "[mqtt]\nurl = \"mqtt://h\"\ndiscovery_prefix = \"ha/\"\n",
            "mqtt.discovery_prefix",
        ),
    ];
    for (text, field) in cases {
        let path = dir.path().join("bad.toml");
        std::fs::write(&path, text).unwrap();
        let (ok, _, err) = run(&["check-config", path.to_str().unwrap()]);
        assert!(!ok, "{text:?} accepted");
        assert!(
            err.contains(field) && err.contains("bad.toml"),
            "{text:?}: {err}"
        );
        assert!(!err.contains("panicked"), "{err}");
        assert!(!err.contains("hunter2"), "{err}");
        // run refuses it the same way, before touching anything
        let (ok, _, err2) = run(&["run", "--frames", "1", "--config", path.to_str().unwrap()]);
        assert!(!ok && err2.contains(field), "{text:?}: {err2}");
    }
    let (ok, _, err) = run(&[
        "check-config",
        dir.path().join("absent.toml").to_str().unwrap(),
    ]);
    assert!(!ok && err.contains("absent.toml"), "{err}");
    // flags are validated too, naming the flag
    let (ok, _, err) = run(&[
        "run",
        "--frames",
        "1",
        "--model",
        model().to_str().unwrap(),
        "--size",
        "640by480",
    ]);
    assert!(!ok && err.contains("--size"), "{err}");
    let (ok, _, err) = run(&[
        "detect",
        "--model",
        model().to_str().unwrap(),
        "--conf",
        "7",
        "x.png",
    ]);
    assert!(!ok && err.contains("--conf"), "{err}");
}
