//! What a training run prints on the terminal: the progress bar of an
//! epoch with its running mean losses, the validation line after it and,
//! when distilling, the mean of each distillation term.

use crate::shared::eval::EvalReport;
use indicatif::{ProgressBar, ProgressStyle};

/// The progress bar of epoch `epoch` (0-based) of `epochs`, over
/// `batches` steps.
pub(super) fn epoch_bar(batches: usize, epoch: usize, epochs: usize) -> ProgressBar {
    let bar = ProgressBar::new(batches as u64);
    bar.set_style(
        ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} {msg} ({elapsed}<{eta})")
            .expect("valid template")
            .progress_chars("=> "),
    );
    bar.set_prefix(format!("epoch {}/{epochs}", epoch + 1));
    bar
}

/// The bar's message after `steps` steps: the mean (box, cls, dfl,
/// distill) losses from `sums` (distill only when `distilling`) and the
/// throughput so far.
pub(super) fn step_message(
    sums: &[f64; 4],
    steps: usize,
    distilling: bool,
    images_per_s: f64,
) -> String {
    let n = steps as f64;
    let distill = if distilling {
        format!(" distill {:.3}", sums[3] / n)
    } else {
        String::new()
    };
    format!(
        "box {:.3} cls {:.3} dfl {:.3}{distill} {:.1} img/s",
        sums[0] / n,
        sums[1] / n,
        sums[2] / n,
        images_per_s
    )
}

/// The mean of each distillation term over the epoch's `batches` labeled
/// batches, from their sums.
pub(super) fn log_distill_terms(term_sums: [f64; 4], batches: usize) {
    eprintln!(
        "distill terms (labeled batches, before weights): feature {:.4} contrastive {:.4} response {:.4}; pseudo-label L_det (unlabeled batches) {:.4}",
        term_sums[0] / batches as f64,
        term_sums[1] / batches as f64,
        term_sums[2] / batches as f64,
        term_sums[3] / batches as f64
    );
}

/// The validation line after epoch `epoch` (0-based) of `epochs`: overall
/// mAP and mAP50 per condition.
pub(super) fn log_validation(epoch: usize, epochs: usize, report: &EvalReport) {
    eprintln!(
        "epoch {}/{}: val mAP50 {:.3} mAP50-95 {:.3} ({})",
        epoch + 1,
        epochs,
        report.overall.stats.map50,
        report.overall.stats.map,
        report
            .per_condition
            .iter()
            .map(|(k, m)| format!("{k} {:.3}", m.stats.map50))
            .collect::<Vec<_>>()
            .join(", ")
    );
}
