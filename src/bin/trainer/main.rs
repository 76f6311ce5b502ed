//! `trainer`: the workstation half (generator, evaluation, training).

mod cmd_autolabel;
mod cmd_bench;
mod cmd_demo;
mod cmd_distill;
mod cmd_eval_coco;
mod cmd_experiment;
mod cmd_export;
mod cmd_import;
mod cmd_predict;
mod cmd_pseudo_label;
mod cmd_synth;
mod cmd_train;
mod cmd_val;

use clap::{Parser, Subcommand};

// Training allocates and frees large tensors every step; glibc's malloc
// returns them to the kernel each time (system time above half the wall
// time). mimalloc keeps them.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc's `mi_option_purge_delay` (the same index in its v2 and v3).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// mimalloc still hands freed pages back to the kernel 10 ms after the
/// last use, and the next step's tensors fault them in again, zeroed (7 %
/// of a step in the kernel's clear_page). Training reuses the same sizes
/// every step, so keep them: -1 = never purge (the peak is what a run
/// needs anyway). MIMALLOC_PURGE_DELAY, when set, wins.
fn keep_freed_pages() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: sets one integer option; mimalloc reads it on each purge.
        unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1) };
    }
}

#[derive(Parser)]
#[command(
    name = "trainer",
    version,
    about = "irdistill workstation tools: synthetic data, evaluation, training"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Generate a synthetic dataset, read it back and evaluate the thermal
    /// hot-spot baseline on it, per condition (the README's main job).
    Demo(cmd_demo::Args),
    /// Generate paired RGB+IR scenes (day / night / fog) to a folder.
    Synth(cmd_synth::Args),
    /// Train a student (RGB) or teacher (RGB+IR) detector (--data synth or a dataset folder).
    Train(cmd_train::Args),
    /// Train an RGB student distilled from a frozen RGB+IR teacher.
    Distill(cmd_distill::Args),
    /// Evaluate a checkpoint on a dataset split: table, then JSON.
    Val(cmd_val::Args),
    /// Baseline vs teacher vs distilled student on the same data and budget,
    /// per condition: DIR/results.json and DIR/results.md.
    Experiment(cmd_experiment::Args),
    /// Detect objects in images with a checkpoint; writes annotated copies.
    Predict(cmd_predict::Args),
    /// Label unlabeled RGB+IR pairs with a teacher once: a paired YOLO-txt
    /// dataset for plain `trainer train`.
    PseudoLabel(cmd_pseudo_label::Args),
    /// Label unlabeled RGB+IR pairs from their thermal images (or a
    /// teacher): a paired YOLO-txt dataset with a score per box.
    Autolabel(cmd_autolabel::Args),
    /// Split side-by-side RGB|IR images into the paired layout (unlabeled).
    Import(cmd_import::Args),
    /// Export a checkpoint to ONNX (ultralytics YOLOv8 layout).
    Export(cmd_export::Args),
    /// Time full training steps (forward, loss, backward, optimizer); JSON last line.
    Bench(cmd_bench::Args),
    /// COCO bbox evaluation of a results file against an instances file.
    EvalCoco(cmd_eval_coco::Args),
}

fn main() {
    keep_freed_pages();
    irdistill::trainer::ops::configure_cpu_threads();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let result = irdistill::trainer::ops::on_compute_threads(|| match cli.command {
        Command::Demo(args) => cmd_demo::run(args),
        Command::Synth(args) => cmd_synth::run(args),
        Command::EvalCoco(args) => cmd_eval_coco::run(args),
        Command::Train(args) => cmd_train::run(args),
        Command::Distill(args) => cmd_distill::run(args),
        Command::Bench(args) => cmd_bench::run(args),
        Command::Experiment(args) => cmd_experiment::run(args),
        Command::Export(args) => cmd_export::run(args),
        Command::Val(args) => cmd_val::run(args),
        Command::Predict(args) => cmd_predict::run(args),
        Command::PseudoLabel(args) => cmd_pseudo_label::run(args),
        Command::Autolabel(args) => cmd_autolabel::run(args),
        Command::Import(args) => cmd_import::run(args),
    });
    if let Err(err) = result {
        eprintln!("error: {err:#}");
        std::process::exit(1);
    }
}
