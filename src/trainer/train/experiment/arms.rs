//! What an experiment trains: the budget every arm shares ([`Budget`], by
//! preset), the three label settings ([`Setting`]) and the arms of each
//! (baseline, teacher, distilled; the ablations beside them).

use crate::shared::condition::Condition;
use crate::trainer::distill::feature::FeatureNorm;
use crate::trainer::distill::{DistillLoss, DistillOptions};
use crate::trainer::model::Fusion;
use anyhow::{bail, ensure, Result};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// Which checkpoint of an arm is scored on the test split (and distilled
/// from, for teachers).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scored {
    /// The epoch with the best validation fitness.
    Best,
    /// The last epoch's EMA weights: fixed in advance, so the test split
    /// plays no part in any choice and validation none either.
    Last,
}

/// Sizes and budget shared by every arm.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Budget {
    pub preset: String,
    pub student: String,
    pub teacher: String,
    pub imgsz: usize,
    /// Epochs of every student arm. Arms on a fraction of the labels pass
    /// over their pairs `1/fraction` times per epoch, so every student arm
    /// takes the same number of optimizer steps.
    pub epochs: usize,
    pub batch: usize,
    /// Training pairs of the full-labels setting (and the total of labeled
    /// plus unlabeled pairs in the others).
    pub synth_train: usize,
    /// Validation pairs (best-checkpoint selection, pseudo-label threshold).
    pub synth_val: usize,
    /// Held-out test pairs every arm is scored on (generator seed 0's test
    /// split for every seed, so all seeds are scored on the same images).
    pub synth_test: usize,
    pub workers: usize,
    /// Fraction of labeled pairs in the few-labels setting.
    pub labeled_fraction: f64,
    /// Epochs of the teacher arms (none: `epochs`). A teacher trained
    /// longer or shorter costs nothing at deployment; every student arm
    /// keeps the same budget, so baseline and distilled stay comparable.
    #[serde(default)]
    pub teacher_epochs: Option<usize>,
    #[serde(default = "best")]
    pub scored: Scored,
}

fn best() -> Scored {
    Scored::Best
}

impl Budget {
    /// `quick`: one seed fits in 45 minutes on a 2-core machine (CI-sized).
    /// `full`: every setting and ablation at 256 px, 20 epochs; hours.
    /// `paper`: the converged protocol of the results in `docs/results/`:
    /// 160 px, 1200 pairs, 100 epochs (ultralytics' same model is flat
    /// over its last 20 % there), 1200 test pairs, last epoch scored.
    pub fn preset(name: &str) -> Result<Budget> {
        let quick = Budget {
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
            scored: Scored::Best,
        };
        Ok(match name {
            "quick" => quick,
            "full" => Budget {
                imgsz: 256,
                epochs: 20,
                synth_train: 2000,
                synth_val: 200,
                synth_test: 600,
                ..quick
            },
            "paper" => Budget {
                epochs: 100,
                synth_train: 1200,
                synth_val: 200,
                synth_test: 1200,
                teacher_epochs: Some(50),
                scored: Scored::Last,
                ..quick
            },
            other => bail!("--preset {other}: expected quick, full or paper"),
        })
    }

    /// Labeled training pairs of `setting`.
    pub fn labeled_pairs(&self, setting: Setting) -> usize {
        let n = self.synth_train as f64;
        let labeled = match setting {
            Setting::Full => n,
            Setting::Few => n * self.labeled_fraction,
            Setting::DayLabels => n / 3.0,
        };
        (labeled.round() as usize).clamp(1, self.synth_train.max(1))
    }

    /// How many times an epoch passes over the labeled pairs of `setting`
    /// so that it has the steps of a full-labels epoch.
    pub fn repeat(&self, setting: Setting) -> usize {
        let labeled = self.labeled_pairs(setting);
        ((self.synth_train as f64 / labeled as f64).round() as usize).max(1)
    }

    /// The unlabeled pairs of `setting` (`--unlabeled` spec): the training
    /// pairs beyond the labeled ones; by day, night and fog pairs of
    /// another generator seed.
    pub fn unlabeled_spec(&self, setting: Setting) -> Option<String> {
        let rest = self
            .synth_train
            .saturating_sub(self.labeled_pairs(setting))
            .max(1);
        match setting {
            Setting::Full => None,
            Setting::Few => Some(format!("synth:{rest}")),
            Setting::DayLabels => Some(format!("synth:{rest}:night,fog")),
        }
    }
}

/// Which pairs carry labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Setting {
    /// Every training pair labeled.
    Full,
    /// `labeled_fraction` of them labeled, the rest unlabeled RGB+IR pairs.
    Few,
    /// Labels only by day (a third of the pairs); night and fog pairs come
    /// unlabeled: the thermal camera labels the dark.
    DayLabels,
}

impl Setting {
    /// The conditions of its labeled pairs (none: all).
    pub fn labeled_conditions(self) -> Option<Vec<Condition>> {
        (self == Setting::DayLabels).then(|| vec![Condition::Day])
    }
}

/// How a distilled arm distils.
#[derive(Debug, Clone, PartialEq)]
pub struct Recipe {
    pub losses: Vec<DistillLoss>,
    /// Score-weighted detection targets from the teacher on unlabeled pairs.
    pub pseudo_labels: bool,
    /// The first recipe (per-image feature normalisation, LD at T = 2,
    /// teacher objects at 0.5): the "before" of the ablation.
    pub first_recipe: bool,
    /// The student starts from the teacher's RGB backbone, neck and head.
    pub teacher_init: bool,
}

impl Recipe {
    /// The default recipe of `trainer distill`.
    pub fn default_recipe() -> Self {
        Self {
            losses: DistillOptions::LOSSES.to_vec(),
            pseudo_labels: true,
            first_recipe: false,
            teacher_init: false,
        }
    }

    /// The distillation options of this recipe with `teacher`.
    pub fn options(&self, teacher: PathBuf, unlabeled: Option<String>) -> DistillOptions {
        let mut o = DistillOptions::with_defaults(teacher);
        o.losses = self.losses.clone();
        o.unlabeled = unlabeled;
        if !self.pseudo_labels {
            o.pseudo_weight = 0.0;
        }
        o.init_from_teacher = self.teacher_init;
        if self.first_recipe {
            o.feature_norm = FeatureNorm::Image;
            o.ld_weight = 0.5;
            o.ld_temperature = None;
            o.teacher_conf = Some(0.5);
            o.pseudo_weight = 0.0;
        }
        o
    }
}

/// What an arm trains.
#[derive(Debug, Clone, PartialEq)]
pub enum ArmKind {
    Student,
    Teacher(Fusion),
    Distilled {
        recipe: Recipe,
        /// The arm whose scored checkpoint is the teacher.
        teacher_arm: String,
    },
    /// Not trained: the same run as another arm (the few-labels oracle is
    /// the full-labels baseline: all pairs labeled, the same steps).
    SameAs(String),
}

#[derive(Debug, Clone)]
pub struct Arm {
    /// The key in results.json (`baseline`, `teacher`, `distilled`, …).
    pub key: String,
    pub kind: ArmKind,
    pub setting: Setting,
    pub description: String,
}

fn arm(key: &str, setting: Setting, kind: ArmKind, description: &str) -> Arm {
    Arm {
        key: key.into(),
        kind,
        setting,
        description: description.into(),
    }
}

fn distilled(key: &str, setting: Setting, recipe: Recipe, teacher: &str, what: &str) -> Arm {
    let kind = ArmKind::Distilled {
        recipe,
        teacher_arm: teacher.into(),
    };
    arm(key, setting, kind, what)
}

/// The paired comparisons an experiment reports: (arm, its baseline).
pub const COMPARISONS: [(&str, &str); 14] = [
    ("distilled", "baseline"),
    ("few_distilled", "few_baseline"),
    ("oracle", "few_baseline"),
    ("day_distilled", "day_baseline"),
    ("distilled_teacher_init", "baseline"),
    ("distilled_decoupled", "baseline"),
    ("distilled_first_recipe", "baseline"),
    ("distill_feature", "baseline"),
    ("distill_response", "baseline"),
    ("distilled_contrastive", "baseline"),
    ("few_distilled_no_pseudo", "few_baseline"),
    ("day_distilled_no_pseudo", "day_baseline"),
    ("day_pseudo_only", "day_baseline"),
    ("teacher", "baseline"),
];

/// The arms of a preset, in training order (teachers before their students).
pub fn arms(preset: &str, labeled_fraction: f64) -> Vec<Arm> {
    use DistillLoss::*;
    use Setting::*;
    let default = Recipe::default_recipe();
    let mut v = vec![
        arm(
            "baseline",
            Full,
            ArmKind::Student,
            "RGB-only student, all pairs labeled",
        ),
        arm(
            "teacher",
            Full,
            ArmKind::Teacher(Fusion::Cca),
            "RGB+IR teacher, CCAFusion (evaluated on RGB+IR)",
        ),
        distilled(
            "distilled",
            Full,
            default.clone(),
            "teacher",
            "student distilled from `teacher` with the default recipe (feature + response)",
        ),
    ];
    if preset == "quick" {
        return v;
    }
    let pct = (labeled_fraction * 100.0).round();
    v.extend([
        arm(
            "few_baseline",
            Few,
            ArmKind::Student,
            &format!("RGB-only student on the {pct} % labeled pairs"),
        ),
        arm(
            "few_teacher",
            Few,
            ArmKind::Teacher(Fusion::Cca),
            &format!("CCAFusion teacher on the {pct} % labeled pairs"),
        ),
        distilled(
            "few_distilled",
            Few,
            default.clone(),
            "few_teacher",
            &format!("student distilled from `few_teacher` on the {pct} % labeled pairs plus the rest unlabeled, with pseudo-labels"),
        ),
        arm(
            "oracle",
            Few,
            ArmKind::SameAs("baseline".into()),
            "upper bound of the few-labels setting: every pair labeled, the same steps (the `baseline` runs)",
        ),
        arm(
            "day_baseline",
            DayLabels,
            ArmKind::Student,
            "RGB-only student on labeled day pairs only",
        ),
        arm(
            "day_teacher",
            DayLabels,
            ArmKind::Teacher(Fusion::Cca),
            "CCAFusion teacher on labeled day pairs only",
        ),
        distilled(
            "day_distilled",
            DayLabels,
            default.clone(),
            "day_teacher",
            "student distilled from `day_teacher` on labeled day pairs plus unlabeled night and fog pairs, with pseudo-labels",
        ),
    ]);
    // ablations: one change each against the default recipe
    let with = |losses: Vec<DistillLoss>| Recipe {
        losses,
        ..default.clone()
    };
    let no_pseudo = Recipe {
        pseudo_labels: false,
        ..default.clone()
    };
    v.extend([
        distilled(
            "distilled_first_recipe",
            Full,
            Recipe {
                losses: vec![Feature, Contrastive, Response],
                pseudo_labels: false,
                first_recipe: true,
                teacher_init: false,
            },
            "teacher",
            "the first recipe: feature (per-image normalisation) + contrastive + response (LD at T = 2)",
        ),
        distilled(
            "distilled_teacher_init",
            Full,
            Recipe {
                teacher_init: true,
                ..default.clone()
            },
            "teacher",
            "default recipe, the student initialised from the teacher's RGB backbone, neck and head",
        ),
        distilled("distill_feature", Full, with(vec![Feature]), "teacher", "feature term alone"),
        distilled("distill_response", Full, with(vec![Response]), "teacher", "response term alone (class KL + LD)"),
        distilled(
            "distilled_contrastive",
            Full,
            with(vec![Feature, Contrastive, Response]),
            "teacher",
            "default recipe plus the contrastive term",
        ),
        distilled(
            "few_distilled_no_pseudo",
            Few,
            no_pseudo.clone(),
            "few_teacher",
            "few labels, unlabeled pairs add L_distill only (no pseudo-labels)",
        ),
        distilled(
            "day_distilled_no_pseudo",
            DayLabels,
            no_pseudo,
            "day_teacher",
            "day labels, unlabeled pairs add L_distill only (no pseudo-labels)",
        ),
        distilled(
            "day_pseudo_only",
            DayLabels,
            Recipe {
                losses: vec![Response],
                ..default.clone()
            },
            "day_teacher",
            "day labels, pseudo-labels with the response term only (no feature imitation)",
        ),
    ]);
    for (key, f) in [
        ("teacher_concat", Fusion::Concat),
        ("teacher_add", Fusion::Add),
        ("teacher_early", Fusion::Early),
        ("teacher_decoupled", Fusion::Decoupled),
    ] {
        v.push(arm(
            key,
            Full,
            ArmKind::Teacher(f),
            &format!("RGB+IR teacher, {f} fusion"),
        ));
    }
    v.push(distilled(
        "distilled_decoupled",
        Full,
        default,
        "teacher_decoupled",
        "default recipe from the decoupled teacher: the student's backbone imitates its common part only",
    ));
    v
}

/// The arms named in `only` (all of `plan` when empty), with the arms they
/// need (a distilled arm's teacher, the arm a `SameAs` arm reuses), in
/// `plan`'s order.
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
    let needed: Vec<String> = plan
        .iter()
        .filter(|a| wanted(a))
        .filter_map(|a| match &a.kind {
            ArmKind::Distilled { teacher_arm, .. } => Some(teacher_arm.clone()),
            ArmKind::SameAs(other) => Some(other.clone()),
            _ => None,
        })
        .collect();
    Ok(plan
        .into_iter()
        .filter(|a| wanted(a) || needed.contains(&a.key))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(v: Vec<Arm>) -> Vec<String> {
        v.into_iter().map(|a| a.key).collect()
    }

    #[test]
    fn presets_and_arms() {
        assert_eq!(
            keys(arms("quick", 0.2)),
            ["baseline", "teacher", "distilled"]
        );
        let f = arms("paper", 0.2);
        // every distilled arm's teacher (and a SameAs arm's source) comes first
        for (i, a) in f.iter().enumerate() {
            let needs = match &a.kind {
                ArmKind::Distilled { teacher_arm, .. } => teacher_arm,
                ArmKind::SameAs(other) => other,
                _ => continue,
            };
            let t = f.iter().position(|b| &b.key == needs).unwrap();
            assert!(t < i, "{} before {needs}", a.key);
        }
        // every compared arm exists
        for (a, b) in COMPARISONS {
            assert!(
                f.iter().any(|x| x.key == a) && f.iter().any(|x| x.key == b),
                "{a} {b}"
            );
        }
        assert!(Budget::preset("slow").is_err());
        let only = |names: &[&str]| names.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            keys(select_arms(arms("paper", 0.2), &only(&["few_distilled", "oracle"])).unwrap()),
            ["baseline", "few_teacher", "few_distilled", "oracle"]
        );
        let err = select_arms(arms("quick", 0.2), &only(&["teacher_add"])).unwrap_err();
        assert!(err.to_string().contains("teacher_add"), "{err}");
    }

    #[test]
    fn every_student_arm_gets_the_same_steps() {
        let b = Budget::preset("paper").unwrap();
        for s in [Setting::Full, Setting::Few, Setting::DayLabels] {
            assert_eq!(b.labeled_pairs(s) * b.repeat(s), b.synth_train, "{s:?}");
        }
        assert_eq!(b.labeled_pairs(Setting::Few), 240);
        assert_eq!(b.unlabeled_spec(Setting::Few).unwrap(), "synth:960");
        assert_eq!(
            b.unlabeled_spec(Setting::DayLabels).unwrap(),
            "synth:800:night,fog"
        );
        assert_eq!(b.unlabeled_spec(Setting::Full), None);
    }
}
