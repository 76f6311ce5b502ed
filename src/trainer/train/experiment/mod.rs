//! `trainer experiment`: the product's headline measured end to end. For
//! each seed, on the same synthetic data and budget, it trains the arms of
//! three label settings ([`arms`]):
//!
//! 1. full labels: `baseline` (RGB-only student), `teacher` (RGB+IR,
//!    CCAFusion), `distilled` (the student distilled from that teacher);
//! 2. few labels (20 %, the rest unlabeled RGB+IR pairs): `few_baseline`,
//!    `few_teacher`, `few_distilled` and the `oracle` (all labeled);
//! 3. day labels only (night and fog pairs unlabeled): `day_baseline`,
//!    `day_teacher`, `day_distilled`;
//!
//! plus the ablations (`--preset full`/`paper`). Every student arm takes
//! the same number of optimizer steps; the same seed gives every arm the
//! same data, subset and initialisation. Each arm is scored on the
//! generator's held-out test split, per condition, and writes its result
//! (`eval.json`, `test_matches.json`) when it finishes; `results.json` and
//! `results.md` ([`report`], with the paired intervals of [`stats`]) are
//! rebuilt from every finished arm after each one. Rerunning the command
//! skips finished arms and continues an interrupted one from its
//! `last.safetensors`, so a converged run can span several sittings.
//!
//! `--preset real` ([`real`]) is the same idea on real recordings: no
//! labels, arms scored on human-labelled frames.

pub mod arms;
pub mod plot;
pub mod real;
pub mod report;
pub mod stats;

pub use arms::{arms, select_arms, Arm, ArmKind, Budget, Recipe, Scored, Setting};
pub use report::{results_json, results_markdown, SPLITS};
pub use stats::mean_std;

use super::init::device;
use super::optim::OptimizerKind;
use super::options::TrainOptions;
use super::run::train;
use super::source::{open_eval_split, SynthSizes};
use super::validate::predict_images;
use crate::shared::condition::Split;
use crate::shared::eval::{evaluate_dataset, EvalReport};
use crate::trainer::checkpoint::load_detector;
use crate::trainer::distill::DistillOptions;
use anyhow::{ensure, Context, Result};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use stats::TestMatches;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// One arm's scores on the test split.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ArmResult {
    pub arm: String,
    pub seed: u64,
    /// split ("day", "night", "fog", "adverse", "all") → (mAP50, mAP50-95).
    pub splits: BTreeMap<String, (f64, f64)>,
    /// Training time: the sum of the epochs' times, validation excluded.
    pub train_s: f64,
    pub images_per_s: f64,
    /// Distilled arms with unlabeled pairs: the teacher's pseudo-label
    /// quality on the validation pairs (`pseudo_labels.json`).
    #[serde(default)]
    pub pseudo_labels: Option<Value>,
}

fn scores(report: &EvalReport) -> BTreeMap<String, (f64, f64)> {
    let mut m = BTreeMap::new();
    m.insert(
        "all".to_string(),
        (report.overall.stats.map50, report.overall.stats.map),
    );
    for (k, v) in &report.per_condition {
        m.insert(k.clone(), (v.stats.map50, v.stats.map));
    }
    m
}

/// Runs (or continues) the experiment in `out` on `device_name`.
/// `only`: arm keys to run (with the arms they need); empty = all.
pub fn run_experiment(
    budget: &Budget,
    seeds: &[u64],
    only: &[String],
    out: &Path,
    device_name: &str,
) -> Result<Value> {
    ensure!(!seeds.is_empty(), "--seeds must be at least 1");
    let plan = select_arms(arms(&budget.preset, budget.labeled_fraction), only)?;
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    let started = Instant::now();
    let mut json = Value::Null;
    for &seed in seeds {
        for a in &plan {
            let r = run_arm(budget, a, seed, out, device_name)?;
            eprintln!(
                "seed {seed} {}: mAP50 all {:.3} day {:.3} night {:.3} fog {:.3} ({:.0} s)",
                a.key,
                r.splits.get("all").map_or(f64::NAN, |s| s.0),
                r.splits.get("day").map_or(f64::NAN, |s| s.0),
                r.splits.get("night").map_or(f64::NAN, |s| s.0),
                r.splits.get("fog").map_or(f64::NAN, |s| s.0),
                r.train_s
            );
            // rebuilt after every arm, so a long run can be read as it goes
            json = write_results(out, budget, &plan, started.elapsed().as_secs_f64())?;
        }
    }
    Ok(json)
}

/// The folder of arm `key` for `seed`.
fn arm_dir(out: &Path, seed: u64, key: &str) -> PathBuf {
    out.join(format!("seed{seed}")).join(key)
}

/// Every finished arm in `out` (`seed*/ARM/eval.json`), this invocation's
/// and those of earlier or parallel ones (`--first-seed`), by seed.
fn finished_arms(out: &Path, plan: &[Arm]) -> Result<Vec<ArmResult>> {
    let mut seeds: Vec<u64> = std::fs::read_dir(out)
        .with_context(|| format!("cannot list {}", out.display()))?
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str()?.strip_prefix("seed")?.parse().ok())
        .collect();
    seeds.sort_unstable();
    let mut found = Vec::new();
    for seed in seeds {
        for a in plan {
            let p = arm_dir(out, seed, &a.key).join("eval.json");
            if let Ok(text) = std::fs::read_to_string(&p) {
                let r: ArmResult = serde_json::from_str(&text)
                    .with_context(|| format!("{} is not an arm result", p.display()))?;
                found.push(r);
            }
        }
    }
    Ok(found)
}

/// The test matches each finished arm kept (`test_matches.json`).
fn finished_matches(out: &Path, results: &[ArmResult]) -> BTreeMap<(String, u64), TestMatches> {
    results
        .iter()
        .filter_map(|r| {
            let p = arm_dir(out, r.seed, &r.arm).join("test_matches.json");
            let m: TestMatches = serde_json::from_slice(&std::fs::read(p).ok()?).ok()?;
            Some(((r.arm.clone(), r.seed), m))
        })
        .collect()
}

/// Trains arm `a` for `seed` in `out/seed{seed}/{key}` (or continues it,
/// or takes its result from an earlier invocation) and scores its
/// checkpoint on the test split; the result is written to `eval.json`, the
/// matched detections to `test_matches.json`.
fn run_arm(
    budget: &Budget,
    a: &Arm,
    seed: u64,
    out: &Path,
    device_name: &str,
) -> Result<ArmResult> {
    let dir = arm_dir(out, seed, &a.key);
    let eval_path = dir.join("eval.json");
    if let Some(r) = finished_earlier(&eval_path) {
        eprintln!(
            "seed {seed} {}: done earlier ({})",
            a.key,
            eval_path.display()
        );
        return Ok(r);
    }
    if let ArmKind::SameAs(other) = &a.kind {
        return copy_result(out, seed, other, &a.key);
    }
    let opts = arm_options(budget, a, seed, out, &dir);
    // an arm interrupted earlier continues from its last epoch
    let resume = dir.join("last.safetensors").exists();
    if !resume && dir.exists() {
        remove_stale_outputs(&dir)?;
    }
    let rows =
        train(opts, device_name, resume).with_context(|| format!("arm {} (seed {seed})", a.key))?;
    // every epoch's, whichever invocation trained it (validation excluded)
    let train_s = rows.iter().map(|r| r.epoch_s).sum();
    let images_per_s = rows.last().map_or(0.0, |r| r.images_per_s);
    let (report, matches) =
        score_on_test_split(budget, &scored_checkpoint(budget, &dir), device_name)?;
    let pseudo_labels = std::fs::read(dir.join("pseudo_labels.json"))
        .ok()
        .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
        .map(|mut v| {
            v["seed"] = seed.into();
            v
        });
    let r = ArmResult {
        arm: a.key.clone(),
        seed,
        splits: scores(&report),
        train_s,
        images_per_s,
        pseudo_labels,
    };
    write_atomic(
        &dir.join("test_matches.json"),
        &serde_json::to_string(&matches)?,
    )?;
    write_atomic(&eval_path, &serde_json::to_string_pretty(&r)?)?;
    Ok(r)
}

/// A `SameAs` arm: arm `other`'s result (and matches) of this seed under
/// the name `key`.
fn copy_result(out: &Path, seed: u64, other: &str, key: &str) -> Result<ArmResult> {
    let (from, to) = (arm_dir(out, seed, other), arm_dir(out, seed, key));
    let mut r = finished_earlier(&from.join("eval.json")).with_context(|| {
        format!("arm {key} reuses arm {other}, which has no result for seed {seed}")
    })?;
    r.arm = key.to_string();
    std::fs::create_dir_all(&to).with_context(|| format!("cannot create {}", to.display()))?;
    if let Ok(m) = std::fs::read(from.join("test_matches.json")) {
        std::fs::write(to.join("test_matches.json"), m)
            .with_context(|| format!("cannot write {}", to.display()))?;
    }
    write_atomic(&to.join("eval.json"), &serde_json::to_string_pretty(&r)?)?;
    Ok(r)
}

/// The result an earlier invocation wrote for this arm, if readable.
fn finished_earlier(eval_path: &Path) -> Option<ArmResult> {
    let text = std::fs::read_to_string(eval_path).ok()?;
    serde_json::from_str::<ArmResult>(&text).ok()
}

/// The checkpoint of the arm in `dir` that is scored and distilled from.
fn scored_checkpoint(budget: &Budget, dir: &Path) -> PathBuf {
    match budget.scored {
        Scored::Best => dir.join("best.safetensors"),
        Scored::Last => dir.join("last.safetensors"),
    }
}

/// The training options of arm `a` for `seed`, run in `dir`; a distilled
/// arm's teacher is its teacher arm's scored checkpoint under `out`.
fn arm_options(budget: &Budget, a: &Arm, seed: u64, out: &Path, dir: &Path) -> TrainOptions {
    let (model, fusion) = match &a.kind {
        ArmKind::Teacher(f) => (budget.teacher.clone(), Some(*f)),
        _ => (budget.student.clone(), None),
    };
    TrainOptions {
        data: "synth".into(),
        model,
        imgsz: budget.imgsz,
        epochs: match a.kind {
            ArmKind::Teacher(_) => budget.teacher_epochs.unwrap_or(budget.epochs),
            _ => budget.epochs,
        },
        batch: budget.batch,
        out: dir.to_path_buf(),
        seed,
        optimizer: OptimizerKind::AdamW,
        lr0: 0.002,
        lrf: 0.01,
        weight_decay: 0.0005,
        momentum: 0.9,
        warmup_epochs: 3.0,
        workers: budget.workers,
        synth_train: budget.labeled_pairs(a.setting),
        synth_val: budget.synth_val,
        augment: true,
        val_split: Split::Val,
        stop_after: None,
        fusion,
        distill: arm_distill_options(budget, a, seed, out),
        repeat: budget.repeat(a.setting),
        synth_conditions: a.setting.labeled_conditions(),
        init: None,
    }
}

/// A distilled arm's distillation options (none for the others): its
/// recipe, its teacher arm's scored checkpoint and its setting's
/// unlabeled pairs.
fn arm_distill_options(budget: &Budget, a: &Arm, seed: u64, out: &Path) -> Option<DistillOptions> {
    let ArmKind::Distilled {
        recipe,
        teacher_arm,
    } = &a.kind
    else {
        return None;
    };
    let teacher = scored_checkpoint(budget, &arm_dir(out, seed, teacher_arm));
    Some(recipe.options(teacher, budget.unlabeled_spec(a.setting)))
}

/// Removes what a run killed before it committed its first epoch (no
/// last.safetensors yet) left in `dir`, so that the fresh run does not
/// refuse the folder.
pub(super) fn remove_stale_outputs(dir: &Path) -> Result<()> {
    for f in ["best.safetensors", "results.csv"] {
        let p = dir.join(f);
        if p.exists() {
            std::fs::remove_file(&p)
                .with_context(|| format!("cannot remove stale {}", p.display()))?;
        }
    }
    Ok(())
}

/// The checkpoint `ckpt` evaluated on the generator's held-out test split
/// (seed 0's, the same images for every seed), per condition, with its
/// detections matched for the bootstrap.
fn score_on_test_split(
    budget: &Budget,
    ckpt: &Path,
    device_name: &str,
) -> Result<(EvalReport, TestMatches)> {
    let dev = device(device_name)?;
    let (model, cfg) = load_detector(ckpt, &dev)?;
    let test = SynthSizes {
        train: 0,
        val: budget.synth_test,
        seed: 0,
    };
    let (names, source) = open_eval_split("synth", Split::Test, test)?;
    let images = predict_images(
        &model,
        source,
        names.len(),
        cfg.imgsz,
        budget.batch,
        budget.workers,
        &dev,
    )?;
    Ok((
        evaluate_dataset(&names, &images),
        TestMatches::from_images(names.len(), &images),
    ))
}

/// Rebuilds `results.json` and `results.md` from every finished arm in
/// `out`; returns the JSON.
fn write_results(out: &Path, budget: &Budget, plan: &[Arm], elapsed_s: f64) -> Result<Value> {
    let results = finished_arms(out, plan)?;
    let matches = finished_matches(out, &results);
    let json = results_json(budget, plan, &results, &matches, elapsed_s);
    write_atomic(
        &out.join("results.json"),
        &serde_json::to_string_pretty(&json)?,
    )?;
    write_atomic(&out.join("results.md"), &results_markdown(&json, plan))?;
    if let Err(e) = write_curves(out, plan, &results) {
        tracing::warn!("curves.png not written: {e:#}");
    }
    Ok(json)
}

/// `curves.png`: validation mAP50 per epoch of every trained arm.
fn write_curves(out: &Path, plan: &[Arm], results: &[ArmResult]) -> Result<()> {
    let mut curves = BTreeMap::new();
    for a in plan
        .iter()
        .filter(|a| !matches!(a.kind, ArmKind::SameAs(_)))
    {
        let seeds: Vec<Vec<(usize, f64)>> = results
            .iter()
            .filter(|r| r.arm == a.key)
            .filter_map(|r| plot::val_curve(&arm_dir(out, r.seed, &a.key).join("results.csv")).ok())
            .collect();
        if !seeds.is_empty() {
            curves.insert(a.key.clone(), seeds);
        }
    }
    plot::curves_png(&out.join("curves.png"), &plot::mean_curves(&curves))
}

fn write_atomic(path: &Path, text: &str) -> Result<()> {
    // per process: parallel `--first-seed` runs share the folder
    let tmp = path.with_extension(format!("{}.tmp", std::process::id()));
    std::fs::write(&tmp, text).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_schema_and_table() {
        let budget = Budget::preset("quick").unwrap();
        let plan = arms("quick", 0.2);
        let mk = |arm: &str, seed, v: f64| ArmResult {
            arm: arm.into(),
            seed,
            splits: SPLITS
                .iter()
                .map(|s| (s.to_string(), (v, v / 2.0)))
                .collect(),
            train_s: 60.0,
            images_per_s: 1.0,
            pseudo_labels: None,
        };
        let results = vec![
            mk("baseline", 0, 0.2),
            mk("baseline", 1, 0.4),
            mk("distilled", 0, 0.5),
            mk("distilled", 1, 0.6),
        ];
        let j = results_json(&budget, &plan, &results, &BTreeMap::new(), 3.0);
        let b = &j["splits"]["adverse"]["baseline"];
        assert!((b["map50"].as_f64().unwrap() - 0.3).abs() < 1e-12);
        assert!((b["map"].as_f64().unwrap() - 0.15).abs() < 1e-12);
        assert_eq!(b["n"], 2);
        assert_eq!(b["map50_seeds"], serde_json::json!([0.2, 0.4]));
        assert!(j["splits"]["all"]["teacher"].is_null());
        // paired: +0.3 and +0.2 → mean +0.25, t interval around it
        let c = &j["comparisons"]["distilled - baseline"]["adverse"];
        assert!((c["map50_diff"].as_f64().unwrap() - 0.25).abs() < 1e-12);
        let t = c["t_ci95"].as_array().unwrap();
        assert!(t[0].as_f64().unwrap() < 0.25 && t[1].as_f64().unwrap() > 0.25);
        // no test matches kept: no bootstrap, so no claim
        assert!(c["bootstrap_ci95"].is_null());
        assert_eq!(c["significant"], false);
        let md = results_markdown(&j, &plan);
        assert!(md.contains("| baseline | 0.300 ± 0.141 (2)"), "{md}");
        assert!(md.contains("| distilled − baseline | +0.250 t ["), "{md}");
        assert!(md.contains("`teacher` (Full, not run yet)"), "{md}");
    }
}
