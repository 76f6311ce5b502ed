//! `trainer experiment`: the product's headline measured end to end. For
//! each seed, on the same synthetic data and budget, it trains
//!
//! 1. `baseline`: the RGB-only student,
//! 2. `teacher`: the RGB+IR teacher (CCAFusion),
//! 3. `distilled`: the student distilled from that teacher with all three losses,
//!
//! and, with `--preset full`, the ablations (each distillation loss alone,
//! each other fusion) and the unlabeled-pairs setting (20 % of the training
//! pairs labeled, the rest used as unlabeled RGB+IR pairs). Every arm is
//! then evaluated on the generator's held-out test split, per condition,
//! and `results.json` / `results.md` are rewritten after each arm, so a long
//! run can be read (and resumed: finished arms are skipped, an interrupted
//! one continues from its `last.safetensors`) at any point.

use super::init::device;
use super::optim::OptimizerKind;
use super::options::TrainOptions;
use super::run::train;
use super::source::{open_eval_split, SynthSizes};
use super::validate::validate;
use crate::shared::condition::Split;
use crate::shared::eval::EvalReport;
use crate::trainer::checkpoint::load_detector;
use crate::trainer::distill::{DistillLoss, DistillOptions};
use crate::trainer::model::Fusion;
use anyhow::{bail, ensure, Context, Result};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Sizes and budget shared by every arm.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Budget {
    pub preset: String,
    pub student: String,
    pub teacher: String,
    pub imgsz: usize,
    pub epochs: usize,
    pub batch: usize,
    /// Training pairs (all labeled, except in the unlabeled-pairs arms).
    pub synth_train: usize,
    /// Validation pairs (best-checkpoint selection).
    pub synth_val: usize,
    /// Held-out test pairs every arm is scored on (generator seed 0's test
    /// split for every seed, so all seeds are scored on the same images).
    pub synth_test: usize,
    pub workers: usize,
    /// Fraction of labeled pairs in the unlabeled-pairs setting.
    pub labeled_fraction: f64,
    /// Epochs of the teacher arms (none: `epochs`). A teacher trained
    /// longer costs nothing at deployment; every student arm keeps the
    /// same budget, so baseline and distilled stay comparable.
    #[serde(default)]
    pub teacher_epochs: Option<usize>,
}

impl Budget {
    /// `quick`: one seed fits in 45 minutes on a 2-core machine.
    /// `full`: the size the model card's figures use; hours.
    pub fn preset(name: &str) -> Result<Budget> {
        Ok(match name {
            "quick" => Budget {
                preset: name.into(),
                student: "student-p".into(),
                teacher: "teacher-p".into(),
                imgsz: 160,
                epochs: 10,
                batch: 16,
                synth_train: 800,
                synth_val: 100,
                synth_test: 300,
                workers: 2,
                labeled_fraction: 0.2,
                teacher_epochs: None,
            },
            "full" => Budget {
                preset: name.into(),
                student: "student-p".into(),
                teacher: "teacher-p".into(),
                imgsz: 256,
                epochs: 20,
                batch: 16,
                synth_train: 2000,
                synth_val: 200,
                synth_test: 600,
                workers: 2,
                labeled_fraction: 0.2,
                teacher_epochs: None,
            },
            other => bail!("--preset {other}: expected quick or full"),
        })
    }
}

/// What an arm trains.
#[derive(Debug, Clone, PartialEq)]
pub enum ArmKind {
    Student,
    Teacher(Fusion),
    Distilled {
        losses: Vec<DistillLoss>,
        /// The arm whose best checkpoint is the teacher.
        teacher_arm: String,
    },
}

#[derive(Debug, Clone)]
pub struct Arm {
    /// The key in results.json (`baseline`, `teacher`, `distilled`, …).
    pub key: String,
    pub kind: ArmKind,
    /// Train on this fraction of the labeled pairs; with `unlabeled`, the
    /// rest join as unlabeled pairs (distilled arms only).
    pub labeled_fraction: f64,
    pub unlabeled: bool,
    pub description: String,
}

fn arm(key: &str, kind: ArmKind, description: &str) -> Arm {
    Arm {
        key: key.into(),
        kind,
        labeled_fraction: 1.0,
        unlabeled: false,
        description: description.into(),
    }
}

/// The arms of a preset, in training order (teachers before their students).
pub fn arms(preset: &str, labeled_fraction: f64) -> Vec<Arm> {
    use DistillLoss::*;
    let all = vec![Feature, Contrastive, Response];
    let distilled = |key: &str, losses: Vec<DistillLoss>, teacher: &str, what: &str| {
        arm(
            key,
            ArmKind::Distilled {
                losses,
                teacher_arm: teacher.into(),
            },
            what,
        )
    };
    let mut v = vec![
        arm("baseline", ArmKind::Student, "RGB-only student"),
        arm(
            "teacher",
            ArmKind::Teacher(Fusion::Cca),
            "RGB+IR teacher, CCAFusion (evaluated on RGB+IR)",
        ),
        distilled(
            "distilled",
            all.clone(),
            "teacher",
            "student distilled with feature + contrastive + response",
        ),
    ];
    if preset == "full" {
        for (key, loss) in [
            ("distill_feature", Feature),
            ("distill_contrastive", Contrastive),
            ("distill_response", Response),
        ] {
            v.push(distilled(
                key,
                vec![loss],
                "teacher",
                &format!("student distilled with the {key} term alone"),
            ));
        }
        for (key, f) in [
            ("teacher_concat", Fusion::Concat),
            ("teacher_add", Fusion::Add),
            ("teacher_early", Fusion::Early),
        ] {
            v.push(arm(
                key,
                ArmKind::Teacher(f),
                &format!("RGB+IR teacher, {f} fusion"),
            ));
        }
        let pct = (labeled_fraction * 100.0).round();
        let mut a = arm(
            "baseline_labeled_subset",
            ArmKind::Student,
            &format!("RGB-only student on {pct} % of the pairs (labeled)"),
        );
        a.labeled_fraction = labeled_fraction;
        v.push(a);
        let mut a = arm(
            "teacher_labeled_subset",
            ArmKind::Teacher(Fusion::Cca),
            &format!("CCAFusion teacher on {pct} % of the pairs (labeled)"),
        );
        a.labeled_fraction = labeled_fraction;
        v.push(a);
        let mut a = distilled(
            "distilled_unlabeled",
            all,
            "teacher_labeled_subset",
            &format!("student distilled on {pct} % labeled + the rest as unlabeled pairs"),
        );
        a.labeled_fraction = labeled_fraction;
        a.unlabeled = true;
        v.push(a);
    }
    v
}

/// The arms named in `only` (all of `plan` when empty), with the teacher
/// arms they distil from, in `plan`'s order.
pub fn select_arms(plan: Vec<Arm>, only: &[String]) -> Result<Vec<Arm>> {
    if only.is_empty() {
        return Ok(plan);
    }
    let known: Vec<&str> = plan.iter().map(|a| a.key.as_str()).collect();
    for name in only {
        ensure!(
            known.contains(&name.as_str()),
            "--arms: no arm '{name}' in this preset (arms: {})",
            known.join(", ")
        );
    }
    let wanted = |a: &Arm| only.contains(&a.key);
    let teachers: Vec<String> = plan
        .iter()
        .filter(|a| wanted(a))
        .filter_map(|a| match &a.kind {
            ArmKind::Distilled { teacher_arm, .. } => Some(teacher_arm.clone()),
            _ => None,
        })
        .collect();
    Ok(plan
        .into_iter()
        .filter(|a| wanted(a) || teachers.contains(&a.key))
        .collect())
}

/// One arm's scores on the test split.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ArmResult {
    pub arm: String,
    pub seed: u64,
    /// split ("day", "night", "fog", "adverse", "all") → (mAP50, mAP50-95).
    pub splits: BTreeMap<String, (f64, f64)>,
    pub train_s: f64,
    pub images_per_s: f64,
}

pub const SPLITS: [&str; 5] = ["day", "night", "fog", "adverse", "all"];

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

/// Runs (or continues) the experiment in `out`.
/// `only`: arm keys to run (with the teachers they need); empty = all.
pub fn run_experiment(
    budget: &Budget,
    seeds: &[u64],
    only: &[String],
    out: &Path,
) -> Result<Value> {
    ensure!(!seeds.is_empty(), "--seeds must be at least 1");
    let plan = select_arms(arms(&budget.preset, budget.labeled_fraction), only)?;
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    let started = Instant::now();
    for &seed in seeds {
        for a in &plan {
            let r = run_arm(budget, a, seed, out)?;
            eprintln!(
                "seed {seed} {}: mAP50 all {:.3} day {:.3} night {:.3} fog {:.3} ({:.0} s)",
                a.key,
                r.splits.get("all").map_or(f64::NAN, |s| s.0),
                r.splits.get("day").map_or(f64::NAN, |s| s.0),
                r.splits.get("night").map_or(f64::NAN, |s| s.0),
                r.splits.get("fog").map_or(f64::NAN, |s| s.0),
                r.train_s
            );
            let all = finished_arms(out, &plan)?;
            write_results(out, budget, &plan, &all, started.elapsed().as_secs_f64())?;
        }
    }
    let all = finished_arms(out, &plan)?;
    Ok(results_json(
        budget,
        &plan,
        &all,
        started.elapsed().as_secs_f64(),
    ))
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
            let p = out
                .join(format!("seed{seed}"))
                .join(&a.key)
                .join("eval.json");
            if let Ok(text) = std::fs::read_to_string(&p) {
                let r: ArmResult = serde_json::from_str(&text)
                    .with_context(|| format!("{} is not an arm result", p.display()))?;
                found.push(r);
            }
        }
    }
    Ok(found)
}

/// Trains arm `a` for `seed` in `out/seed{seed}/{key}` (or continues it,
/// or takes its result from an earlier invocation) and scores its best
/// checkpoint on the test split; the result is written to `eval.json`.
fn run_arm(budget: &Budget, a: &Arm, seed: u64, out: &Path) -> Result<ArmResult> {
    let dir = out.join(format!("seed{seed}")).join(&a.key);
    let eval_path = dir.join("eval.json");
    if let Some(r) = finished_earlier(&eval_path) {
        eprintln!(
            "seed {seed} {}: done earlier ({})",
            a.key,
            eval_path.display()
        );
        return Ok(r);
    }
    let opts = arm_options(budget, a, seed, out, &dir);
    // an arm interrupted earlier continues from its last epoch
    let resume = dir.join("last.safetensors").exists();
    if !resume && dir.exists() {
        remove_stale_outputs(&dir)?;
    }
    let t0 = Instant::now();
    let rows =
        train(opts, "cpu", resume).with_context(|| format!("arm {} (seed {seed})", a.key))?;
    let train_s = t0.elapsed().as_secs_f64();
    let images_per_s = rows.last().map_or(0.0, |r| r.images_per_s);
    let report = score_on_test_split(budget, &dir.join("best.safetensors"))?;
    let r = ArmResult {
        arm: a.key.clone(),
        seed,
        splits: scores(&report),
        train_s,
        images_per_s,
    };
    std::fs::write(&eval_path, serde_json::to_string_pretty(&r)?)
        .with_context(|| format!("cannot write {}", eval_path.display()))?;
    Ok(r)
}

/// The result an earlier invocation wrote for this arm, if readable.
fn finished_earlier(eval_path: &Path) -> Option<ArmResult> {
    let text = std::fs::read_to_string(eval_path).ok()?;
    serde_json::from_str::<ArmResult>(&text).ok()
}

/// The training options of arm `a` for `seed`, run in `dir`; a distilled
/// arm's teacher is its teacher arm's best checkpoint under `out`.
fn arm_options(budget: &Budget, a: &Arm, seed: u64, out: &Path, dir: &Path) -> TrainOptions {
    let labeled = ((budget.synth_train as f64 * a.labeled_fraction).round() as usize).max(1);
    let (model, fusion) = match &a.kind {
        ArmKind::Student | ArmKind::Distilled { .. } => (budget.student.clone(), None),
        ArmKind::Teacher(f) => (budget.teacher.clone(), Some(*f)),
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
        synth_train: labeled,
        synth_val: budget.synth_val,
        augment: true,
        val_split: Split::Val,
        stop_after: None,
        fusion,
        distill: arm_distill_options(budget, a, seed, out, labeled),
    }
}

/// A distilled arm's distillation options (none for the others): its
/// losses, its teacher arm's best checkpoint and, in the unlabeled-pairs
/// setting, the training pairs beyond the `labeled` ones as unlabeled pairs.
fn arm_distill_options(
    budget: &Budget,
    a: &Arm,
    seed: u64,
    out: &Path,
    labeled: usize,
) -> Option<DistillOptions> {
    let ArmKind::Distilled {
        losses,
        teacher_arm,
    } = &a.kind
    else {
        return None;
    };
    Some(DistillOptions {
        losses: losses.clone(),
        unlabeled: a.unlabeled.then(|| {
            format!(
                "synth:{}",
                budget.synth_train.saturating_sub(labeled).max(1)
            )
        }),
        ..DistillOptions::with_defaults(
            out.join(format!("seed{seed}"))
                .join(teacher_arm)
                .join("best.safetensors"),
        )
    })
}

/// Removes what a run killed before it committed its first epoch (no
/// last.safetensors yet) left in `dir`, so that the fresh run does not
/// refuse the folder.
fn remove_stale_outputs(dir: &Path) -> Result<()> {
    for f in ["best.safetensors", "results.csv"] {
        let p = dir.join(f);
        if p.exists() {
            std::fs::remove_file(&p)
                .with_context(|| format!("cannot remove stale {}", p.display()))?;
        }
    }
    Ok(())
}

/// The checkpoint `best` evaluated on the generator's held-out test split
/// (seed 0's, the same images for every seed), per condition.
fn score_on_test_split(budget: &Budget, best: &Path) -> Result<EvalReport> {
    let dev = device("cpu")?;
    let (model, cfg) = load_detector(best, &dev)?;
    let test = SynthSizes {
        train: 0,
        val: budget.synth_test,
        seed: 0,
    };
    let (names, source) = open_eval_split("synth", Split::Test, test)?;
    validate(
        &model,
        source,
        &names,
        cfg.imgsz,
        budget.batch,
        budget.workers,
        &dev,
    )
}

/// Mean and sample standard deviation (0 for one value).
pub fn mean_std(v: &[f64]) -> (f64, f64) {
    let n = v.len() as f64;
    let mean = v.iter().sum::<f64>() / n;
    let var = if v.len() > 1 {
        v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0)
    } else {
        0.0
    };
    (mean, var.sqrt())
}

/// `{"splits": {split: {arm: {"map50", "map", "map50_std", "map_std", "n"}}}, …}`.
pub fn results_json(budget: &Budget, plan: &[Arm], results: &[ArmResult], elapsed_s: f64) -> Value {
    let mut splits = serde_json::Map::new();
    for split in SPLITS {
        let mut arms_json = serde_json::Map::new();
        for a in plan {
            let vals: Vec<(f64, f64)> = results
                .iter()
                .filter(|r| r.arm == a.key)
                .filter_map(|r| r.splits.get(split).copied())
                .collect();
            if vals.is_empty() {
                continue;
            }
            let (m50, s50) = mean_std(&vals.iter().map(|v| v.0).collect::<Vec<_>>());
            let (m, s) = mean_std(&vals.iter().map(|v| v.1).collect::<Vec<_>>());
            arms_json.insert(
                a.key.clone(),
                json!({"map50": m50, "map": m, "map50_std": s50, "map_std": s, "n": vals.len()}),
            );
        }
        splits.insert(split.to_string(), Value::Object(arms_json));
    }
    let arms_meta: serde_json::Map<String, Value> = plan
        .iter()
        .map(|a| {
            let times: Vec<f64> = results
                .iter()
                .filter(|r| r.arm == a.key)
                .map(|r| r.train_s)
                .collect();
            (
                a.key.clone(),
                json!({
                    "description": a.description,
                    "labeled_fraction": a.labeled_fraction,
                    "unlabeled_pairs": a.unlabeled,
                    "train_s": times,
                }),
            )
        })
        .collect();
    json!({
        "splits": splits,
        "arms": arms_meta,
        "budget": budget,
        "runs": results,
        "elapsed_s": elapsed_s,
    })
}

fn write_results(
    out: &Path,
    budget: &Budget,
    plan: &[Arm],
    results: &[ArmResult],
    elapsed_s: f64,
) -> Result<()> {
    let json = results_json(budget, plan, results, elapsed_s);
    write_atomic(
        &out.join("results.json"),
        &serde_json::to_string_pretty(&json)?,
    )?;
    write_atomic(&out.join("results.md"), &results_markdown(&json, plan))
}

fn write_atomic(path: &PathBuf, text: &str) -> Result<()> {
    // per process: parallel `--first-seed` runs share the folder
    let tmp = path.with_extension(format!("{}.tmp", std::process::id()));
    std::fs::write(&tmp, text).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))
}

/// The table: arms × splits, mAP50 then mAP50-95, mean ± std over seeds,
/// and the distilled − baseline gain.
pub fn results_markdown(json: &Value, plan: &[Arm]) -> String {
    let b = &json["budget"];
    let mut s = String::new();
    s.push_str(&format!(
        "# irdistill experiment ({} preset)\n\n{} vs {} at imgsz {}, {} epochs, batch {}, {} training pairs; scored on {} held-out synthetic test pairs. Mean ± std over seeds (n per cell).\n\n",
        b["preset"].as_str().unwrap_or("?"),
        b["student"].as_str().unwrap_or("?"),
        b["teacher"].as_str().unwrap_or("?"),
        b["imgsz"], b["epochs"], b["batch"], b["synth_train"], b["synth_test"]
    ));
    if let Some(te) = b["teacher_epochs"].as_u64() {
        s.push_str(&format!(
            "Teachers trained for {te} epochs (students: {}).\n\n",
            b["epochs"]
        ));
    }
    for (metric, title) in [("map50", "mAP50"), ("map", "mAP50-95")] {
        s.push_str(&format!(
            "## {title}\n\n| arm | {} |\n|---|{}\n",
            SPLITS.join(" | "),
            "---|".repeat(SPLITS.len())
        ));
        for a in plan {
            let cells: Vec<String> = SPLITS
                .iter()
                .map(|sp| {
                    let c = &json["splits"][sp][&a.key];
                    match (
                        c[metric].as_f64(),
                        c[&format!("{metric}_std")].as_f64(),
                        c["n"].as_u64(),
                    ) {
                        (Some(m), Some(sd), Some(n)) if n > 1 => format!("{m:.3} ± {sd:.3}"),
                        (Some(m), _, Some(_)) => format!("{m:.3}"),
                        _ => "–".into(),
                    }
                })
                .collect();
            s.push_str(&format!("| {} | {} |\n", a.key, cells.join(" | ")));
        }
        let gain: Vec<String> = SPLITS
            .iter()
            .map(|sp| {
                let d = json["splits"][sp]["distilled"][metric].as_f64();
                let base = json["splits"][sp]["baseline"][metric].as_f64();
                match (d, base) {
                    (Some(d), Some(b)) => format!("{:+.3}", d - b),
                    _ => "–".into(),
                }
            })
            .collect();
        s.push_str(&format!(
            "| **distilled − baseline** | {} |\n\n",
            gain.join(" | ")
        ));
    }
    s.push_str("## Arms\n\n");
    for a in plan {
        s.push_str(&format!("- `{}`: {}\n", a.key, a.description));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_and_arms() {
        let q = arms("quick", 0.2);
        let keys: Vec<&str> = q.iter().map(|a| a.key.as_str()).collect();
        assert_eq!(keys, ["baseline", "teacher", "distilled"]);
        let f = arms("full", 0.2);
        assert_eq!(f.len(), 12);
        // every distilled arm's teacher is trained before it
        for (i, a) in f.iter().enumerate() {
            if let ArmKind::Distilled { teacher_arm, .. } = &a.kind {
                let t = f.iter().position(|b| &b.key == teacher_arm).unwrap();
                assert!(t < i, "{} before its teacher", a.key);
            }
        }
        assert!(Budget::preset("slow").is_err());
        let keys = |v: Vec<Arm>| v.into_iter().map(|a| a.key).collect::<Vec<_>>();
        // a distilled arm brings its teacher, in training order
        let only = |names: &[&str]| names.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            keys(
                select_arms(
                    arms("full", 0.2),
                    &only(&["distilled_unlabeled", "baseline"])
                )
                .unwrap()
            ),
            ["baseline", "teacher_labeled_subset", "distilled_unlabeled"]
        );
        assert_eq!(keys(select_arms(arms("quick", 0.2), &[]).unwrap()).len(), 3);
        let err = select_arms(arms("quick", 0.2), &only(&["teacher_add"])).unwrap_err();
        assert!(err.to_string().contains("teacher_add"), "{err}");
        assert_eq!(mean_std(&[1.0, 3.0]), (2.0, 2f64.sqrt()));
        assert_eq!(mean_std(&[0.5]), (0.5, 0.0));
    }

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
            train_s: 1.0,
            images_per_s: 1.0,
        };
        let results = vec![
            mk("baseline", 0, 0.2),
            mk("baseline", 1, 0.4),
            mk("distilled", 0, 0.5),
        ];
        let j = results_json(&budget, &plan, &results, 3.0);
        let b = &j["splits"]["adverse"]["baseline"];
        assert!((b["map50"].as_f64().unwrap() - 0.3).abs() < 1e-12);
        assert!((b["map"].as_f64().unwrap() - 0.15).abs() < 1e-12);
        assert_eq!(b["n"], 2);
        assert!(j["splits"]["all"]["teacher"].is_null());
        let md = results_markdown(&j, &plan);
        assert!(md.contains("| baseline | 0.300 ± 0.141"), "{md}");
        assert!(md.contains("| **distilled − baseline** | +0.200"), "{md}");
    }
}
