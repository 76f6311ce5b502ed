//! `trainer experiment --preset real --pool DIR --eval DIR`: from unlabeled
//! real RGB+IR pairs to an RGB detector with no human labels, each arm
//! scored on human-labelled frames (`--eval`, every pair, full resolution).
//!
//! ```text
//! pool (unlabeled pairs) ─ autolabel (IR) ─ labels_ir/       arm ir_autolabels: the labels themselves
//!   ├ student on labels_ir                                   arm rgb_pseudo
//!   ├ teacher (RGB+IR) on labels_ir                          arm teacher
//!   │   ├ it relabels the pool ─ labels_teacher/ ─ student   arm rgb_teacher_labels
//!   │   └ student distilled from it (+ its pseudo-labels)    arm distilled
//!   ├ student on labels_ir from --synthetic-init              arm synthetic_init
//!   └ the bundled ONNX model, as is                          arm bundled
//! ```
//!
//! Resumable like the synthetic experiment: each arm writes
//! `OUT/<arm>/eval.json` when it finishes; a rerun skips finished arms and
//! continues an interrupted one from its `last.safetensors`.

use super::super::init::device;
use super::super::optim::OptimizerKind;
use super::super::options::TrainOptions;
use super::super::run::train;
use super::super::source::open_all_pairs;
use super::super::validate::predict_images;
use crate::shared::condition::Split;
use crate::shared::eval::{evaluate_dataset, EvalReport};
use crate::trainer::autolabel::{autolabel_ir, AutolabelOptions, DEFAULT_IR_CONF, SUMMARY_FILE};
use crate::trainer::checkpoint::load_detector;
use crate::trainer::distill::DistillOptions;
use anyhow::{bail, ensure, Context, Result};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// The arms, in the order they run (a later one may need an earlier one's
/// output).
pub const REAL_ARMS: [&str; 7] = [
    "ir_autolabels",
    "rgb_pseudo",
    "teacher",
    "rgb_teacher_labels",
    "distilled",
    "synthetic_init",
    "bundled",
];

/// The folder of the IR autolabels inside the experiment folder.
const LABELS_DIR: &str = "labels_ir";
/// Between the commands of an arm that runs several.
const COMMAND_SEPARATOR: &str = " && ";
/// The folder of the teacher's labels (arm `rgb_teacher_labels`).
const TEACHER_LABELS_DIR: &str = "labels_teacher";

#[derive(Debug, Clone)]
pub struct RealOptions {
    /// Unlabeled RGB+IR pairs to learn from.
    pub pool: PathBuf,
    /// Human-labelled pairs (class `person`), never trained on.
    pub eval: PathBuf,
    pub out: PathBuf,
    pub imgsz: usize,
    pub epochs: usize,
    pub teacher_epochs: usize,
    pub batch: usize,
    pub workers: usize,
    pub seed: u64,
    pub student: String,
    pub teacher: String,
    /// A checkpoint trained on generated scenes (arm `synthetic_init`).
    pub synthetic_init: Option<PathBuf>,
    /// An ONNX model scored as is (arm `bundled`).
    pub bundled: Option<PathBuf>,
    /// Only these arms (and what they need); empty = every arm that has
    /// its inputs.
    pub only: Vec<String>,
    pub device: String,
}

impl RealOptions {
    /// The preset: 320 px (real frames' persons are small), 25 epochs,
    /// student-p.
    pub fn preset(pool: PathBuf, eval: PathBuf, out: PathBuf) -> Self {
        Self {
            pool,
            eval,
            out,
            imgsz: 320,
            epochs: 25,
            teacher_epochs: 25,
            batch: 16,
            workers: 2,
            seed: 0,
            student: "student-p".into(),
            teacher: "teacher-p".into(),
            synthetic_init: None,
            bundled: None,
            only: Vec::new(),
            device: "cpu".into(),
        }
    }
}

/// One arm's score on the evaluation frames (`OUT/<arm>/eval.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RealArmResult {
    pub arm: String,
    /// Person AP50 and AP50-95 on the evaluation frames.
    pub ap50: f64,
    pub ap: f64,
    /// Wall time of the arm (training, or labelling), evaluation excluded.
    pub wall_s: f64,
    /// What produced it (the equivalent command).
    pub command: String,
}

/// Runs (or continues) the real-data experiment; returns `results.json`.
pub fn run_real_experiment(o: &RealOptions) -> Result<Value> {
    let plan = plan(o)?;
    std::fs::create_dir_all(&o.out)
        .with_context(|| format!("cannot create {}", o.out.display()))?;
    let mut results: BTreeMap<String, RealArmResult> = BTreeMap::new();
    for arm in &plan {
        let eval_path = o.out.join(arm).join("eval.json");
        let r = match read_result(&eval_path) {
            Some(r) => {
                eprintln!("{arm}: done earlier ({})", eval_path.display());
                r
            }
            None => {
                let r = run_arm(o, arm).with_context(|| format!("arm {arm}"))?;
                std::fs::create_dir_all(o.out.join(arm))?;
                std::fs::write(&eval_path, serde_json::to_string_pretty(&r)?)
                    .with_context(|| format!("cannot write {}", eval_path.display()))?;
                r
            }
        };
        eprintln!(
            "{arm}: person AP50 {:.3}, AP50-95 {:.3} ({:.0} s)",
            r.ap50, r.ap, r.wall_s
        );
        results.insert(arm.clone(), r);
        write_results(o, &finished_arms(o, &results))?;
    }
    write_results(o, &finished_arms(o, &results))
}

/// `results` and every other arm an earlier invocation finished in the
/// folder (a run of some arms reports them all).
fn finished_arms(
    o: &RealOptions,
    results: &BTreeMap<String, RealArmResult>,
) -> BTreeMap<String, RealArmResult> {
    let mut all = results.clone();
    for arm in REAL_ARMS {
        if !all.contains_key(arm) {
            if let Some(r) = read_result(&o.out.join(arm).join("eval.json")) {
                all.insert(arm.to_owned(), r);
            }
        }
    }
    all
}

/// The arms to run: `--arms` (with the teacher `distilled` needs and the
/// labels every trained arm needs), or every arm whose inputs were given.
fn plan(o: &RealOptions) -> Result<Vec<String>> {
    for a in &o.only {
        ensure!(
            REAL_ARMS.contains(&a.as_str()),
            "unknown arm '{a}' for --preset real; arms: {}",
            REAL_ARMS.join(", ")
        );
    }
    let wanted = |a: &str| {
        if o.only.is_empty() {
            match a {
                "synthetic_init" => o.synthetic_init.is_some(),
                "bundled" => o.bundled.is_some(),
                _ => true,
            }
        } else {
            o.only.iter().any(|x| x == a)
                || (a == "teacher"
                    && o.only
                        .iter()
                        .any(|x| x == "distilled" || x == "rgb_teacher_labels"))
                || (a == "ir_autolabels" && o.only.iter().any(|x| x != "bundled"))
        }
    };
    let plan: Vec<String> = REAL_ARMS
        .iter()
        .filter(|a| wanted(a))
        .map(|a| a.to_string())
        .collect();
    // refused before hours of training, not after
    if plan.iter().any(|a| a == "synthetic_init") {
        ensure!(
            o.synthetic_init.is_some(),
            "arm synthetic_init needs --synthetic-init CHECKPOINT"
        );
    }
    if plan.iter().any(|a| a == "bundled") {
        ensure!(
            o.bundled.is_some(),
            "arm bundled needs --bundled MODEL.onnx"
        );
    }
    Ok(plan)
}

/// The labelling time an earlier autolabel recorded in `autolabel.json`.
fn read_autolabel_wall_s(labels: &Path) -> Option<f64> {
    let v: Value = serde_json::from_slice(&std::fs::read(labels.join(SUMMARY_FILE)).ok()?).ok()?;
    v["wall_s"].as_f64()
}

fn read_result(path: &Path) -> Option<RealArmResult> {
    serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()
}

fn run_arm(o: &RealOptions, arm: &str) -> Result<RealArmResult> {
    let labels = o.out.join(LABELS_DIR);
    let started = Instant::now();
    let (report, command) = match arm {
        "ir_autolabels" => {
            // a half-written label folder of an interrupted run is redone
            if labels.exists() && !labels.join(SUMMARY_FILE).exists() {
                std::fs::remove_dir_all(&labels)
                    .with_context(|| format!("cannot remove {}", labels.display()))?;
            }
            let wall_s = if labels.exists() {
                read_autolabel_wall_s(&labels).unwrap_or(0.0)
            } else {
                autolabel_ir(&AutolabelOptions {
                    data: o.pool.clone(),
                    out: labels.clone(),
                    conf: DEFAULT_IR_CONF,
                    eval: None,
                })?
                .wall_s
            };
            let q = crate::trainer::autolabel::measure(&o.eval, DEFAULT_IR_CONF)?;
            return Ok(RealArmResult {
                arm: arm.into(),
                ap50: q.ap50,
                ap: q.ap,
                wall_s,
                command: format!(
                    "trainer autolabel --data {} --out {} --eval {}",
                    o.pool.display(),
                    labels.display(),
                    o.eval.display()
                ),
            });
        }
        "bundled" => {
            let model = o.bundled.clone().context("--bundled MODEL.onnx")?;
            (
                score_onnx(&model, &o.eval)?,
                format!(
                    "irdistill val --model {} --data {}",
                    model.display(),
                    o.eval.display()
                ),
            )
        }
        _ => {
            ensure!(
                labels.join(SUMMARY_FILE).exists(),
                "{} has no labels yet: run arm ir_autolabels first",
                labels.display()
            );
            let mut command = String::new();
            let data = if arm == "rgb_teacher_labels" {
                let (dir, labelled) = teacher_labels(o, &labels)?;
                command = labelled + COMMAND_SEPARATOR;
                dir
            } else {
                labels
            };
            let opts = arm_options(o, arm, &data)?;
            command += &describe(&opts);
            let dir = opts.out.clone();
            let resume = dir.join("last.safetensors").exists();
            if !resume && dir.exists() {
                // killed before its first checkpoint: start it afresh
                super::remove_stale_outputs(&dir)?;
            }
            let rows = train(opts, &o.device, resume)?;
            let ckpt = dir.join("last.safetensors");
            // every epoch's time, whichever invocation trained it
            let train_s = rows.iter().map(|r| r.epoch_s).sum::<f64>();
            return finish(arm, &score_checkpoint(o, &ckpt)?, train_s, command);
        }
    };
    finish(arm, &report, started.elapsed().as_secs_f64(), command)
}

/// The teacher's labels of the pool, written once to `labels_teacher/`
/// (threshold: best F1 against the IR labels' validation pairs); returns
/// the folder and the equivalent command.
fn teacher_labels(o: &RealOptions, ir_labels: &Path) -> Result<(PathBuf, String)> {
    let dir = o.out.join(TEACHER_LABELS_DIR);
    let teacher = o.out.join("teacher").join("last.safetensors");
    ensure!(
        o.out.join("teacher").join("eval.json").exists(),
        "arm rgb_teacher_labels needs the finished arm teacher"
    );
    let done = dir.join(crate::shared::data::meta::META_FILE);
    if dir.exists() && !done.exists() {
        std::fs::remove_dir_all(&dir)
            .with_context(|| format!("cannot remove {}", dir.display()))?;
    }
    if !done.exists() {
        crate::trainer::pseudo_label::pseudo_label(
            &crate::trainer::pseudo_label::PseudoLabelOptions {
                teacher: teacher.clone(),
                data: o.pool.display().to_string(),
                out: dir.clone(),
                conf: None,
                val_data: ir_labels.display().to_string(),
                synth_val: 0,
                batch: o.batch,
                workers: o.workers,
                device: o.device.clone(),
            },
        )?;
    }
    let command = format!(
        "trainer autolabel --method teacher --teacher {} --data {} --val-data {} --out {}",
        teacher.display(),
        o.pool.display(),
        ir_labels.display(),
        dir.display()
    );
    Ok((dir, command))
}

/// The arm's result from its evaluation report (class `person`).
fn finish(arm: &str, report: &EvalReport, wall_s: f64, command: String) -> Result<RealArmResult> {
    let person = report
        .overall
        .per_class
        .iter()
        .find(|c| c.name == "person")
        .context("the evaluation frames have no class 'person'")?;
    Ok(RealArmResult {
        arm: arm.into(),
        ap50: person.map50,
        ap: person.map,
        wall_s,
        command,
    })
}

/// The training options of a trained arm.
fn arm_options(o: &RealOptions, arm: &str, labels: &Path) -> Result<TrainOptions> {
    let teacher_dir = o.out.join("teacher");
    let (model, epochs, init, distill) = match arm {
        "rgb_pseudo" | "rgb_teacher_labels" => (o.student.clone(), o.epochs, None, None),
        "teacher" => (o.teacher.clone(), o.teacher_epochs, None, None),
        "distilled" => {
            let teacher = teacher_dir.join("last.safetensors");
            ensure!(
                teacher_dir.join("eval.json").exists(),
                "arm distilled needs the finished arm teacher ({})",
                teacher_dir.display()
            );
            let mut d = DistillOptions::with_defaults(teacher);
            // the teacher labels the same pairs again (pseudo-labels, its
            // responses and features): what it learned beyond the IR rules
            d.unlabeled = Some(o.pool.display().to_string());
            (o.student.clone(), o.epochs, None, Some(d))
        }
        "synthetic_init" => (
            o.student.clone(),
            o.epochs,
            Some(
                o.synthetic_init
                    .clone()
                    .context("arm synthetic_init needs --synthetic-init CHECKPOINT")?,
            ),
            None,
        ),
        other => bail!("arm {other} is not trained"),
    };
    Ok(TrainOptions {
        data: labels.display().to_string(),
        model,
        imgsz: o.imgsz,
        epochs,
        batch: o.batch,
        out: o.out.join(arm),
        seed: o.seed,
        optimizer: OptimizerKind::AdamW,
        lr0: 0.002,
        lrf: 0.01,
        weight_decay: 0.0005,
        momentum: 0.9,
        warmup_epochs: 3.0,
        workers: o.workers,
        synth_train: 0,
        synth_val: 0,
        augment: true,
        val_split: Split::Val,
        stop_after: None,
        fusion: None,
        distill,
        repeat: 1,
        synth_conditions: None,
        init,
    })
}

/// The command line equivalent to a trained arm's options.
fn describe(t: &TrainOptions) -> String {
    let mut c = match &t.distill {
        Some(d) => format!(
            "trainer distill --teacher {} --unlabeled {}",
            d.teacher.display(),
            d.unlabeled.as_deref().unwrap_or("-")
        ),
        None => "trainer train".to_owned(),
    };
    let _ = write!(
        c,
        " --model {} --data {} --imgsz {} --epochs {} --batch {} --seed {} --out {}",
        t.model,
        t.data,
        t.imgsz,
        t.epochs,
        t.batch,
        t.seed,
        t.out.display()
    );
    if let Some(init) = &t.init {
        let _ = write!(c, " --init {}", init.display());
    }
    c
}

/// A checkpoint (student or teacher) on every evaluation pair.
fn score_checkpoint(o: &RealOptions, ckpt: &Path) -> Result<EvalReport> {
    let dev = device(&o.device)?;
    let (model, cfg) = load_detector(ckpt, &dev)?;
    let (names, source) = open_all_pairs(&o.eval.display().to_string())?;
    // the model's class ids must be the labels' (one class, person)
    ensure!(
        cfg.names == names,
        "the model's classes {:?} differ from the evaluation frames' {:?}",
        cfg.names,
        names
    );
    let images = predict_images(&model, source, cfg.nc, cfg.imgsz, o.batch, o.workers, &dev)?;
    Ok(evaluate_dataset(&names, &images))
}

#[cfg(feature = "runtime")]
fn score_onnx(model: &Path, eval: &Path) -> Result<EvalReport> {
    use crate::device::infer::ModelOptions;
    use crate::device::val::{evaluate_onnx, EVAL_NMS};
    let dataset = crate::shared::data::Dataset::open(eval)?;
    evaluate_onnx(
        model,
        &ModelOptions {
            imgsz: None,
            names: None,
            threads: 1,
        },
        EVAL_NMS,
        &dataset,
        None,
    )
}

#[cfg(not(feature = "runtime"))]
fn score_onnx(_model: &Path, _eval: &Path) -> Result<EvalReport> {
    bail!("arm bundled runs the ONNX model with the runtime: build with --features runtime")
}

/// `OUT/results.json` (`{"arms": {name: {ap50, ap, wall_s}}, "commands"}`)
/// and `OUT/results.md`.
fn write_results(o: &RealOptions, results: &BTreeMap<String, RealArmResult>) -> Result<Value> {
    let arms: serde_json::Map<String, Value> = REAL_ARMS
        .iter()
        .filter_map(|a| results.get(*a))
        .map(|r| {
            (
                r.arm.clone(),
                json!({"ap50": r.ap50, "ap": r.ap, "wall_s": r.wall_s}),
            )
        })
        .collect();
    let commands: Vec<&str> = REAL_ARMS
        .iter()
        .filter_map(|a| results.get(*a))
        .flat_map(|r| r.command.split(COMMAND_SEPARATOR))
        .collect();
    let value = json!({
        "arms": arms,
        "commands": commands,
        "eval": o.eval,
        "pool": o.pool,
        "imgsz": o.imgsz,
        "epochs": o.epochs,
        "teacher_epochs": o.teacher_epochs,
    });
    std::fs::write(
        o.out.join("results.json"),
        serde_json::to_string_pretty(&value)?,
    )
    .context("cannot write results.json")?;
    let mut md =
        String::from("| arm | person AP50 | AP50-95 | wall time |\n| --- | ---: | ---: | ---: |\n");
    for r in REAL_ARMS.iter().filter_map(|a| results.get(*a)) {
        let _ = writeln!(
            md,
            "| {} | {:.3} | {:.3} | {:.0} min |",
            r.arm,
            r.ap50,
            r.ap,
            r.wall_s / 60.0
        );
    }
    md.push_str("\nCommands:\n\n");
    for command in &commands {
        let _ = writeln!(md, "    {command}");
    }
    std::fs::write(o.out.join("results.md"), md).context("cannot write results.md")?;
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_adds_what_arms_need_and_refuses_unknown_arms() {
        let mut o = RealOptions::preset("p".into(), "e".into(), "o".into());
        assert_eq!(
            plan(&o).unwrap(),
            [
                "ir_autolabels",
                "rgb_pseudo",
                "teacher",
                "rgb_teacher_labels",
                "distilled"
            ]
        );
        o.only = vec!["distilled".into()];
        assert_eq!(plan(&o).unwrap(), ["ir_autolabels", "teacher", "distilled"]);
        o.only = vec!["rgb_teacher_labels".into()];
        assert_eq!(
            plan(&o).unwrap(),
            ["ir_autolabels", "teacher", "rgb_teacher_labels"]
        );
        o.only = vec!["bundled".into()];
        assert!(format!("{:#}", plan(&o).unwrap_err()).contains("--bundled"));
        o.bundled = Some("m.onnx".into());
        assert_eq!(plan(&o).unwrap(), ["bundled"]);
        o.only = vec!["synthetic_init".into()];
        assert!(format!("{:#}", plan(&o).unwrap_err()).contains("--synthetic-init"));
        o.only = vec!["nope".into()];
        assert!(format!("{:#}", plan(&o).unwrap_err()).contains("unknown arm 'nope'"));
    }
}
