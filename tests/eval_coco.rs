//! The COCO evaluator against pycocotools on many random cases, and the
//! `trainer eval-coco` command end to end.
//!
//! Needs `python3` with pycocotools (`pip install pycocotools`); without it
//! the reference tests fail unless IRDISTILL_SKIP_PYREF=1 is set. Set
//! IRDISTILL_PYTHON to use another interpreter, IRDISTILL_KEEP_CASES=DIR to
//! keep the generated gt.json / dt.json cases for inspection.

use irdistill::shared::bbox::{BBox, Detection, Label};
use irdistill::shared::condition::Condition;
use irdistill::shared::eval::report::to_xywh;
use irdistill::shared::eval::{evaluate_dataset, evaluate_files, EvalImage, Metrics};
use rand::seq::{IndexedRandom, SliceRandom};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Random COCO-file cases compared with pycocotools.
const FILE_CASES: u64 = 80;
/// Random dataset-API cases (each compared per condition subset too).
const DATASET_CASES: u64 = 12;
/// Agreement required of every number.
const TOLERANCE: f64 = 1e-4;
/// What we actually expect: the same arithmetic, so only summation order
/// (numpy sums pairwise) can differ.
const EXACT: f64 = 1e-9;

// ---------------------------------------------------------------- cases ----

/// Writes `gt.json` and `dt.json` of one case into `root/name`.
fn write_case(root: &Path, name: &str, gt: &Value, dt: &Value) -> PathBuf {
    let dir = root.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("gt.json"), serde_json::to_vec(gt).unwrap()).unwrap();
    std::fs::write(dir.join("dt.json"), serde_json::to_vec(dt).unwrap()).unwrap();
    dir
}

/// How a case's numbers are rounded: real files hold integers, 2-decimal
/// values or full doubles.
#[derive(Clone, Copy)]
enum Rounding {
    Integer,
    Hundredths,
    Raw,
}

impl Rounding {
    fn apply(self, v: f64) -> f64 {
        match self {
            Rounding::Integer => v.round(),
            Rounding::Hundredths => (v * 100.0).round() / 100.0,
            Rounding::Raw => v,
        }
    }
}

/// A box `[x, y, w, h]` in one of the three COCO area ranges, sometimes
/// exactly on a range boundary (32² and 96² are inclusive on both sides).
fn random_box(rng: &mut ChaCha8Rng, round: Rounding) -> [f64; 4] {
    let (w, h) = match rng.random_range(0..10) {
        0..=3 => (rng.random_range(2.0..31.0), rng.random_range(2.0..31.0)),
        4..=6 => (rng.random_range(33.0..95.0), rng.random_range(33.0..95.0)),
        7 | 8 => (rng.random_range(97.0..300.0), rng.random_range(97.0..300.0)),
        _ => *[(32.0, 32.0), (96.0, 96.0), (16.0, 64.0)]
            .choose(rng)
            .unwrap(),
    };
    let (x, y) = (rng.random_range(0.0..600.0), rng.random_range(0.0..400.0));
    [
        round.apply(x),
        round.apply(y),
        round.apply(w).max(1.0),
        round.apply(h).max(1.0),
    ]
}

/// A detection of `b`: shifted and resized by up to `amount` of its size,
/// so that the IoU falls anywhere across the thresholds.
fn jitter(rng: &mut ChaCha8Rng, b: [f64; 4], amount: f64, round: Rounding) -> [f64; 4] {
    let mut j = |v: f64, scale: f64| round.apply(v + rng.random_range(-amount..=amount) * scale);
    let out = [j(b[0], b[2]), j(b[1], b[3]), j(b[2], b[2]), j(b[3], b[3])];
    [out[0], out[1], out[2].max(1.0), out[3].max(1.0)]
}

/// Scores: few distinct values (many ties) or near-continuous ones.
fn random_score(rng: &mut ChaCha8Rng, tied: bool) -> f64 {
    if tied {
        f64::from(rng.random_range(1..=5u8)) / 5.0
    } else {
        (rng.random_range(0.0..1.0f64) * 1e4).round() / 1e4
    }
}

/// One random COCO ground truth + results pair. Varies per seed: category
/// ids (non-contiguous, in shuffled file order, some without any ground
/// truth), image ids, empty images, detections on images without ground
/// truth, duplicates, near-miss localisation at every IoU level, tied
/// scores, annotation areas differing from w*h, crowd regions, images with
/// more than 100 detections, detections of unknown categories.
fn random_coco_case(seed: u64) -> (Value, Value) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let round = [Rounding::Integer, Rounding::Hundredths, Rounding::Raw][seed as usize % 3];
    let tied = seed % 2 == 0;
    let crowds = seed % 5 == 0;
    let crowded_image = seed % 7 == 0;

    let mut pool = [1i64, 3, 7, 42, 99, 1000];
    pool.shuffle(&mut rng);
    let cats: Vec<i64> = pool[..rng.random_range(2..=5)].to_vec();
    // Sometimes the last category never appears in the ground truth.
    let gt_cats = if seed % 4 == 1 {
        &cats[..cats.len() - 1]
    } else {
        &cats[..]
    };

    let n_images = rng.random_range(5..=40);
    let mut image_ids: Vec<i64> = (0..5000).collect();
    image_ids.shuffle(&mut rng);
    image_ids.truncate(n_images);

    let mut next_gt_id = rng.random_range(1..1000i64);
    let mut anns = Vec::new();
    let mut dets = Vec::new();
    for (i, &img) in image_ids.iter().enumerate() {
        let n_gt = if rng.random_bool(0.2) {
            0
        } else {
            rng.random_range(1..=8)
        };
        for _ in 0..n_gt {
            let cat = *gt_cats.choose(&mut rng).unwrap();
            let crowd = crowds && rng.random_bool(0.15);
            let mut bbox = random_box(&mut rng, round);
            if crowd {
                bbox[2] *= 2.0;
                bbox[3] *= 2.0;
            }
            // Segmentation-like areas smaller than the box, now and then.
            let area = if rng.random_bool(0.2) {
                bbox[2] * bbox[3] * rng.random_range(0.4..1.0)
            } else {
                bbox[2] * bbox[3]
            };
            // Seed 3's first annotation gets id 0 (pycocotools never counts it as matched).
            let id = if seed == 3 && anns.is_empty() {
                0
            } else {
                next_gt_id
            };
            next_gt_id += rng.random_range(1..20);
            anns.push(
                json!({"id": id, "image_id": img, "category_id": cat, "bbox": bbox,
                             "area": area, "iscrowd": i64::from(crowd)}),
            );
            add_detections_of(&mut rng, &mut dets, img, cat, bbox, &cats, round, tied);
        }
        // False positives, also on images without ground truth.
        for _ in 0..rng.random_range(0..4) {
            let cat = if rng.random_bool(0.05) {
                555
            } else {
                *cats.choose(&mut rng).unwrap()
            };
            dets.push(
                json!({"image_id": img, "category_id": cat, "bbox": random_box(&mut rng, round),
                             "score": random_score(&mut rng, tied)}),
            );
        }
        if crowded_image && i == 0 {
            // More than maxDets=100 detections on one image.
            let cat = cats[0];
            for _ in 0..rng.random_range(101..160) {
                dets.push(
                    json!({"image_id": img, "category_id": cat, "bbox": random_box(&mut rng, round),
                                 "score": random_score(&mut rng, tied)}),
                );
            }
        }
    }
    if dets.is_empty() {
        // pycocotools' loadRes cannot read an empty results list.
        dets.push(json!({"image_id": image_ids[0], "category_id": cats[0], "bbox": [1, 1, 5, 5], "score": 0.5}));
    }
    // File order matters for ties: interleave images.
    dets.shuffle(&mut rng);
    let mut images: Vec<Value> = image_ids
        .iter()
        .map(|id| json!({"id": id, "width": 640, "height": 480}))
        .collect();
    images.shuffle(&mut rng);
    let mut categories: Vec<Value> = cats
        .iter()
        .map(|c| json!({"id": c, "name": format!("class{c}")}))
        .collect();
    categories.shuffle(&mut rng);
    (
        json!({"images": images, "annotations": anns, "categories": categories}),
        Value::Array(dets),
    )
}

/// Detections produced for one ground truth: usually one near copy, some
/// duplicates, some with the wrong class, some missed.
#[allow(clippy::too_many_arguments)]
fn add_detections_of(
    rng: &mut ChaCha8Rng,
    dets: &mut Vec<Value>,
    img: i64,
    cat: i64,
    bbox: [f64; 4],
    cats: &[i64],
    round: Rounding,
    tied: bool,
) {
    let copies = match rng.random_range(0..10) {
        0 | 1 => 0,
        2..=7 => 1,
        _ => 2,
    };
    for _ in 0..copies {
        let amount = *[0.0, 0.02, 0.05, 0.1, 0.15, 0.25, 0.4].choose(rng).unwrap();
        let c = if rng.random_bool(0.05) {
            *cats.choose(rng).unwrap()
        } else {
            cat
        };
        dets.push(
            json!({"image_id": img, "category_id": c, "bbox": jitter(rng, bbox, amount, round),
                         "score": random_score(rng, tied)}),
        );
    }
}

/// A random validation set for `evaluate_dataset`: quarter-pixel boxes and
/// f32 scores, so that the f32 → f64 conversion is exact and the same data
/// can be written as COCO files.
fn random_dataset(seed: u64, num_classes: usize) -> Vec<EvalImage> {
    let mut rng = ChaCha8Rng::seed_from_u64(1_000 + seed);
    let quarter = |v: f64| ((v * 4.0).round() / 4.0) as f32;
    let corner_box = |b: [f64; 4]| {
        BBox::new(
            quarter(b[0]),
            quarter(b[1]),
            quarter(b[0] + b[2]),
            quarter(b[1] + b[3]),
        )
    };
    (0..rng.random_range(10..40))
        .map(|_| {
            let condition = [
                None,
                Some(Condition::Day),
                Some(Condition::Night),
                Some(Condition::Fog),
            ][rng.random_range(0..if seed % 3 == 0 { 2 } else { 4 })];
            let mut labels = Vec::new();
            let mut detections = Vec::new();
            for _ in 0..rng.random_range(0..6) {
                let class_id = rng.random_range(0..num_classes);
                let b = random_box(&mut rng, Rounding::Raw);
                labels.push(Label {
                    class_id,
                    bbox: corner_box(b),
                });
                if rng.random_bool(0.8) {
                    let amount = *[0.0, 0.05, 0.1, 0.2, 0.4].choose(&mut rng).unwrap();
                    let score = random_score(&mut rng, seed % 2 == 0) as f32;
                    detections.push(Detection {
                        class_id,
                        score,
                        bbox: corner_box(jitter(&mut rng, b, amount, Rounding::Raw)),
                    });
                }
            }
            for _ in 0..rng.random_range(0..3) {
                let score = random_score(&mut rng, seed % 2 == 0) as f32;
                let bbox = corner_box(random_box(&mut rng, Rounding::Raw));
                detections.push(Detection {
                    class_id: rng.random_range(0..num_classes),
                    score,
                    bbox,
                });
            }
            EvalImage {
                labels,
                detections,
                condition,
            }
        })
        .collect()
}

/// The images of `images` selected by `keep`, as COCO files with image id =
/// index, category id = class index, boxes as `evaluate_dataset` sees them.
fn dataset_as_coco(
    names: &[String],
    images: &[EvalImage],
    keep: impl Fn(&EvalImage) -> bool,
) -> (Value, Value) {
    let mut imgs = Vec::new();
    let mut anns = Vec::new();
    let mut dets = Vec::new();
    for (i, im) in images.iter().enumerate().filter(|(_, im)| keep(im)) {
        imgs.push(json!({"id": i}));
        for l in &im.labels {
            let b = to_xywh(&l.bbox);
            anns.push(
                json!({"id": anns.len() + 1, "image_id": i, "category_id": l.class_id, "bbox": b,
                             "area": b[2] * b[3], "iscrowd": 0}),
            );
        }
        for d in &im.detections {
            dets.push(
                json!({"image_id": i, "category_id": d.class_id, "bbox": to_xywh(&d.bbox),
                             "score": f64::from(d.score)}),
            );
        }
    }
    if dets.is_empty() {
        dets.push(json!({"image_id": imgs[0]["id"], "category_id": 0, "bbox": [0, 0, 1, 1], "score": 0.01}));
    }
    let cats: Vec<Value> = names
        .iter()
        .enumerate()
        .map(|(i, n)| json!({"id": i, "name": n}))
        .collect();
    (
        json!({"images": imgs, "annotations": anns, "categories": cats}),
        Value::Array(dets),
    )
}

// ------------------------------------------------------------ reference ----

/// Where a test writes its cases: a temporary directory, or
/// `$IRDISTILL_KEEP_CASES/<test>` when set, to inspect them afterwards.
fn cases_dir(test: &str) -> (Option<tempfile::TempDir>, PathBuf) {
    match std::env::var_os("IRDISTILL_KEEP_CASES") {
        Some(root) => {
            let dir = Path::new(&root).join(test);
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            (None, dir)
        }
        None => {
            let tmp = tempfile::tempdir().unwrap();
            let dir = tmp.path().to_path_buf();
            (Some(tmp), dir)
        }
    }
}

fn python() -> String {
    std::env::var("IRDISTILL_PYTHON").unwrap_or_else(|_| "python3".to_string())
}

/// Whether the pycocotools reference can run. Panics with install advice
/// when it cannot, unless IRDISTILL_SKIP_PYREF=1.
fn reference_available() -> bool {
    let ok = Command::new(python())
        .args(["-c", "import pycocotools, numpy"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if ok {
        return true;
    }
    if std::env::var("IRDISTILL_SKIP_PYREF").as_deref() == Ok("1") {
        eprintln!("SKIPPED the pycocotools reference check (IRDISTILL_SKIP_PYREF=1)");
        return false;
    }
    panic!(
        "`{} -c 'import pycocotools'` failed: the COCO evaluator is checked against pycocotools. \
         Run `pip install pycocotools` (or set IRDISTILL_SKIP_PYREF=1 to skip this check)",
        python()
    );
}

/// pycocotools' numbers for every case directory under `root`.
#[derive(Debug)]
struct Reference {
    stats: Vec<f64>,
    /// category id → (AP, AP50)
    per_category: BTreeMap<i64, (f64, f64)>,
}

/// A number the reference wrote as a string: Rust's `str::parse` rounds
/// correctly, serde_json's default float parsing may be off by an ulp.
fn exact_number(v: &Value) -> f64 {
    let text = v
        .as_str()
        .unwrap_or_else(|| panic!("reference number {v} is not a string"));
    text.parse()
        .unwrap_or_else(|e| panic!("bad reference number {text:?}: {e}"))
}

fn run_reference(root: &Path) -> BTreeMap<String, Reference> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/pycoco_ref.py");
    let out = Command::new(python())
        .arg(&script)
        .arg(root)
        .output()
        .expect("run python");
    assert!(
        out.status.success(),
        "{} failed:\n{}",
        script.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let mut refs = BTreeMap::new();
    for line in String::from_utf8(out.stdout).unwrap().lines() {
        let v: Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("bad reference line {line:?}: {e}"));
        let case = v["case"].as_str().unwrap().to_string();
        assert!(
            v.get("error").is_none(),
            "pycocotools failed on {case}: {}",
            v["error"]
        );
        let stats = v["stats"]
            .as_array()
            .unwrap()
            .iter()
            .map(exact_number)
            .collect();
        let per_category = v["per_category"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| {
                (
                    c["category_id"].as_i64().unwrap(),
                    (exact_number(&c["map"]), exact_number(&c["map50"])),
                )
            })
            .collect();
        refs.insert(
            case,
            Reference {
                stats,
                per_category,
            },
        );
    }
    refs
}

/// Largest difference between our metrics and pycocotools' for one case;
/// panics on a difference above TOLERANCE or a missing category.
fn compare(case: &str, ours: &Metrics, reference: &Reference) -> f64 {
    const NAMES: [&str; 12] = [
        "AP",
        "AP50",
        "AP75",
        "AP_small",
        "AP_medium",
        "AP_large",
        "AR1",
        "AR10",
        "AR100",
        "AR_small",
        "AR_medium",
        "AR_large",
    ];
    let mut worst: f64 = 0.0;
    let mut check = |what: String, a: f64, b: f64| {
        let diff = (a - b).abs();
        assert!(
            diff <= TOLERANCE,
            "{case}: {what}: ours {a} vs pycocotools {b}"
        );
        worst = worst.max(diff);
    };
    for (i, (a, b)) in ours
        .stats
        .to_array()
        .iter()
        .zip(&reference.stats)
        .enumerate()
    {
        check(NAMES[i].to_string(), *a, *b);
    }
    assert_eq!(
        ours.per_class.len(),
        reference.per_category.len(),
        "{case}: category count"
    );
    for c in &ours.per_class {
        let (ap, ap50) = reference.per_category[&c.category_id];
        check(format!("category {} AP", c.category_id), c.map, ap);
        check(format!("category {} AP50", c.category_id), c.map50, ap50);
    }
    worst
}

// ---------------------------------------------------------------- tests ----

#[test]
fn agrees_with_pycocotools_on_random_coco_files() {
    let (_tmp, dir) = cases_dir("coco_files");
    let mut ours = BTreeMap::new();
    for seed in 0..FILE_CASES {
        let (gt, dt) = random_coco_case(seed);
        let name = format!("case{seed:03}");
        let case_dir = write_case(&dir, &name, &gt, &dt);
        let metrics = evaluate_files(&case_dir.join("gt.json"), &case_dir.join("dt.json"))
            .unwrap_or_else(|e| panic!("{name}: {e:#}"));
        ours.insert(name, metrics);
    }
    // The cases must exercise the metric, not just produce 0, 1 and -1.
    let fractional = ours
        .values()
        .filter(|m| m.stats.map > 0.0 && m.stats.map < 1.0)
        .count();
    assert!(
        fractional * 10 >= ours.len() * 9,
        "only {fractional} cases with 0 < AP < 1"
    );
    assert!(
        ours.values()
            .any(|m| m.per_class.iter().any(|c| c.map == -1.0)),
        "no category without ground truth"
    );

    if !reference_available() {
        return;
    }
    let started = std::time::Instant::now();
    let refs = run_reference(&dir);
    eprintln!(
        "pycocotools on {} cases: {:.2?}",
        refs.len(),
        started.elapsed()
    );
    assert_eq!(refs.len(), ours.len(), "reference covered every case");
    let worst = ours
        .iter()
        .map(|(name, m)| compare(name, m, &refs[name]))
        .fold(0.0, f64::max);
    eprintln!(
        "max |ours - pycocotools| over {} cases: {worst:e}",
        ours.len()
    );
    assert!(
        worst <= EXACT,
        "agreement {worst:e} is within tolerance but no longer exact"
    );
}

#[test]
fn dataset_api_agrees_with_pycocotools_per_condition() {
    let names: Vec<String> = ["person", "car", "bicycle", "dog"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let (_tmp, dir) = cases_dir("dataset_api");
    let mut ours = BTreeMap::new();
    for seed in 0..DATASET_CASES {
        let images = random_dataset(seed, names.len());
        let report = evaluate_dataset(&names, &images);
        let (gt, dt) = dataset_as_coco(&names, &images, |_| true);
        write_case(&dir, &format!("ds{seed:02}_all"), &gt, &dt);
        ours.insert(format!("ds{seed:02}_all"), report.overall.clone());
        for (subset, metrics) in &report.per_condition {
            let keep = |im: &EvalImage| match im.condition {
                Some(c) if subset == "adverse" => c.is_adverse(),
                Some(c) => c.as_str() == subset,
                None => false,
            };
            assert_eq!(metrics.images, images.iter().filter(|im| keep(im)).count());
            let (gt, dt) = dataset_as_coco(&names, &images, keep);
            write_case(&dir, &format!("ds{seed:02}_{subset}"), &gt, &dt);
            ours.insert(format!("ds{seed:02}_{subset}"), metrics.clone());
        }
    }
    assert!(
        ours.keys().any(|k| k.ends_with("_adverse")) && ours.keys().any(|k| k.ends_with("_fog"))
    );

    if !reference_available() {
        return;
    }
    let refs = run_reference(&dir);
    assert_eq!(refs.len(), ours.len());
    let worst = ours
        .iter()
        .map(|(name, m)| compare(name, m, &refs[name]))
        .fold(0.0, f64::max);
    eprintln!(
        "dataset API: max |ours - pycocotools| over {} subsets: {worst:e}",
        ours.len()
    );
    assert!(
        worst <= EXACT,
        "agreement {worst:e} is within tolerance but no longer exact"
    );
}

/// Runs `trainer eval-coco` with the given arguments.
fn eval_coco_command(args: &[&Path]) -> std::process::Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_trainer"));
    cmd.arg("eval-coco");
    for (flag, path) in ["--gt", "--dt"].iter().zip(args) {
        cmd.arg(flag).arg(path);
    }
    cmd.output().expect("run trainer")
}

#[test]
fn trainer_eval_coco_prints_summary_and_json() {
    let dir = tempfile::tempdir().unwrap();
    let (gt, dt) = random_coco_case(5);
    let case = write_case(dir.path(), "cli", &gt, &dt);
    let (gt_path, dt_path) = (case.join("gt.json"), case.join("dt.json"));
    let out = eval_coco_command(&[&gt_path, &dt_path]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "eval-coco failed: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout
            .contains(" Average Precision  (AP) @[ IoU=0.50:0.95 | area=   all | maxDets=100 ] = "),
        "{stdout}"
    );

    let last = stdout.lines().last().unwrap();
    let v: Value = serde_json::from_str(last)
        .unwrap_or_else(|e| panic!("last line is not JSON ({e}): {last}"));
    let expected = evaluate_files(&gt_path, &dt_path).unwrap();
    let stats = expected.stats.to_array();
    let keys = [
        "map",
        "map50",
        "map75",
        "map_small",
        "map_medium",
        "map_large",
        "ar1",
        "ar10",
        "ar100",
        "ar_small",
        "ar_medium",
        "ar_large",
    ];
    for (key, want) in keys.iter().zip(stats) {
        let got = v[key]
            .as_f64()
            .unwrap_or_else(|| panic!("no number `{key}` in {last}"));
        assert!((got - want).abs() < 1e-12, "{key}: {got} vs {want}");
    }
    let per_class = v["per_class"].as_array().expect("per_class list");
    assert_eq!(per_class.len(), expected.per_class.len());
    for (got, want) in per_class.iter().zip(&expected.per_class) {
        assert_eq!(got["category_id"].as_i64(), Some(want.category_id));
        assert_eq!(got["name"].as_str(), Some(want.name.as_str()));
        assert!((got["map"].as_f64().unwrap() - want.map).abs() < 1e-12);
        assert!((got["map50"].as_f64().unwrap() - want.map50).abs() < 1e-12);
    }
}

#[test]
fn trainer_eval_coco_reports_bad_input_without_panicking() {
    let dir = tempfile::tempdir().unwrap();
    let (gt, dt) = random_coco_case(1);
    let case = write_case(dir.path(), "bad", &gt, &dt);
    let gt_path = case.join("gt.json");

    let expect_error = |dt_path: &Path, needle: &str| {
        let out = eval_coco_command(&[&gt_path, dt_path]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "accepted {}", dt_path.display());
        assert!(!stderr.contains("panicked"), "{stderr}");
        assert!(stderr.contains(needle), "expected {needle:?} in: {stderr}");
    };

    let missing = case.join("missing.json");
    expect_error(&missing, "missing.json");

    let garbage = case.join("garbage.json");
    std::fs::write(&garbage, "[{\"image_id\": 1,").unwrap();
    expect_error(&garbage, "garbage.json");

    // An image id the ground truth does not have (ids there are < 5000).
    let stray = case.join("stray.json");
    let dets = json!([{"image_id": 987654, "category_id": 1, "bbox": [0, 0, 5, 5], "score": 0.5}]);
    std::fs::write(&stray, dets.to_string()).unwrap();
    expect_error(&stray, "987654");
}
