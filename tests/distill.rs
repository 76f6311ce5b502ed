//! The RGB+IR teacher and distillation end to end on tiny synthetic runs:
//! the teacher stays frozen, the student learns, unlabeled pairs work, the
//! distilled student exports as a plain RGB model, `experiment` writes its
//! results schema, and wrong inputs are named.

use candle_core::{Device, Tensor};
use irdistill::trainer::checkpoint;
use irdistill::trainer::distill::{DistillLoss, DistillOptions};
use irdistill::trainer::model::Fusion;
use irdistill::trainer::train::optim::OptimizerKind;
use irdistill::trainer::train::options::TrainOptions;
use irdistill::trainer::train::run::Trainer;
use irdistill::trainer::train::vars::named_vars;
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::OnceLock;
use tract_onnx::prelude::Framework;

mod trainer_common;
use trainer_common::{ok, trainer};

fn failure(out: &Output) -> String {
    assert!(!out.status.success(), "trainer unexpectedly succeeded");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

const TINY: [&str; 12] = [
    "--data",
    "synth",
    "--imgsz",
    "64",
    "--batch",
    "4",
    "--synth-train",
    "8",
    "--synth-val",
    "4",
    "--seed",
    "5",
];

/// One tiny CCAFusion teacher shared by the tests (trained once).
fn teacher() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap().keep();
        let run = dir.join("teacher");
        let mut args = vec!["train", "--model", "teacher-p", "--epochs", "1", "--out"];
        args.push(run.to_str().unwrap());
        args.extend_from_slice(&TINY);
        ok(&trainer(&args));
        run.join("best.safetensors")
    })
}

fn distill_options(teacher: &Path, unlabeled: Option<&str>) -> DistillOptions {
    DistillOptions {
        unlabeled: unlabeled.map(str::to_string),
        ..DistillOptions::with_defaults(teacher.to_path_buf())
    }
}

fn student_options(out: &Path, distill: Option<DistillOptions>) -> TrainOptions {
    TrainOptions {
        data: "synth".into(),
        model: "student-p".into(),
        imgsz: 64,
        epochs: 1,
        batch: 4,
        out: out.to_path_buf(),
        seed: 5,
        optimizer: OptimizerKind::AdamW,
        lr0: 0.002,
        lrf: 0.01,
        weight_decay: 0.0005,
        momentum: 0.9,
        warmup_epochs: 3.0,
        workers: 1,
        synth_train: 8,
        synth_val: 4,
        augment: true,
        val_split: irdistill::shared::condition::Split::Val,
        stop_after: None,
        fusion: None,
        distill,
        repeat: 1,
        synth_conditions: None,
        init: None,
    }
}

fn snapshot(tensors: impl Iterator<Item = (String, Tensor)>) -> Vec<(String, Vec<u32>)> {
    let mut v: Vec<(String, Vec<u32>)> = tensors
        .map(|(n, t)| {
            let bits = t
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap()
                .into_iter()
                .map(f32::to_bits)
                .collect();
            (n, bits)
        })
        .collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

#[test]
fn one_distillation_step_leaves_the_teacher_bitwise_unchanged_and_moves_the_student() {
    let tmp = tempfile::tempdir().unwrap();
    let mut distill = distill_options(teacher(), Some("synth:4"));
    // every term, so every kind of head is checked (contrastive is off by default)
    distill.losses = vec![
        DistillLoss::Feature,
        DistillLoss::Contrastive,
        DistillLoss::Response,
    ];
    let opts = student_options(&tmp.path().join("s"), Some(distill));
    let mut t = Trainer::new(opts.clone(), "cpu", false).unwrap();
    // the pseudo-label threshold was chosen on the validation pairs
    let q: serde_json::Value = serde_json::from_slice(
        &std::fs::read(tmp.path().join("s").join("pseudo_labels.json")).unwrap(),
    )
    .unwrap();
    assert!(
        q["threshold"].as_f64().is_some_and(|c| c > 0.0 && c < 1.0),
        "{q}"
    );
    // the same seed starts the same heads (linear biases included)
    let again = Trainer::new(
        TrainOptions {
            out: tmp.path().join("s2"),
            ..opts
        },
        "cpu",
        false,
    )
    .unwrap();
    let heads = |t: &Trainer| {
        snapshot(
            named_vars(&t.distiller().unwrap().heads)
                .into_iter()
                .map(|(n, v)| (n, v.as_tensor().clone())),
        )
    };
    assert_eq!(heads(&t), heads(&again));
    let d = t.distiller().expect("distilling");
    let teacher_names: HashSet<String> = d.teacher_weights().keys().cloned().collect();
    assert!(teacher_names.contains("backbone_ir.b0.conv.weight"));
    let teacher_before = snapshot(
        d.teacher_weights()
            .iter()
            .map(|(n, t)| (n.clone(), t.clone())),
    );
    // the teacher file on disk too
    let file_before = std::fs::read(teacher()).unwrap();
    let student_before = snapshot(
        named_vars(t.varmap())
            .into_iter()
            .map(|(n, v)| (n, v.as_tensor().clone())),
    );

    // the optimizer holds the student and the distillation heads, never the teacher
    let optimized = t.optimized_names();
    assert!(optimized.iter().any(|n| n.starts_with("distill.adapter")));
    assert!(optimized.iter().any(|n| n.starts_with("distill.project")));
    assert!(!optimized
        .iter()
        .any(|n| n.starts_with("backbone_ir") || n.starts_with("fusion")));

    let (batch, unlabeled) = t.first_batches().unwrap();
    assert!(batch.ir.is_some(), "distillation loads the IR image");
    assert!(unlabeled
        .as_ref()
        .unwrap()
        .labels
        .iter()
        .all(|l| l.is_empty()));
    // two steps: the warm-up schedule starts at a learning rate of 0
    for _ in 0..2 {
        let parts = t.train_step(&batch, unlabeled.as_ref()).unwrap();
        assert!(parts[3] > 0.0, "no distillation loss: {parts:?}");
    }

    let d = t.distiller().unwrap();
    let teacher_after = snapshot(
        d.teacher_weights()
            .iter()
            .map(|(n, t)| (n.clone(), t.clone())),
    );
    assert!(
        teacher_before == teacher_after,
        "the teacher's tensors changed"
    );
    assert_eq!(std::fs::read(teacher()).unwrap(), file_before);
    let student_after = snapshot(
        named_vars(t.varmap())
            .into_iter()
            .map(|(n, v)| (n, v.as_tensor().clone())),
    );
    let unchanged: Vec<&str> = student_before
        .iter()
        .zip(&student_after)
        .filter(|(a, b)| a.1 == b.1)
        .map(|(a, _)| a.0.as_str())
        .collect();
    assert!(
        unchanged.is_empty(),
        "student tensors left unchanged: {unchanged:?}"
    );
}

#[test]
fn the_distilled_student_exports_as_a_plain_rgb_model() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("distilled");
    let mut args = vec![
        "distill",
        "--teacher",
        teacher().to_str().unwrap(),
        "--model",
        "student-p",
        "--epochs",
        "1",
        "--unlabeled",
        "synth:4",
        "--out",
        run.to_str().unwrap(),
    ];
    args.extend_from_slice(&TINY);
    let stdout = ok(&trainer(&args));
    let summary: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    assert_eq!(summary["epochs"], 1);
    let csv = std::fs::read_to_string(run.join("results.csv")).unwrap();
    assert!(csv.lines().next().unwrap().ends_with("train/distill_loss"));
    let last: f64 = csv
        .lines()
        .nth(1)
        .unwrap()
        .rsplit(',')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(last > 0.0);

    // checkpoint: a student config, the heads kept apart for --resume
    let ckpt = checkpoint::load(&run.join("last.safetensors"), &Device::Cpu).unwrap();
    assert_eq!(ckpt.meta.config.scale, "student-p");
    assert!(ckpt.tensors.keys().any(|k| k.starts_with("distill.")));
    assert!(!ckpt.tensors.keys().any(|k| k.contains("backbone_ir")));

    // the export holds exactly what a plain student's holds
    let plain = tmp.path().join("plain");
    let mut args = vec![
        "train",
        "--model",
        "student-p",
        "--epochs",
        "1",
        "--out",
        plain.to_str().unwrap(),
    ];
    args.extend_from_slice(&TINY);
    ok(&trainer(&args));
    let export = |run: &Path| -> Vec<String> {
        let onnx = run.join("m.onnx");
        let summary = ok(&trainer(&[
            "export",
            "--weights",
            run.join("best.safetensors").to_str().unwrap(),
            "--out",
            onnx.to_str().unwrap(),
        ]));
        let summary: serde_json::Value = serde_json::from_str(summary.trim()).unwrap();
        // an ordinary RGB student: [1, 4 + nc, anchors] for 64 px and two classes
        assert_eq!(summary["output_shape"], serde_json::json!([1, 6, 84]));
        let proto = tract_onnx::onnx().proto_model_for_path(&onnx).unwrap();
        let graph = proto.graph.unwrap();
        let mut names: Vec<String> = graph.initializer.iter().map(|t| t.name.clone()).collect();
        names.sort();
        assert_eq!(graph.input[0].name, "images");
        names
    };
    let (distilled, student) = (export(&run), export(&plain));
    assert_eq!(distilled, student);
    assert!(!distilled
        .iter()
        .any(|n| n.contains("distill") || n.contains("_ir") || n.contains("fusion")));
}

#[test]
fn teachers_are_validated_on_pairs_and_refused_where_rgb_is_all_there_is() {
    let weights = teacher().to_str().unwrap();
    let out = ok(&trainer(&[
        "val",
        "--weights",
        weights,
        "--synth-pairs",
        "4",
        "--batch",
        "2",
    ]));
    let report: serde_json::Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
    assert!(report["overall"]["map50"].is_number(), "{report}");

    let tmp = tempfile::tempdir().unwrap();
    let e = failure(&trainer(&[
        "export",
        "--weights",
        weights,
        "--out",
        tmp.path().join("t.onnx").to_str().unwrap(),
    ]));
    assert!(
        e.contains("teacher") && e.contains("trainer distill"),
        "{e}"
    );
    assert!(!tmp.path().join("t.onnx").exists());

    // a student checkpoint is not a teacher
    let plain = tmp.path().join("plain");
    let mut args = vec![
        "train",
        "--model",
        "student-p",
        "--epochs",
        "1",
        "--out",
        plain.to_str().unwrap(),
    ];
    args.extend_from_slice(&TINY);
    ok(&trainer(&args));
    let student = plain.join("best.safetensors");
    let d1 = tmp.path().join("d");
    let mut args = vec![
        "distill",
        "--teacher",
        student.to_str().unwrap(),
        "--out",
        d1.to_str().unwrap(),
    ];
    args.extend_from_slice(&TINY);
    let e = failure(&trainer(&args));
    assert!(
        e.contains("--teacher") && e.contains("not an RGB+IR teacher"),
        "{e}"
    );

    // a teacher cannot be the distilled model, nor --fusion go on a student
    let mut args = vec![
        "distill",
        "--teacher",
        weights,
        "--model",
        "teacher-p",
        "--out",
    ];
    let d2 = tmp.path().join("d2");
    args.push(d2.to_str().unwrap());
    args.extend_from_slice(&TINY);
    assert!(failure(&trainer(&args)).contains("RGB student"));
    let mut args = vec!["train", "--fusion", "add", "--out", "/nonexistent/x"];
    args.extend_from_slice(&TINY);
    assert!(failure(&trainer(&args)).contains("--fusion"));
    // a missing teacher file is named
    let mut args = vec![
        "distill",
        "--teacher",
        "/nonexistent/t.safetensors",
        "--out",
    ];
    let d3 = tmp.path().join("d3");
    args.push(d3.to_str().unwrap());
    args.extend_from_slice(&TINY);
    assert!(failure(&trainer(&args)).contains("/nonexistent/t.safetensors"));
}

#[test]
fn every_fusion_variant_trains() {
    let tmp = tempfile::tempdir().unwrap();
    for fusion in ["concat", "add", "early", "decoupled"] {
        let run = tmp.path().join(fusion);
        let mut args = vec![
            "train",
            "--model",
            "teacher-p",
            "--fusion",
            fusion,
            "--epochs",
            "1",
            "--out",
        ];
        args.push(run.to_str().unwrap());
        args.extend_from_slice(&TINY);
        ok(&trainer(&args));
        let ckpt = checkpoint::load(&run.join("best.safetensors"), &Device::Cpu).unwrap();
        assert_eq!(
            ckpt.meta.config.fusion,
            Some(fusion.parse::<FusionName>().unwrap().0)
        );
    }
}

/// `Fusion` from its flag spelling (clap's ValueEnum).
struct FusionName(Fusion);
impl std::str::FromStr for FusionName {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        use clap::ValueEnum;
        Fusion::from_str(s, false).map(FusionName)
    }
}

#[test]
fn unlabeled_pairs_from_a_folder() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("pairs");
    std::fs::create_dir_all(dir.join("rgb")).unwrap();
    std::fs::create_dir_all(dir.join("ir")).unwrap();
    for i in 0..3 {
        image::RgbImage::new(64, 48)
            .save(dir.join(format!("rgb/f{i}.png")))
            .unwrap();
        image::GrayImage::new(64, 48)
            .save(dir.join(format!("ir/f{i}.png")))
            .unwrap();
    }
    let pairs = irdistill::shared::data::UnlabeledPairs::open(&dir).unwrap();
    assert_eq!(pairs.len(), 3);
    let p = pairs.load(1).unwrap();
    assert_eq!((p.rgb.dimensions(), p.labels.len()), ((64, 48), 0));

    // an RGB image without its IR partner is named
    image::RgbImage::new(64, 48)
        .save(dir.join("rgb/lonely.png"))
        .unwrap();
    let e = format!(
        "{:#}",
        irdistill::shared::data::UnlabeledPairs::open(&dir).unwrap_err()
    );
    assert!(
        e.contains("lonely.png") && e.contains("no IR partner"),
        "{e}"
    );
    std::fs::remove_file(dir.join("rgb/lonely.png")).unwrap();
    // sizes that differ are named at load time
    image::GrayImage::new(32, 48)
        .save(dir.join("ir/f2.png"))
        .unwrap();
    let e = format!("{:#}", pairs.load(2).unwrap_err());
    assert!(e.contains("f2"), "{e}");
    // not a pairs folder
    let e = format!(
        "{:#}",
        irdistill::shared::data::UnlabeledPairs::open(tmp.path()).unwrap_err()
    );
    assert!(e.contains("images/rgb"), "{e}");

    // and through the trainer: the folder feeds distillation
    let run = tmp.path().join("run");
    std::fs::remove_file(dir.join("ir/f2.png")).unwrap();
    std::fs::remove_file(dir.join("rgb/f2.png")).unwrap();
    let opts = student_options(
        &run,
        Some(distill_options(teacher(), Some(dir.to_str().unwrap()))),
    );
    let mut t = Trainer::new(opts, "cpu", false).unwrap();
    let (batch, unlabeled) = t.first_batches().unwrap();
    assert_eq!(unlabeled.as_ref().unwrap().len(), 2);
    t.train_step(&batch, unlabeled.as_ref()).unwrap();
}

#[test]
fn experiment_writes_the_results_schema_and_resumes() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("exp");
    let args = [
        "experiment",
        "--preset",
        "quick",
        "--seeds",
        "1",
        "--imgsz",
        "64",
        "--epochs",
        "1",
        "--synth-train",
        "8",
        "--synth-test",
        "6",
        "--batch",
        "4",
        "--out",
        out.to_str().unwrap(),
    ];
    ok(&trainer(&args));
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("results.json")).unwrap()).unwrap();
    for split in ["day", "night", "fog", "adverse", "all"] {
        for arm in ["baseline", "teacher", "distilled"] {
            for metric in ["map50", "map"] {
                let v = json["splits"][split][arm][metric].as_f64();
                assert!(
                    v.is_some_and(|v| (0.0..=1.0).contains(&v)),
                    "{split}/{arm}/{metric}: {v:?}"
                );
            }
        }
    }
    let md = std::fs::read_to_string(out.join("results.md")).unwrap();
    assert!(
        md.contains("| distilled |") && md.contains("distilled − baseline"),
        "{md}"
    );
    // each arm's own evaluation is kept; a rerun reuses them
    for arm in ["baseline", "teacher", "distilled"] {
        assert!(out.join("seed0").join(arm).join("eval.json").exists());
    }
    let stderr = {
        let o = trainer(&args);
        ok(&o);
        String::from_utf8_lossy(&o.stderr).into_owned()
    };
    assert!(stderr.matches("done earlier").count() == 3, "{stderr}");
    let again: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("results.json")).unwrap()).unwrap();
    assert_eq!(again["splits"], json["splits"]);
}

#[test]
fn pseudo_label_writes_a_dataset_that_trains_and_never_overwrites() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("labeled");
    let label = |teacher: &Path, out: &Path| {
        trainer(&[
            "pseudo-label",
            "--teacher",
            teacher.to_str().unwrap(),
            "--data",
            "synth:6:night,fog",
            "--synth-val",
            "4",
            "--batch",
            "4",
            "--out",
            out.to_str().unwrap(),
        ])
    };
    let o = label(teacher(), &out);
    let stdout = ok(&o);
    let summary: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    assert_eq!(summary["pairs"], 6);
    assert!(
        summary["validation"]["threshold"].as_f64().is_some(),
        "{summary}"
    );
    for d in ["images/rgb", "images/ir", "labels"] {
        assert_eq!(std::fs::read_dir(out.join(d)).unwrap().count(), 6, "{d}");
    }
    let written: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("pseudo_label.json")).unwrap()).unwrap();
    assert_eq!(written["threshold"], summary["threshold"]);
    // the folder is a dataset `trainer train` takes as it is
    let run = tmp.path().join("student");
    ok(&trainer(&[
        "train",
        "--data",
        out.to_str().unwrap(),
        "--imgsz",
        "64",
        "--epochs",
        "1",
        "--batch",
        "4",
        "--out",
        run.to_str().unwrap(),
    ]));
    // a second run into the same folder refuses, touching nothing
    let before = std::fs::read(out.join("meta.json")).unwrap();
    let err = failure(&label(teacher(), &out));
    assert!(err.contains("not empty"), "{err}");
    assert_eq!(std::fs::read(out.join("meta.json")).unwrap(), before);
    // an RGB student cannot label pairs
    let err = failure(&label(&run.join("best.safetensors"), &tmp.path().join("x")));
    assert!(err.contains("RGB student"), "{err}");
}

#[test]
fn the_student_can_start_from_the_teachers_rgb_stream() {
    let tmp = tempfile::tempdir().unwrap();
    let mut distill = distill_options(teacher(), None);
    distill.init_from_teacher = true;
    let t = Trainer::new(
        student_options(&tmp.path().join("s"), Some(distill)),
        "cpu",
        false,
    )
    .unwrap();
    let teacher_w = t.distiller().unwrap().teacher_weights().clone();
    let student: std::collections::HashMap<String, Tensor> = named_vars(t.varmap())
        .into_iter()
        .map(|(n, v)| (n, v.as_tensor().clone()))
        .collect();
    for (s, from) in [
        ("backbone.b0.conv.weight", "backbone_rgb.b0.conv.weight"),
        ("neck.n12.cv1.conv.weight", "neck.n12.cv1.conv.weight"),
        ("head.cv2.0.0.conv.weight", "head.cv2.0.0.conv.weight"),
    ] {
        let (a, b) = (&student[s], &teacher_w[from]);
        let diff = (a - b).unwrap().abs().unwrap().max_all().unwrap();
        assert_eq!(diff.to_scalar::<f32>().unwrap(), 0.0, "{s}");
    }
}

#[test]
fn a_decoupled_teacher_is_imitated_by_the_students_backbone() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("teacher");
    let mut args = vec![
        "train",
        "--model",
        "teacher-p",
        "--fusion",
        "decoupled",
        "--epochs",
        "1",
        "--out",
    ];
    args.push(run.to_str().unwrap());
    args.extend_from_slice(&TINY);
    ok(&trainer(&args));
    let teacher = run.join("last.safetensors");
    let opts = student_options(
        &tmp.path().join("s"),
        Some(distill_options(&teacher, Some("synth:4"))),
    );
    let mut t = Trainer::new(opts, "cpu", false).unwrap();
    // adapters map the student's backbone (P3: 32 channels) to the common part
    let heads: Vec<(String, Vec<usize>)> = named_vars(&t.distiller().unwrap().heads)
        .into_iter()
        .map(|(n, v)| (n, v.dims().to_vec()))
        .collect();
    assert!(
        heads.contains(&("adapter.0.weight".to_string(), vec![32, 32, 1, 1])),
        "{heads:?}"
    );
    let (batch, unlabeled) = t.first_batches().unwrap();
    let parts = t.train_step(&batch, unlabeled.as_ref()).unwrap();
    assert!(parts.iter().all(|v| v.is_finite()), "{parts:?}");
    assert!(parts[3] > 0.0, "distillation adds a loss: {parts:?}");
}
