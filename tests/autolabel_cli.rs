//! `trainer import` and `trainer autolabel` end to end: side-by-side images
//! into pairs, then labels from the thermal image, scored against the
//! generator's own boxes, in a layout that `trainer train` reads back.

use irdistill::shared::data::Dataset;
use std::path::Path;

mod trainer_common;
use trainer_common::{ok, trainer};

fn synth(out: &Path, pairs: &str) {
    ok(&trainer(&[
        "synth",
        "--out",
        out.to_str().unwrap(),
        "--pairs",
        pairs,
        "--seed",
        "5",
    ]));
}

#[test]
fn autolabel_writes_a_scored_trainable_dataset_and_measures_itself() {
    let tmp = tempfile::tempdir().unwrap();
    let (src, out) = (tmp.path().join("syn"), tmp.path().join("labelled"));
    synth(&src, "30");
    let stdout = ok(&trainer(&[
        "autolabel",
        "--data",
        src.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--eval",
        src.to_str().unwrap(),
    ]));
    let summary: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    assert_eq!(summary["pairs"], 30);
    // the generator's persons are warm and upright: the labeller finds
    // many of them (a broken detector, or boxes in the wrong pixels, would
    // score near 0)
    let ap50 = summary["eval"]["ap50"].as_f64().unwrap();
    assert!(
        ap50 > 0.2,
        "AP50 of the IR labels on generated pairs: {ap50}"
    );
    assert!(summary["kept"].as_u64().unwrap() > 10, "{summary}");
    let written: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("autolabel.json")).unwrap())
            .unwrap();
    assert_eq!(written["kept"], summary["kept"]);

    // a dataset `trainer train` reads: one class, every 10th pair in val,
    // the images copied unchanged, a score on every label line
    let dataset = Dataset::open(&out).unwrap();
    assert_eq!(dataset.names, ["person"]);
    assert_eq!(dataset.samples.len(), 30);
    let val = dataset
        .samples
        .iter()
        .filter(|s| s.split == irdistill::shared::condition::Split::Val)
        .count();
    assert_eq!(val, 3);
    let first = &dataset.samples[0];
    let original = src
        .join("images/ir")
        .join(first.ir_path.file_name().unwrap());
    assert_eq!(
        std::fs::read(&first.ir_path).unwrap(),
        std::fs::read(original).unwrap()
    );
    let labels: usize = dataset.samples.iter().map(|s| s.labels.len()).sum();
    assert_eq!(labels as u64, summary["kept"].as_u64().unwrap());
    for entry in std::fs::read_dir(out.join("labels")).unwrap() {
        for line in std::fs::read_to_string(entry.unwrap().path())
            .unwrap()
            .lines()
        {
            let score: f64 = line.split_whitespace().nth(5).unwrap().parse().unwrap();
            assert!((0.5..=1.0).contains(&score), "{line}");
        }
    }

    // never over existing data
    let again = trainer(&[
        "autolabel",
        "--data",
        src.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("not empty"));
}

#[test]
fn autolabel_argument_errors_name_the_problem() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let missing = trainer(&[
        "autolabel",
        "--data",
        tmp.path().join("nowhere").to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(String::from_utf8_lossy(&missing.stderr).contains("nowhere"));
    let no_teacher = trainer(&[
        "autolabel",
        "--method",
        "teacher",
        "--data",
        tmp.path().to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(String::from_utf8_lossy(&no_teacher.stderr).contains("--teacher"));
    assert!(!out.exists());
}

/// Side-by-side images (RGB | IR) become pairs that autolabel reads.
#[test]
fn import_then_autolabel() {
    let tmp = tempfile::tempdir().unwrap();
    let (syn, sbs) = (tmp.path().join("syn"), tmp.path().join("sbs"));
    synth(&syn, "4");
    std::fs::create_dir(&sbs).unwrap();
    for entry in std::fs::read_dir(syn.join("images/rgb")).unwrap() {
        let rgb_path = entry.unwrap().path();
        let name = rgb_path.file_stem().unwrap().to_str().unwrap().to_owned();
        let rgb = image::open(&rgb_path).unwrap().to_rgb8();
        let ir_path = syn.join("images/ir").join(rgb_path.file_name().unwrap());
        let ir = image::open(ir_path).unwrap().to_rgb8();
        let (w, h) = rgb.dimensions();
        let mut both = image::RgbImage::new(2 * w, h);
        image::imageops::replace(&mut both, &rgb, 0, 0);
        image::imageops::replace(&mut both, &ir, w as i64, 0);
        both.save(sbs.join(format!("{name}.png"))).unwrap();
    }
    let pairs = tmp.path().join("pairs");
    let stdout = ok(&trainer(&[
        "import",
        "--side-by-side",
        sbs.to_str().unwrap(),
        "--out",
        pairs.to_str().unwrap(),
        "--size",
        "160x128",
    ]));
    assert!(stdout.contains("\"pairs\":4"), "{stdout}");
    let labelled = tmp.path().join("labelled");
    ok(&trainer(&[
        "autolabel",
        "--data",
        pairs.to_str().unwrap(),
        "--out",
        labelled.to_str().unwrap(),
    ]));
    let dataset = Dataset::open(&labelled).unwrap();
    assert_eq!(dataset.samples.len(), 4);
    assert!(dataset
        .samples
        .iter()
        .all(|s| (s.width_px, s.height_px) == (160, 128)));
}

/// `trainer experiment --preset real` on generated pairs standing in for a
/// recording: the labelling and bundled-model arms end to end, the
/// results schema, and a rerun that keeps finished arms.
#[test]
fn real_experiment_scores_arms_and_resumes() {
    let tmp = tempfile::tempdir().unwrap();
    let (pool, eval, out) = (
        tmp.path().join("pool"),
        tmp.path().join("eval"),
        tmp.path().join("exp"),
    );
    synth(&pool, "12");
    ok(&trainer(&[
        "synth",
        "--out",
        eval.to_str().unwrap(),
        "--pairs",
        "10",
        "--seed",
        "9",
    ]));
    let model = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/student-p.onnx");
    // `trainer experiment --preset real` on these folders, with `extra`
    let experiment = |extra: &[&str]| {
        let mut args = vec![
            "experiment",
            "--preset",
            "real",
            "--pool",
            pool.to_str().unwrap(),
            "--eval",
            eval.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        trainer(&args)
    };
    let bundled = [
        "--arms",
        "ir_autolabels,bundled",
        "--bundled",
        model.to_str().unwrap(),
    ];
    let run = || experiment(&bundled);
    ok(&run());
    let results: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("results.json")).unwrap()).unwrap();
    for arm in ["ir_autolabels", "bundled"] {
        let ap50 = results["arms"][arm]["ap50"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&ap50), "{results}");
        assert!(results["arms"][arm]["wall_s"].as_f64().is_some());
    }
    // the bundled model was trained on this generator: it finds persons
    assert!(
        results["arms"]["bundled"]["ap50"].as_f64().unwrap() > 0.2,
        "{results}"
    );
    let commands = results["commands"].as_array().unwrap();
    assert!(commands[0]
        .as_str()
        .unwrap()
        .starts_with("trainer autolabel"));
    assert!(out.join("labels_ir/autolabel.json").exists());
    let md = std::fs::read_to_string(out.join("results.md")).unwrap();
    assert!(md.contains("| ir_autolabels |"), "{md}");
    // a rerun keeps what finished
    let again = run();
    ok(&again);
    assert!(String::from_utf8_lossy(&again.stderr).contains("done earlier"));
    // a run of one arm still reports every finished arm
    ok(&experiment(&["--arms", "ir_autolabels"]));
    let results: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("results.json")).unwrap()).unwrap();
    assert!(results["arms"]["bundled"]["ap50"].is_number(), "{results}");

    let err = trainer(&[
        "experiment",
        "--preset",
        "real",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(String::from_utf8_lossy(&err.stderr).contains("--pool"));
    let err = experiment(&["--arms", "nope"]);
    assert!(String::from_utf8_lossy(&err.stderr).contains("unknown arm 'nope'"));
}
