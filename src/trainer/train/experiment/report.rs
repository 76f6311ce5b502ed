//! `results.json` and `results.md` of an experiment, rebuilt from whatever
//! arms have finished: per split and arm the mean ± std over seeds, then
//! the paired comparisons with their two 95 % intervals.

use super::arms::{Arm, Budget, COMPARISONS};
use super::stats::{bootstrap_interval, mean_std, t_interval, TestMatches};
use super::ArmResult;
use serde_json::{json, Value};
use std::collections::BTreeMap;

pub const SPLITS: [&str; 5] = ["day", "night", "fog", "adverse", "all"];

/// Resamples of the test images per bootstrap interval.
pub const BOOTSTRAP_RESAMPLES: usize = 500;

/// `{"splits": {split: {arm: {"map50", "map", "map50_std", "map_std",
/// "map50_seeds", "seeds", "n"}}}, "comparisons": …, "arms": …, "budget": …,
/// "runs": …}`. `matches` holds the test matches of (arm, seed) where kept.
pub fn results_json(
    budget: &Budget,
    plan: &[Arm],
    results: &[ArmResult],
    matches: &BTreeMap<(String, u64), TestMatches>,
    elapsed_s: f64,
) -> Value {
    let mut splits = serde_json::Map::new();
    for split in SPLITS {
        let mut arms_json = serde_json::Map::new();
        for a in plan {
            let runs: Vec<&ArmResult> = results.iter().filter(|r| r.arm == a.key).collect();
            let vals: Vec<(f64, f64)> = runs
                .iter()
                .filter_map(|r| r.splits.get(split).copied())
                .collect();
            if vals.is_empty() {
                continue;
            }
            let m50s: Vec<f64> = vals.iter().map(|v| v.0).collect();
            let (m50, s50) = mean_std(&m50s);
            let (m, s) = mean_std(&vals.iter().map(|v| v.1).collect::<Vec<_>>());
            arms_json.insert(
                a.key.clone(),
                json!({
                    "map50": m50, "map": m, "map50_std": s50, "map_std": s,
                    "map50_seeds": m50s,
                    "seeds": runs.iter().map(|r| r.seed).collect::<Vec<_>>(),
                    "n": vals.len(),
                }),
            );
        }
        splits.insert(split.to_string(), Value::Object(arms_json));
    }
    let arms_meta: serde_json::Map<String, Value> = plan
        .iter()
        .map(|a| {
            let runs: Vec<&ArmResult> = results.iter().filter(|r| r.arm == a.key).collect();
            (
                a.key.clone(),
                json!({
                    "description": a.description,
                    "setting": a.setting,
                    "train_s": runs.iter().map(|r| r.train_s).collect::<Vec<_>>(),
                    "images_per_s": runs.iter().map(|r| r.images_per_s).collect::<Vec<_>>(),
                    "pseudo_labels": runs.iter().filter_map(|r| r.pseudo_labels.clone()).collect::<Vec<_>>(),
                }),
            )
        })
        .collect();
    json!({
        "splits": splits,
        "comparisons": comparisons(plan, results, matches),
        "arms": arms_meta,
        "budget": budget,
        "runs": results,
        "elapsed_s": elapsed_s,
    })
}

/// Every comparison of [`COMPARISONS`] whose two arms are in `plan` and
/// have a seed in common: per split the mean paired difference of mAP50
/// (and mAP50-95), its t interval over seeds, its bootstrap interval over
/// test images, and whether both exclude 0.
fn comparisons(
    plan: &[Arm],
    results: &[ArmResult],
    matches: &BTreeMap<(String, u64), TestMatches>,
) -> Value {
    let in_plan = |k: &str| plan.iter().any(|a| a.key == k);
    let mut out = serde_json::Map::new();
    for (a, b) in COMPARISONS {
        if !in_plan(a) || !in_plan(b) {
            continue;
        }
        let pairs: Vec<(&ArmResult, &ArmResult)> = results
            .iter()
            .filter(|r| r.arm == a)
            .filter_map(|ra| {
                let rb = results.iter().find(|r| r.arm == b && r.seed == ra.seed)?;
                Some((ra, rb))
            })
            .collect();
        if pairs.is_empty() {
            continue;
        }
        let kept: Vec<(&TestMatches, &TestMatches)> = pairs
            .iter()
            .filter_map(|(ra, rb)| {
                Some((
                    matches.get(&(ra.arm.clone(), ra.seed))?,
                    matches.get(&(rb.arm.clone(), rb.seed))?,
                ))
            })
            .collect();
        let mut per_split = serde_json::Map::new();
        for split in SPLITS {
            let d50: Vec<f64> = pairs
                .iter()
                .filter_map(|(x, y)| Some(x.splits.get(split)?.0 - y.splits.get(split)?.0))
                .collect();
            let d: Vec<f64> = pairs
                .iter()
                .filter_map(|(x, y)| Some(x.splits.get(split)?.1 - y.splits.get(split)?.1))
                .collect();
            if d50.is_empty() {
                continue;
            }
            let t = (d50.len() > 1).then(|| t_interval(&d50));
            let boot = if kept.len() == pairs.len() {
                bootstrap_interval(&kept, split, BOOTSTRAP_RESAMPLES, 0x0b00)
            } else {
                None
            };
            let excludes_zero =
                |ci: Option<(f64, f64)>| ci.is_some_and(|(lo, hi)| lo > 0.0 || hi < 0.0);
            per_split.insert(
                split.to_string(),
                json!({
                    "map50_diff": mean_std(&d50).0,
                    "map_diff": mean_std(&d).0,
                    "map50_diff_seeds": d50,
                    "t_ci95": t.map(|(lo, hi)| [lo, hi]),
                    "bootstrap_ci95": boot.map(|(lo, hi)| [lo, hi]),
                    "significant": excludes_zero(t) && excludes_zero(boot),
                }),
            );
        }
        out.insert(format!("{a} - {b}"), Value::Object(per_split));
    }
    Value::Object(out)
}

fn cell(c: &Value, metric: &str) -> String {
    match (
        c[metric].as_f64(),
        c[&format!("{metric}_std")].as_f64(),
        c["n"].as_u64(),
    ) {
        (Some(m), Some(sd), Some(n)) if n > 1 => format!("{m:.3} ± {sd:.3} ({n})"),
        (Some(m), _, Some(_)) => format!("{m:.3} (1)"),
        _ => "–".into(),
    }
}

/// The tables: arms × splits (mAP50, then mAP50-95), mean ± std (seeds),
/// then each paired difference with its intervals.
pub fn results_markdown(json: &Value, plan: &[Arm]) -> String {
    let b = &json["budget"];
    let mut s = String::new();
    s.push_str(&format!(
        "# irdistill experiment ({} preset)\n\n{} vs {} at imgsz {}, {} epochs (teachers {}), batch {}, {} training pairs; scored ({} checkpoint) on {} held-out synthetic test pairs. Mean ± std over seeds (number of seeds).\n\n",
        b["preset"].as_str().unwrap_or("?"),
        b["student"].as_str().unwrap_or("?"),
        b["teacher"].as_str().unwrap_or("?"),
        b["imgsz"], b["epochs"],
        b["teacher_epochs"].as_u64().map_or(b["epochs"].to_string(), |e| e.to_string()),
        b["batch"], b["synth_train"],
        b["scored"].as_str().unwrap_or("best"),
        b["synth_test"]
    ));
    for (metric, title) in [("map50", "mAP50"), ("map", "mAP50-95")] {
        s.push_str(&format!(
            "## {title}\n\n| arm | {} |\n|---|{}\n",
            SPLITS.join(" | "),
            "---|".repeat(SPLITS.len())
        ));
        for a in plan {
            if json["splits"]["all"][&a.key].is_null() {
                continue;
            }
            let cells: Vec<String> = SPLITS
                .iter()
                .map(|sp| cell(&json["splits"][sp][&a.key], metric))
                .collect();
            s.push_str(&format!("| {} | {} |\n", a.key, cells.join(" | ")));
        }
        s.push('\n');
    }
    s.push_str("## Paired differences (mAP50)\n\nMean over seeds of arm − its baseline (same seed: same data and initialisation); 95 % intervals: t over seeds / bootstrap over test images. **Bold**: both intervals exclude 0.\n\n");
    s.push_str(&format!(
        "| comparison | {} |\n|---|{}\n",
        SPLITS.join(" | "),
        "---|".repeat(SPLITS.len())
    ));
    if let Some(comps) = json["comparisons"].as_object() {
        for (name, c) in comps {
            let cells: Vec<String> = SPLITS
                .iter()
                .map(|sp| {
                    let x = &c[*sp];
                    let Some(d) = x["map50_diff"].as_f64() else {
                        return "–".into();
                    };
                    let ci = |v: &Value| match (v[0].as_f64(), v[1].as_f64()) {
                        (Some(lo), Some(hi)) => format!("[{lo:+.3}, {hi:+.3}]"),
                        _ => "–".into(),
                    };
                    let text = format!(
                        "{d:+.3} t {} b {}",
                        ci(&x["t_ci95"]),
                        ci(&x["bootstrap_ci95"])
                    );
                    if x["significant"].as_bool() == Some(true) {
                        format!("**{text}**")
                    } else {
                        text
                    }
                })
                .collect();
            s.push_str(&format!(
                "| {} | {} |\n",
                name.replace(" - ", " − "),
                cells.join(" | ")
            ));
        }
    }
    s.push_str("\n## Arms\n\n");
    for a in plan {
        let meta = &json["arms"][&a.key];
        let secs: Vec<f64> = meta["train_s"].as_array().map_or(Vec::new(), |v| {
            v.iter().filter_map(|x| x.as_f64()).collect()
        });
        let time = if secs.is_empty() {
            "not run yet".to_string()
        } else {
            format!("{:.0} min per seed", mean_std(&secs).0 / 60.0)
        };
        s.push_str(&format!(
            "- `{}` ({:?}, {time}): {}\n",
            a.key, a.setting, a.description
        ));
        if let Some(q) = meta["pseudo_labels"].as_array().and_then(|v| v.first()) {
            s.push_str(&format!(
                "  - teacher pseudo-labels on validation pairs (seed {}): threshold {:.2}, precision {:.3}, recall {:.3}; adverse precision {:.3}, recall {:.3}\n",
                q["seed"], q["threshold"].as_f64().unwrap_or(f64::NAN),
                q["precision"].as_f64().unwrap_or(f64::NAN), q["recall"].as_f64().unwrap_or(f64::NAN),
                q["per_condition"]["adverse"][0].as_f64().unwrap_or(f64::NAN),
                q["per_condition"]["adverse"][1].as_f64().unwrap_or(f64::NAN),
            ));
        }
    }
    s
}
