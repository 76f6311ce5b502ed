//! ONNX export parity: the exported graph, run by tract and by onnxruntime,
//! computes what candle computes (`decode(forward_t(x, false))`), for a
//! student with seeded random weights and non-trivial BatchNorm statistics
//! (so the BN folding is exercised); the metadata is ultralytics'.
//!
//! The onnxruntime half runs `tests/onnx_check.py`, which needs
//! `pip install onnx onnxruntime numpy`; set IRDISTILL_SKIP_PYREF=1 to skip
//! it where Python packages cannot be installed.
#![cfg(feature = "trainer")]

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use irdistill::trainer::export::{
    build_model_proto, export_onnx, proto::encode_model, ExportOptions, ExportSummary,
};
use irdistill::trainer::model::{ModelConfig, YoloV8};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tract_onnx::prelude::*;

const TOL: f32 = 1e-3;

/// A model whose every Var (weights, BN affine and running statistics,
/// head biases) is drawn from a seeded generator, then two training-mode
/// passes so BatchNorm's own update path also shapes the statistics.
fn seeded_model(scale: &str, names: &[&str], imgsz: usize, seed: u64) -> (VarMap, YoloV8) {
    let cfg = ModelConfig::new(scale, names, imgsz);
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    let model = YoloV8::load(vb, &cfg).unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    {
        let data = varmap.data().lock().unwrap();
        let mut names: Vec<&String> = data.keys().collect();
        names.sort();
        for name in names {
            let var = &data[name];
            let t = var.as_tensor();
            let n = t.elem_count();
            let (lo, hi) = if name.ends_with("running_mean") || name.ends_with("bn.bias") {
                (-0.3, 0.3)
            } else if name.ends_with("running_var") {
                (0.5, 2.0)
            } else if name.ends_with("bn.weight") {
                (0.5, 1.5)
            } else if t.rank() == 4 {
                // Kaiming-uniform for ReLU-like activations: keeps
                // activations O(1) through the depth.
                let fan_in = (n / t.dim(0).unwrap()) as f64;
                let b = (6.0 / fan_in).sqrt();
                (-b, b)
            } else {
                (-1.0, 1.0) // head conv biases
            };
            let values: Vec<f32> = (0..n).map(|_| rng.random_range(lo..hi) as f32).collect();
            var.set(&Tensor::from_vec(values, t.shape(), &Device::Cpu).unwrap())
                .unwrap();
        }
    }
    let x = random_input(2, imgsz, seed + 1);
    for _ in 0..2 {
        model.forward_t(&x, true).unwrap();
    }
    (varmap, model)
}

fn random_input(batch: usize, imgsz: usize, seed: u64) -> Tensor {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let n = batch * 3 * imgsz * imgsz;
    let v: Vec<f32> = (0..n).map(|_| rng.random::<f32>()).collect();
    Tensor::from_vec(v, (batch, 3, imgsz, imgsz), &Device::Cpu).unwrap()
}

/// Max |a − b| over the box rows (0..4) and over the score rows (4..).
fn max_abs_diff(a: &[f32], b: &[f32], shape: &[usize]) -> (f32, f32) {
    assert_eq!(a.len(), b.len());
    let (c, n) = (shape[1], shape[2]);
    let (mut boxes, mut scores) = (0f32, 0f32);
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        let row = (i / n) % c;
        let d = (x - y).abs();
        assert!(d.is_finite(), "non-finite value at {i}: {x} vs {y}");
        if row < 4 {
            boxes = boxes.max(d);
        } else {
            scores = scores.max(d);
        }
    }
    (boxes, scores)
}

fn run_tract(path: &Path, input: &Tensor, concrete_batch: Option<usize>) -> Vec<f32> {
    let mut model = tract_onnx::onnx().model_for_path(path).unwrap();
    if let Some(b) = concrete_batch {
        let s = input.dim(2).unwrap();
        model = model
            .with_input_fact(0, f32::fact([b, 3, s, s]).into())
            .unwrap();
    }
    let plan = model.into_optimized().unwrap().into_runnable().unwrap();
    let data = input.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let x = tract_ndarray::ArrayD::from_shape_vec(input.dims().to_vec(), data).unwrap();
    let out = plan.run(tvec!(x.into_tvalue())).unwrap();
    out[0]
        .to_plain_array_view::<f32>()
        .unwrap()
        .iter()
        .copied()
        .collect()
}

/// Writes an f32 array in NumPy's .npy format (version 1.0).
fn write_npy(path: &Path, t: &Tensor) {
    let shape = t
        .dims()
        .iter()
        .map(|d| format!("{d}, "))
        .collect::<String>();
    let mut header = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': ({shape}), }}");
    // Magic (6) + version (2) + length (2) + header, padded to 64 bytes.
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
    bytes.extend_from_slice(&(header.len() as u16).to_le_bytes());
    bytes.extend_from_slice(header.as_bytes());
    for v in t.flatten_all().unwrap().to_vec1::<f32>().unwrap() {
        bytes.extend_from_slice(&v.to_le_bytes());
    }
    std::fs::write(path, bytes).unwrap();
}

/// Runs tests/onnx_check.py; returns its JSON report, or None when
/// skipped (IRDISTILL_SKIP_PYREF=1).
fn python_reference(model: &Path, input: &Tensor, expected: &Tensor) -> Option<serde_json::Value> {
    let dir = model.parent().unwrap();
    let (x_path, y_path) = (dir.join("input.npy"), dir.join("expected.npy"));
    write_npy(&x_path, input);
    write_npy(&y_path, expected);
    let skip = std::env::var("IRDISTILL_SKIP_PYREF").is_ok_and(|v| v == "1");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/onnx_check.py");
    let out = Command::new("python3")
        .arg(&script)
        .arg(model)
        .arg(&x_path)
        .arg(&y_path)
        .args(["--tol", &TOL.to_string()])
        .output();
    let missing = "the ONNX reference check needs Python 3 with onnx, onnxruntime and numpy: \
                   pip install onnx onnxruntime numpy (or set IRDISTILL_SKIP_PYREF=1 to skip it)";
    let out = match out {
        Ok(out) => out,
        Err(e) if skip => {
            eprintln!(
                "skipped the onnxruntime reference check (IRDISTILL_SKIP_PYREF=1; python3: {e})"
            );
            return None;
        }
        Err(e) => panic!("{missing}; running python3 failed: {e}"),
    };
    let stderr = String::from_utf8_lossy(&out.stderr);
    if out.status.code() == Some(3) {
        if skip {
            eprintln!("skipped the onnxruntime reference check (IRDISTILL_SKIP_PYREF=1): {stderr}");
            return None;
        }
        panic!("{missing}\n{stderr}");
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "onnx_check.py failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    Some(serde_json::from_str(stdout.lines().last().expect("a JSON line")).unwrap())
}

/// Checks the candle output is not degenerate (so that agreement means
/// something): scores spread out, boxes of varied sizes.
fn assert_informative(y: &[f32], shape: &[usize]) {
    let n = shape[2];
    let scores = &y[4 * n..shape[1] * n];
    let mean = scores.iter().sum::<f32>() / scores.len() as f32;
    let std = (scores.iter().map(|s| (s - mean).powi(2)).sum::<f32>() / scores.len() as f32).sqrt();
    assert!(
        std > 0.02 && mean > 0.02 && mean < 0.98,
        "scores degenerate: mean {mean}, std {std}"
    );
    let w = &y[2 * n..3 * n];
    let (lo, hi) = w
        .iter()
        .fold((f32::MAX, f32::MIN), |(a, b), &v| (a.min(v), b.max(v)));
    assert!(hi - lo > 8.0, "box widths degenerate: {lo}..{hi}");
}

struct Exported {
    _dir: tempfile::TempDir,
    path: std::path::PathBuf,
    model: YoloV8,
    summary: ExportSummary,
}

fn export(scale: &str, names: &[&str], imgsz: usize, dynamic_batch: bool) -> Exported {
    let (_varmap, model) = seeded_model(scale, names, imgsz, 7);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.onnx");
    let opts = ExportOptions {
        imgsz,
        dynamic_batch,
        extra_metadata: vec![("train_data".into(), "synth: 600 pairs, seed 1".into())],
    };
    let summary = export_onnx(&model, &opts, &path).unwrap();
    Exported {
        _dir: dir,
        path,
        model,
        summary,
    }
}

/// student-p at 160 (grids 20, 10 and 5: the odd P5 grid exercises the
/// upsample/concat shapes), three classes, batch 1: tract and
/// onnxruntime against candle.
#[test]
fn tract_and_onnxruntime_match_candle() {
    let imgsz = 160;
    let e = export("student-p", &["person", "car", "it's"], imgsz, false);
    let x = random_input(1, imgsz, 11);
    let expected = e.model.predict(&x).unwrap();
    let shape = expected.dims().to_vec();
    assert_eq!(shape, [1, 7, 400 + 100 + 25]);
    assert_eq!(e.summary.output_shape, [1, 7, 525]);
    let want = expected.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    assert_informative(&want, &shape);

    let got = run_tract(&e.path, &x, None);
    let (boxes, scores) = max_abs_diff(&got, &want, &shape);
    println!("tract vs candle (student-p @{imgsz}, batch 1): max |Δ| boxes {boxes:.2e} px, scores {scores:.2e}");
    assert!(
        boxes <= TOL && scores <= TOL,
        "tract differs from candle: boxes {boxes}, scores {scores}"
    );

    if let Some(report) = python_reference(&e.path, &x, &expected) {
        println!("onnxruntime vs candle (student-p @{imgsz}, batch 1): {report}");
        assert_eq!(report["output_shape"], serde_json::json!([1, 7, 525]));
        assert_eq!(report["input_shape"], serde_json::json!([1, 3, 160, 160]));
        assert_eq!(report["opset"], serde_json::json!(17));
        assert_eq!(
            report["metadata"]["names"],
            "{0: 'person', 1: 'car', 2: \"it's\"}"
        );
    }
}

/// A `dynamic_batch` export runs with batch 2 in tract (symbolic and
/// concretised batch) and onnxruntime.
#[test]
fn dynamic_batch_runs_with_batch_2() {
    let imgsz = 128;
    let e = export("student-p", &["person", "car"], imgsz, true);
    let x = random_input(2, imgsz, 12);
    let expected = e.model.predict(&x).unwrap();
    let shape = expected.dims().to_vec();
    assert_eq!(shape, [2, 6, 336]);
    let want = expected.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    assert_informative(&want, &shape);

    for concrete in [None, Some(2)] {
        let got = run_tract(&e.path, &x, concrete);
        let (boxes, scores) = max_abs_diff(&got, &want, &shape);
        println!("tract ({concrete:?} batch) vs candle, batch 2: max |Δ| boxes {boxes:.2e} px, scores {scores:.2e}");
        assert!(
            boxes <= TOL && scores <= TOL,
            "tract differs: boxes {boxes}, scores {scores}"
        );
    }
    // The two images of the batch are computed independently.
    let single = e.model.predict(&x.narrow(0, 1, 1).unwrap()).unwrap();
    let second = expected.narrow(0, 1, 1).unwrap();
    let d = (single - second)
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    assert!(d < 1e-3, "batch item differs from single run by {d}");

    if let Some(report) = python_reference(&e.path, &x, &expected) {
        println!("onnxruntime vs candle, batch 2: {report}");
        assert_eq!(
            report["input_shape"],
            serde_json::json!(["batch", 3, 128, 128])
        );
        assert_eq!(
            report["declared_output_shape"],
            serde_json::json!(["batch", 6, 336])
        );
        assert_eq!(report["output_shape"], serde_json::json!([2, 6, 336]));
    }
}

/// The metadata ultralytics' tools read, and our own; the file decodes
/// (with tract's prost decoder) to exactly the message we encoded.
#[test]
fn metadata_and_encoding_round_trip() {
    let e = export("student-p", &["person", "car"], 64, false);
    let proto = tract_onnx::onnx().proto_model_for_path(&e.path).unwrap();
    let opts = ExportOptions {
        imgsz: 64,
        dynamic_batch: false,
        extra_metadata: vec![("train_data".into(), "synth: 600 pairs, seed 1".into())],
    };
    let built = build_model_proto(&e.model, &opts).unwrap();
    assert!(
        proto == built,
        "decoded ModelProto differs from the encoded one"
    );
    assert_eq!(
        encode_model(&proto).unwrap(),
        std::fs::read(&e.path).unwrap()
    );

    let meta: HashMap<&str, &str> = proto
        .metadata_props
        .iter()
        .map(|p| (p.key.as_str(), p.value.as_str()))
        .collect();
    let expect = [
        ("names", "{0: 'person', 1: 'car'}"),
        ("stride", "32"),
        ("imgsz", "[64, 64]"),
        ("task", "detect"),
        ("batch", "1"),
        ("producer", "irdistill"),
        ("version", env!("CARGO_PKG_VERSION")),
        ("scale", "student-p"),
        ("train_data", "synth: 600 pairs, seed 1"),
    ];
    for (k, v) in expect {
        assert_eq!(meta.get(k).copied(), Some(v), "metadata {k}");
    }
    assert_eq!((proto.ir_version, proto.opset_import[0].version), (8, 17));
    assert_eq!(proto.producer_name, "irdistill");
    let g = proto.graph.as_ref().unwrap();
    assert_eq!(g.input.len(), 1);
    assert_eq!(g.input[0].name, "images");
    assert_eq!(g.output[0].name, "output0");
    assert_eq!(e.summary.nodes, g.node.len());
    assert_eq!(
        e.summary.bytes,
        std::fs::metadata(&e.path).unwrap().len() as usize
    );
    // No BatchNormalization left: folded into the convolutions.
    assert!(g.node.iter().all(|n| n.op_type != "BatchNormalization"));
    // tract carries the metadata too.
    let m = tract_onnx::onnx().model_for_path(&e.path).unwrap();
    let names = m.properties.get("onnx.metadata_props.names").unwrap();
    assert_eq!(
        names
            .try_as_plain_ram()
            .unwrap()
            .to_scalar::<String>()
            .unwrap(),
        "{0: 'person', 1: 'car'}"
    );
}

#[test]
fn export_errors_name_the_problem() {
    let (_v, model) = seeded_model("student-p", &["person"], 64, 1);
    let dir = tempfile::tempdir().unwrap();
    let mut opts = ExportOptions::new(100);
    let e = export_onnx(&model, &opts, &dir.path().join("a.onnx"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("imgsz") && e.contains("100"), "{e}");
    opts.imgsz = 64;
    opts.extra_metadata.push(("names".into(), "x".into()));
    let e = export_onnx(&model, &opts, &dir.path().join("a.onnx"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("\"names\"") && e.contains("collides"), "{e}");
    opts.extra_metadata.clear();
    let e = export_onnx(&model, &opts, &dir.path().join("no/such/dir/a.onnx")).unwrap_err();
    assert!(format!("{e:#}").contains("no/such/dir/a.onnx"), "{e:#}");
}

/// Sizes at imgsz 320 (printed for the record; student-n at nc = 80 is
/// YOLOv8n, whose ultralytics export is about 12.2 MB).
#[test]
fn sizes_at_320() {
    for (scale, nc) in [("student-p", 2), ("student-n", 2), ("student-n", 80)] {
        let names: Vec<String> = (0..nc).map(|i| format!("class{i}")).collect();
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        let cfg = ModelConfig::new(scale, &names, 320);
        let varmap = VarMap::new();
        let model = YoloV8::load(
            VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu),
            &cfg,
        )
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.onnx");
        let s = export_onnx(&model, &ExportOptions::new(320), &path).unwrap();
        assert_eq!(s.output_shape, [1, 4 + nc, 2100]);
        // One tract inference (after a warm-up), for the record only.
        let plan = tract_onnx::onnx()
            .model_for_path(&path)
            .unwrap()
            .into_optimized()
            .unwrap()
            .into_runnable()
            .unwrap();
        let x = tract_ndarray::ArrayD::<f32>::zeros(vec![1, 3, 320, 320]);
        plan.run(tvec!(x.clone().into_tvalue())).unwrap();
        let t0 = std::time::Instant::now();
        let y = plan.run(tvec!(x.into_tvalue())).unwrap();
        let ms = t0.elapsed().as_secs_f64() * 1e3;
        assert_eq!(y[0].shape(), [1, 4 + nc, 2100]);
        println!(
            "{scale} nc={nc} @320: {} nodes, {} initializer values, {} bytes, output {:?}, tract {ms:.0} ms",
            s.nodes, s.initializer_values, s.bytes, s.output_shape
        );
    }
}

/// `--init` from an ONNX export (BatchNorm folded into the convolutions):
/// a freshly initialised student set from the file predicts what the
/// exported model predicts (eval mode), every tensor loaded.
#[test]
fn init_from_an_onnx_export_reproduces_its_predictions() {
    use irdistill::trainer::train::pretrained::{init_from_file, rebase_folded_batchnorm};
    let imgsz = 128;
    let e = export("student-p", &["person", "car"], imgsz, false);
    let (varmap, fresh) = seeded_model("student-p", &["person", "car"], imgsz, 99);
    let x = random_input(1, imgsz, 13);
    let want = e.model.predict(&x).unwrap();
    let before = fresh.predict(&x).unwrap();
    let report = init_from_file(&varmap, &e.path).unwrap();
    assert!(report.kept.is_empty(), "{:?}", report.kept);
    rebase_folded_batchnorm(&varmap, &report.folded).unwrap();
    let got = fresh.predict(&x).unwrap();
    let shape = want.dims().to_vec();
    let flat = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let (b0, s0) = max_abs_diff(&flat(&before), &flat(&want), &shape);
    assert!(b0 > 1.0 || s0 > 0.05, "the fresh model already agreed");
    let (boxes, scores) = max_abs_diff(&flat(&got), &flat(&want), &shape);
    println!(
        "--init from ONNX vs the exported model: max |Δ| boxes {boxes:.2e} px, scores {scores:.2e}"
    );
    assert!(
        boxes <= TOL && scores <= TOL,
        "boxes {boxes}, scores {scores}"
    );
}

/// ultralytics' names (`model.<i>.…`) load into our layers; a model with
/// another class count keeps its fresh class convolutions (named in the
/// report) and loads everything else.
#[test]
fn init_from_ultralytics_named_safetensors() {
    use irdistill::trainer::train::pretrained::init_from_file;
    let imgsz = 128;
    let (src_map, src) = seeded_model("student-p", &["person", "car", "bike"], imgsz, 5);
    let ultra_name = |ours: &str| -> String {
        if let Some(rest) = ours.strip_prefix("backbone.b") {
            format!("model.{rest}")
        } else if let Some(rest) = ours.strip_prefix("neck.n") {
            format!("model.{rest}")
        } else {
            format!("model.22.{}", ours.strip_prefix("head.").unwrap())
        }
    };
    let tensors: HashMap<String, Tensor> = src_map
        .data()
        .lock()
        .unwrap()
        .iter()
        .map(|(k, v)| (ultra_name(k), v.as_tensor().clone()))
        .collect();
    assert!(tensors.contains_key("model.0.bn.running_var"));
    assert!(tensors.contains_key("model.22.cv3.0.2.bias"));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("yolov8.safetensors");
    candle_core::safetensors::save(&tensors, &path).unwrap();

    let (map3, same) = seeded_model("student-p", &["person", "car", "bike"], imgsz, 6);
    let report = init_from_file(&map3, &path).unwrap();
    assert!(
        report.kept.is_empty() && report.unused.is_empty(),
        "{report:?}"
    );
    let x = random_input(1, imgsz, 14);
    let d = (src.predict(&x).unwrap() - same.predict(&x).unwrap())
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    assert!(d <= 1e-5, "max |Δ| {d}");

    let (map1, _) = seeded_model("student-p", &["person"], imgsz, 6);
    let report = init_from_file(&map1, &path).unwrap();
    let mut kept: Vec<&str> = report
        .kept
        .iter()
        .map(|k| k.split(':').next().unwrap())
        .collect();
    kept.sort();
    assert_eq!(
        kept,
        [
            "head.cv3.0.2.bias",
            "head.cv3.0.2.weight",
            "head.cv3.1.2.bias",
            "head.cv3.1.2.weight",
            "head.cv3.2.2.bias",
            "head.cv3.2.2.weight"
        ]
    );
    assert_eq!(report.unused.len(), 6);
}

#[test]
fn init_refuses_a_file_that_fits_nothing_or_is_not_weights() {
    use irdistill::trainer::train::pretrained::init_from_file;
    let (map, _) = seeded_model("student-p", &["person"], 128, 1);
    let dir = tempfile::tempdir().unwrap();
    let other: HashMap<String, Tensor> = [(
        "model.0.conv.weight".to_owned(),
        Tensor::zeros((5, 5, 1, 1), DType::F32, &Device::Cpu).unwrap(),
    )]
    .into();
    let path = dir.path().join("other.safetensors");
    candle_core::safetensors::save(&other, &path).unwrap();
    let err = format!("{:#}", init_from_file(&map, &path).unwrap_err());
    assert!(err.contains("none of its 1 tensors fits"), "{err}");
    let junk = dir.path().join("junk.onnx");
    std::fs::write(&junk, b"not onnx").unwrap();
    let err = format!("{:#}", init_from_file(&map, &junk).unwrap_err());
    assert!(err.contains("junk.onnx"), "{err}");
    let err = format!(
        "{:#}",
        init_from_file(&map, &dir.path().join("w.pt")).unwrap_err()
    );
    assert!(
        err.contains("w.pt") && err.contains("no such file"),
        "{err}"
    );
}
