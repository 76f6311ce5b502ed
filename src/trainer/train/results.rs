//! A run's per-epoch log: [`EpochRow`] (mean losses, validation metrics,
//! learning rate, speed) and `results.csv`, rewritten after every epoch and
//! read back on `--resume` (ultralytics' column names, so its tools can
//! read it).

use crate::shared::eval::EvalReport;
use anyhow::{Context, Result};
use std::io::Write;
use std::path::Path;

/// One row of results.csv.
#[derive(Debug, Clone, Default)]
pub struct EpochRow {
    pub epoch: usize,
    pub box_loss: f64,
    pub cls_loss: f64,
    pub dfl_loss: f64,
    /// Mean `L_distill` (before α) when distilling.
    pub distill_loss: Option<f64>,
    pub report: Option<EvalReport>,
    /// Overall validation metrics (kept when `report` is not, on resume).
    pub map50: Option<f64>,
    pub map: Option<f64>,
    /// The row as read back from results.csv on `--resume`.
    pub raw_line: Option<String>,
    pub lr: f64,
    pub images_per_s: f64,
    pub epoch_s: f64,
}

/// Conditions with their own mAP columns, in column order.
const CONDITIONS: [&str; 4] = ["day", "night", "fog", "adverse"];

fn csv_header(distill: bool) -> String {
    let mut h = vec![
        "epoch",
        "train/box_loss",
        "train/cls_loss",
        "train/dfl_loss",
        "metrics/mAP50(B)",
        "metrics/mAP50-95(B)",
    ]
    .into_iter()
    .map(String::from)
    .collect::<Vec<_>>();
    for c in CONDITIONS {
        h.push(format!("metrics/mAP50({c})"));
        h.push(format!("metrics/mAP50-95({c})"));
    }
    h.extend(["lr", "images_per_s", "epoch_s"].map(String::from));
    if distill {
        h.push("train/distill_loss".into());
    }
    h.join(",")
}

fn csv_line(r: &EpochRow) -> String {
    if let Some(raw) = &r.raw_line {
        return raw.clone();
    }
    let m = |f: &dyn Fn(&EvalReport) -> Option<f64>| {
        r.report
            .as_ref()
            .and_then(f)
            .map_or(String::new(), |v| format!("{v:.5}"))
    };
    let mut cols = vec![
        r.epoch.to_string(),
        format!("{:.5}", r.box_loss),
        format!("{:.5}", r.cls_loss),
        format!("{:.5}", r.dfl_loss),
        m(&|x| Some(x.overall.stats.map50)),
        m(&|x| Some(x.overall.stats.map)),
    ];
    for c in CONDITIONS {
        cols.push(m(&|x| x.per_condition.get(c).map(|v| v.stats.map50)));
        cols.push(m(&|x| x.per_condition.get(c).map(|v| v.stats.map)));
    }
    cols.extend([
        format!("{:.6}", r.lr),
        format!("{:.2}", r.images_per_s),
        format!("{:.1}", r.epoch_s),
    ]);
    if let Some(d) = r.distill_loss {
        cols.push(format!("{d:.5}"));
    }
    cols.join(",")
}

/// Rewrites results.csv with all rows so far (atomic).
pub fn write_results_csv(path: &Path, rows: &[EpochRow]) -> Result<()> {
    let tmp = path.with_extension("csv.tmp");
    let mut f =
        std::fs::File::create(&tmp).with_context(|| format!("cannot write {}", tmp.display()))?;
    let distill = rows.iter().any(|r| r.distill_loss.is_some());
    writeln!(f, "{}", csv_header(distill))?;
    for r in rows {
        writeln!(f, "{}", csv_line(r))?;
    }
    drop(f);
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

/// Reads back the first `epochs` rows of results.csv on `--resume` (losses
/// and overall metrics; enough for the curves). Columns are found by name.
pub(super) fn read_results_csv(path: &Path, epochs: usize) -> Result<Vec<EpochRow>> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Ok(Vec::new());
    };
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap_or_default().split(',').collect();
    let col = |name: &str| header.iter().position(|h| *h == name);
    let mut rows = Vec::new();
    for line in lines.take(epochs) {
        let f: Vec<&str> = line.split(',').collect();
        let num = |name: &str| {
            col(name)
                .and_then(|i| f.get(i))
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or(f64::NAN)
        };
        let finite = |v: f64| Some(v).filter(|v| v.is_finite());
        rows.push(EpochRow {
            epoch: num("epoch") as usize,
            box_loss: num("train/box_loss"),
            cls_loss: num("train/cls_loss"),
            dfl_loss: num("train/dfl_loss"),
            distill_loss: finite(num("train/distill_loss")),
            report: None,
            map50: finite(num("metrics/mAP50(B)")),
            map: finite(num("metrics/mAP50-95(B)")),
            raw_line: Some(line.to_string()),
            lr: num("lr"),
            images_per_s: num("images_per_s"),
            epoch_s: num("epoch_s"),
        });
    }
    Ok(rows)
}
