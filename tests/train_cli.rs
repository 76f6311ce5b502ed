//! `trainer train | val | predict` end to end on tiny synthetic runs:
//! outputs, resume equivalence, NaN detection and argument errors.

use candle_core::Device;
use irdistill::trainer::checkpoint;
use std::path::Path;
use std::process::Output;

mod trainer_common;
use trainer_common::{ok, trainer};

/// A tiny but complete run: 24 generated pairs at 64 px.
fn tiny(out: &Path, epochs: &str, extra: &[&str]) -> Output {
    let mut args = vec![
        "train",
        "--data",
        "synth",
        "--model",
        "student-p",
        "--imgsz",
        "64",
        "--epochs",
        epochs,
        "--batch",
        "8",
        "--synth-train",
        "24",
        "--synth-val",
        "8",
        "--seed",
        "3",
        "--out",
    ];
    args.push(out.to_str().unwrap());
    args.extend_from_slice(extra);
    trainer(&args)
}

#[test]
fn a_run_writes_results_checkpoints_and_evaluates() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    let stdout = ok(&tiny(&run, "2", &[]));
    let last_line: serde_json::Value =
        serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    assert_eq!(last_line["epochs"], 2);
    for f in [
        "results.csv",
        "results.png",
        "last.safetensors",
        "best.safetensors",
    ] {
        assert!(run.join(f).is_file(), "missing {f}");
    }
    let csv = std::fs::read_to_string(run.join("results.csv")).unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines.len(), 3);
    assert!(lines[0].starts_with(
        "epoch,train/box_loss,train/cls_loss,train/dfl_loss,metrics/mAP50(B),metrics/mAP50-95(B)"
    ));
    assert!(lines[0].contains("metrics/mAP50(night)") && lines[0].contains("images_per_s"));
    let ckpt = checkpoint::load(&run.join("last.safetensors"), &Device::Cpu).unwrap();
    assert_eq!(ckpt.meta.config.names, vec!["person", "car"]);
    assert_eq!(ckpt.meta.config.imgsz, 64);
    assert_eq!(ckpt.meta.progress.unwrap().epochs_done, 2);

    // val needs no model flags: the checkpoint carries its config
    let best = run.join("best.safetensors");
    let val = ok(&trainer(&[
        "val",
        "--weights",
        best.to_str().unwrap(),
        "--data",
        "synth",
        "--synth-pairs",
        "8",
        "--split",
        "test",
    ]));
    let metrics: serde_json::Value = serde_json::from_str(val.lines().last().unwrap()).unwrap();
    assert!(metrics["overall"]["map50"].as_f64().is_some(), "{val}");

    // export: ultralytics layout, loadable by tract, metadata from the run
    let onnx = tmp.path().join("m.onnx");
    let exp = ok(&trainer(&[
        "export",
        "--weights",
        best.to_str().unwrap(),
        "--out",
        onnx.to_str().unwrap(),
        "--dynamic",
    ]));
    let exp: serde_json::Value = serde_json::from_str(exp.lines().last().unwrap()).unwrap();
    assert_eq!(exp["output_shape"], serde_json::json!([1, 6, 84]));
    use tract_onnx::prelude::*;
    let model = tract_onnx::onnx().model_for_path(&onnx).unwrap();
    assert_eq!(model.outputs.len(), 1);
    let proto = tract_onnx::onnx().proto_model_for_path(&onnx).unwrap();
    let meta: std::collections::HashMap<_, _> = proto
        .metadata_props
        .iter()
        .map(|p| (p.key.clone(), p.value.clone()))
        .collect();
    assert_eq!(meta["names"], "{0: 'person', 1: 'car'}");
    assert_eq!(meta["imgsz"], "[64, 64]");
    assert_eq!(meta["train_data"], "synth");

    // predict writes annotated copies and one JSON line per image
    let img = tmp.path().join("frame.png");
    let gen = irdistill::shared::synth::Generator::new(Default::default(), 1).unwrap();
    gen.pair(0).pair.rgb.save(&img).unwrap();
    let pred_dir = tmp.path().join("pred");
    let pred = ok(&trainer(&[
        "predict",
        "--weights",
        best.to_str().unwrap(),
        "--out",
        pred_dir.to_str().unwrap(),
        "--conf",
        "0.01",
        img.to_str().unwrap(),
    ]));
    let line: serde_json::Value = serde_json::from_str(pred.lines().next().unwrap()).unwrap();
    assert_eq!(line["width"], 320);
    assert!(pred_dir.join("frame.png").is_file());
    // never over the input itself
    let same = trainer(&[
        "predict",
        "--weights",
        best.to_str().unwrap(),
        "--out",
        tmp.path().to_str().unwrap(),
        img.to_str().unwrap(),
    ]);
    assert!(!same.status.success());
    assert!(String::from_utf8_lossy(&same.stderr).contains("would overwrite"));
}

fn tensors(path: &Path) -> std::collections::HashMap<String, candle_core::Tensor> {
    checkpoint::load(path, &Device::Cpu).unwrap().tensors
}

#[test]
fn an_interrupted_run_resumed_ends_like_an_unbroken_one() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    ok(&tiny(&a, "3", &[]));
    ok(&tiny(&b, "3", &["--stop-after", "1"]));
    let half = checkpoint::load(&b.join("last.safetensors"), &Device::Cpu).unwrap();
    assert_eq!(half.meta.progress.unwrap().epochs_done, 1);
    ok(&trainer(&[
        "train",
        "--resume",
        "--out",
        b.to_str().unwrap(),
    ]));
    let (ta, tb) = (
        tensors(&a.join("last.safetensors")),
        tensors(&b.join("last.safetensors")),
    );
    assert_eq!(ta.len(), tb.len());
    let mut worst = 0.0f32;
    for (name, x) in &ta {
        let y = &tb[name];
        let d: f32 = (x - y)
            .unwrap()
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap()
            .to_scalar()
            .unwrap();
        worst = worst.max(d);
    }
    assert!(
        worst < 1e-5,
        "resumed weights differ from the unbroken run by {worst}"
    );
    let csv = std::fs::read_to_string(b.join("results.csv")).unwrap();
    assert_eq!(csv.lines().count(), 4, "{csv}");
}

#[test]
fn a_diverging_run_stops_with_the_step_named() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tiny(&tmp.path().join("nan"), "2", &["--lr0", "1e30"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("non-finite loss at epoch"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn bad_arguments_and_data_are_named() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("x");
    for (extra, needle) in [
        (vec!["--imgsz", "100"], "--imgsz 100"),
        (vec!["--model", "student-q"], "student-q"),
        (vec!["--data", "/no/such/folder"], "/no/such/folder"),
        (vec!["--epochs", "0"], "--epochs"),
    ] {
        let mut args = vec!["train", "--out", dir.to_str().unwrap()];
        args.extend_from_slice(&extra);
        let out = trainer(&args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && err.contains(needle),
            "{extra:?}: {err}"
        );
        assert!(!err.contains("panicked"), "{err}");
    }
    let out = trainer(&["val", "--weights", "/no/such.safetensors"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("/no/such.safetensors"));
    let junk = tmp.path().join("junk.safetensors");
    std::fs::write(&junk, b"not a checkpoint").unwrap();
    let out = trainer(&["val", "--weights", junk.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("junk.safetensors"),
        "{err}"
    );
}

#[test]
fn bench_prints_step_time_as_json() {
    let out = trainer(&[
        "bench",
        "--model",
        "student-p",
        "--imgsz",
        "64",
        "--batch",
        "2",
        "--steps",
        "2",
        "--warmup",
        "1",
    ]);
    let stdout = ok(&out);
    let j: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    let ms = j["ms_per_step"].as_f64().unwrap();
    let ips = j["images_per_s"].as_f64().unwrap();
    assert!(ms > 0.0 && (ips - 2.0 * 1e3 / ms).abs() < 1e-6 * ips, "{j}");
    assert_eq!(
        (j["batch"].as_u64(), j["steps"].as_u64()),
        (Some(2), Some(2))
    );
    let out = trainer(&["bench", "--model", "student-q"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("student-q"));
}

/// The fast CPU kernels (`irdistill::trainer::ops`) change nothing but speed: the
/// same tiny run with candle's reference ops logs the same losses and ends
/// with the same weights, up to float noise. AdamW turns rounding in
/// near-zero gradients into lr-sized steps, so after a few steps weights
/// agree to about 1e-3 (norm-wise), not 1e-6; the gradients themselves are
/// checked against f64 in tests/fast_kernels.rs.
#[test]
fn fast_kernels_train_like_candles_reference_ops() {
    let tmp = tempfile::tempdir().unwrap();
    let (fast, reference) = (tmp.path().join("fast"), tmp.path().join("ref"));
    ok(&tiny(&fast, "2", &[]));
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_trainer"))
        .env("IRDISTILL_REFERENCE_OPS", "1")
        .args([
            "train",
            "--data",
            "synth",
            "--model",
            "student-p",
            "--imgsz",
            "64",
        ])
        .args(["--epochs", "2", "--batch", "8", "--synth-train", "24"])
        .args(["--synth-val", "8", "--seed", "3", "--out"])
        .arg(&reference)
        .output()
        .unwrap();
    ok(&out);

    // results.csv: the loss columns of every epoch
    let losses = |dir: &Path| -> Vec<f64> {
        let csv = std::fs::read_to_string(dir.join("results.csv")).unwrap();
        csv.lines()
            .skip(1)
            .flat_map(|l| {
                l.split(',')
                    .skip(1)
                    .take(3)
                    .map(|v| v.parse().unwrap())
                    .collect::<Vec<f64>>()
            })
            .collect()
    };
    let (lf, lr) = (losses(&fast), losses(&reference));
    assert_eq!(lf.len(), lr.len());
    for (a, b) in lf.iter().zip(&lr) {
        assert!(
            (a - b).abs() <= 1e-3 * b.abs().max(1e-3),
            "losses {lf:?} vs {lr:?}"
        );
    }

    let (tf, tr) = (
        tensors(&fast.join("last.safetensors")),
        tensors(&reference.join("last.safetensors")),
    );
    assert_eq!(tf.len(), tr.len());
    let norm = |t: &candle_core::Tensor| -> f32 {
        t.sqr()
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
            .sqrt()
    };
    let mut worst = (0.0f32, String::new());
    for (name, x) in tf.iter().filter(|(n, _)| n.starts_with("model.")) {
        let d = norm(&(x - &tr[name]).unwrap()) / norm(x).max(1e-12);
        if d > worst.0 {
            worst = (d, name.clone());
        }
    }
    eprintln!(
        "fast vs reference ops after 6 steps: worst weight tensor {} differs by {:.2e} (norm-wise)",
        worst.1, worst.0
    );
    assert!(worst.0 < 1e-2, "{} differs by {:.2e}", worst.1, worst.0);
}
