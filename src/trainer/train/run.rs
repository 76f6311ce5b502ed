//! The training loop: the [`Trainer`] and its epochs of steps — batch →
//! student forward → losses → backward → optimizer step → EMA — with
//! validation of the EMA weights after each epoch, then the logs, curves
//! and checkpoints.
//!
//! ```text
//! PairSource ─ loader (workers: letterbox + augment) ─ Batch rgb [B,3,S,S] (+ ir [B,1,S,S])
//!   └─ Detector::forward_t(train) ─ levels ─ DetectionLoss ─┐
//!   └─ (distill) frozen teacher ─ Distiller ─ α·L_distill ──┴─ backward ─ Optimizer ─ EMA
//! each epoch: EMA weights ─ validate (COCO mAP per condition) ─ results.csv/png, last/best.safetensors
//! ```
//!
//! How a run starts is in `init` (fresh) and `resume` (`--resume`), what
//! it is configured with in `options`, the distillation part of a step in
//! `step`, validation in `validate`, and results.csv in `results`.

use super::console;
use super::ema::Ema;
use super::init::{
    calibrate_pseudo_labels, init_from_teacher, lr_schedule, model_config, new_detector,
    new_distiller, new_optimizer, open_training_data, unlabeled_stream, warm_start_from_data,
};
use super::inputs::batch_inputs;
use super::loader::{batches_per_epoch, Batch, EpochLoader, LoaderConfig};
use super::optim::{Optimizer, OptimizerKind, Schedule};
use super::options::check_options;
use super::plot;
use super::pretrained::{init_from_file, rebase_folded_batchnorm, FOLDED_PASSES};
use super::results::write_results_csv;
use super::resume::{ensure_no_run_in, last_checkpoint, Resumed, RunProgress};
use super::source::DataSpec;
use super::step::{ensure_finite, ms_since, DistillStep};
use super::unlabeled::UnlabeledStream;
use super::validate::{fitness, load_ema};
use crate::trainer::checkpoint::{self, CheckpointMeta, Progress};
use crate::trainer::distill::Distiller;
use crate::trainer::loss::DetectionLoss;
use crate::trainer::model::{Detector, ModelConfig};
use anyhow::{Context, Result};
use candle_core::Device;
use candle_nn::VarMap;
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

use super::init::{device, seed_weights};
use super::options::TrainOptions;
use super::results::EpochRow;
use super::step::StepTimes;
use super::validate::validate;
use super::vars::named_vars;

/// A training run in progress: `train` drives it epoch by epoch; tests
/// drive single steps ([`Trainer::first_batches`], [`Trainer::train_step`]).
pub struct Trainer {
    opts: TrainOptions,
    data: DataSpec,
    device: Device,
    cfg: ModelConfig,
    varmap: VarMap,
    model: Detector,
    /// The model validation runs, with the EMA's averages as weights.
    eval_varmap: VarMap,
    eval_model: Detector,
    distiller: Option<Distiller>,
    unlabeled: Option<UnlabeledStream>,
    /// Sums of the (feature, contrastive, response, pseudo-label) terms
    /// this epoch.
    distill_terms: [f64; 4],
    optimizer: Optimizer,
    ema: Ema,
    loss: DetectionLoss,
    schedule: Schedule,
    epochs_done: usize,
    best_fitness: f64,
    rows: Vec<EpochRow>,
    /// Wall time of the last step's phases, for `trainer bench`.
    pub last_step: StepTimes,
}

/// `trainer train`.
pub fn train(opts: TrainOptions, device_name: &str, resume: bool) -> Result<Vec<EpochRow>> {
    let mut t = Trainer::new(opts, device_name, resume)?;
    t.run()?;
    Ok(t.rows)
}

impl Trainer {
    /// A fresh run of `opts` in `opts.out`, or with `resume` the run there
    /// continued with its own stored options.
    pub fn new(opts: TrainOptions, device_name: &str, resume: bool) -> Result<Self> {
        let device = device(device_name)?;
        let (opts, resumed) = if resume {
            let (opts, resumed) = Resumed::load(opts, &device)?;
            (opts, Some(resumed))
        } else {
            (opts, None)
        };
        check_options(&opts)?;
        std::fs::create_dir_all(&opts.out)
            .with_context(|| format!("cannot create {}", opts.out.display()))?;
        if !resume {
            ensure_no_run_in(&opts.out)?;
        }
        let data = open_training_data(&opts)?;
        let cfg = model_config(&opts, &data);
        let (varmap, model) = new_detector(&cfg, &device)?;
        seed_weights(&varmap, opts.seed)?;
        let mut distiller = new_distiller(&opts, &cfg, &model, &device)?;
        if let Some(d) = distiller.as_mut() {
            calibrate_pseudo_labels(d, &data, &opts, &device)?;
        }
        let unlabeled = unlabeled_stream(&opts)?;
        if !resume {
            if let Some(d) = distiller.as_ref().filter(|d| d.options().init_from_teacher) {
                init_from_teacher(&varmap, d.teacher_weights())?;
            }
            let init = opts
                .init
                .as_deref()
                .map(|path| init_from_file(&varmap, path))
                .transpose()?;
            // loaded BatchNorm statistics are kept; random or folded
            // weights get theirs from the first batches
            match &init {
                Some(r) if r.has_batchnorm_stats() => {}
                Some(r) if !r.folded.is_empty() => {
                    for _ in 0..FOLDED_PASSES {
                        warm_start_from_data(&model, &varmap, &data, &opts, &device)?;
                        rebase_folded_batchnorm(&varmap, &r.folded)?;
                    }
                }
                _ => warm_start_from_data(&model, &varmap, &data, &opts, &device)?,
            }
        }
        let (eval_varmap, eval_model) = new_detector(&cfg, &device)?;
        let mut optimizer = new_optimizer(&opts, &varmap, distiller.as_ref())?;
        let mut ema = Ema::new(named_vars(&varmap))?;
        let schedule = lr_schedule(
            &opts,
            batches_per_epoch(data.train.len(), opts.batch) as u64,
        );
        let progress = match resumed {
            None => RunProgress::fresh(),
            Some(r) => {
                r.restore(&cfg, &varmap, &mut ema, distiller.as_ref(), &mut optimizer)?;
                r.progress(&opts.out)?
            }
        };
        Ok(Self {
            loss: DetectionLoss::new(cfg.nc),
            opts,
            data,
            device,
            cfg,
            varmap,
            model,
            eval_varmap,
            eval_model,
            distiller,
            unlabeled,
            distill_terms: [0.0; 4],
            last_step: StepTimes::default(),
            optimizer,
            ema,
            schedule,
            epochs_done: progress.epochs_done,
            best_fitness: progress.best_fitness,
            rows: progress.rows,
        })
    }

    /// The student's (or trained teacher's) variables.
    pub fn varmap(&self) -> &VarMap {
        &self.varmap
    }

    pub fn distiller(&self) -> Option<&Distiller> {
        self.distiller.as_ref()
    }

    /// Names of every tensor the optimizer updates.
    pub fn optimized_names(&self) -> Vec<String> {
        self.optimizer
            .params
            .iter()
            .map(|p| p.name.clone())
            .collect()
    }

    /// The first training batch of epoch 0, and the first unlabeled batch
    /// when distilling with unlabeled pairs.
    pub fn first_batches(&mut self) -> Result<(Batch, Option<Batch>)> {
        let cfg = self.loader_config(true);
        let batch = EpochLoader::start(self.data.train.clone(), &cfg, 0, 0)
            .next()
            .context("no training batch")??;
        let unlabeled = match self.unlabeled.as_mut() {
            Some(u) => Some(u.next(0)?),
            None => None,
        };
        Ok((batch, unlabeled))
    }

    /// One optimizer step at the schedule's current learning rate.
    pub fn train_step(&mut self, batch: &Batch, unlabeled: Option<&Batch>) -> Result<[f64; 4]> {
        let (lr_w, lr_b, _) = self.schedule.at(self.optimizer.step);
        let at = format!("step {}", self.optimizer.step + 1);
        self.step(batch, unlabeled, lr_w, lr_b, &at)
    }

    /// The epochs left (up to `stop_after` of them in this invocation),
    /// each trained, validated and committed to the run folder.
    fn run(&mut self) -> Result<()> {
        let start_epoch = self.epochs_done;
        for epoch in start_epoch..self.opts.epochs {
            if self
                .opts
                .stop_after
                .is_some_and(|n| epoch - start_epoch >= n)
            {
                break;
            }
            let mut row = self.train_epoch(epoch)?;
            let fit = self.validate_epoch(epoch, &mut row)?;
            self.rows.push(row);
            self.epochs_done = epoch + 1;
            self.commit_epoch(fit)?;
        }
        Ok(())
    }

    /// Validates the EMA weights after epoch `epoch`, records the overall
    /// metrics and the report in `row`; returns the fitness.
    fn validate_epoch(&self, epoch: usize, row: &mut EpochRow) -> Result<f64> {
        load_ema(&self.eval_varmap, &self.ema)?;
        let report = validate(
            &self.eval_model,
            self.data.val.clone(),
            &self.data.names,
            self.opts.imgsz,
            self.opts.batch,
            self.opts.workers,
            &self.device,
        )?;
        let fit = fitness(&report);
        console::log_validation(epoch, self.opts.epochs, &report);
        row.map50 = Some(report.overall.stats.map50);
        row.map = Some(report.overall.stats.map);
        row.report = Some(report);
        Ok(fit)
    }

    /// Writes the epoch just validated (fitness `fit`) to the run folder:
    /// best.safetensors when it improved, results.csv/png, last.safetensors.
    fn commit_epoch(&mut self, fit: f64) -> Result<()> {
        let improved = fit > self.best_fitness;
        if improved {
            self.best_fitness = fit;
        }
        // last.safetensors is the commit point of an epoch: written
        // after everything else, so a run killed in between redoes the
        // epoch on --resume instead of losing best/results rows.
        if improved {
            self.save(&self.opts.out.join("best.safetensors"), false)?;
        }
        write_results_csv(&self.opts.out.join("results.csv"), &self.rows)?;
        if let Err(e) = plot::results_png(&self.opts.out.join("results.png"), &self.rows) {
            tracing::warn!("results.png not written: {e:#}");
        }
        self.save(&last_checkpoint(&self.opts.out), true)
    }

    fn loader_config(&self, shuffle: bool) -> LoaderConfig {
        // the teacher (trained, or distilled from) sees the IR image
        let with_ir = self.model.needs_ir() || self.distiller.is_some();
        self.opts.training_loader(with_ir, shuffle)
    }

    /// One pass over the training pairs; the row holds the epoch's mean
    /// losses, last learning rate and speed (no metrics yet).
    fn train_epoch(&mut self, epoch: usize) -> Result<EpochRow> {
        let cfg = self.loader_config(true);
        let nb = batches_per_epoch(self.data.train.len(), self.opts.batch);
        let bar = console::epoch_bar(nb, epoch, self.opts.epochs);
        let start = Instant::now();
        let (mut sums, mut images, mut lr) = ([0.0f64; 4], 0usize, 0.0);
        for (i, batch) in EpochLoader::start(self.data.train.clone(), &cfg, epoch, 0).enumerate() {
            let batch = batch?;
            let step = self.optimizer.step;
            let (lr_w, lr_b, momentum) = self.schedule.at(step);
            if self.opts.optimizer == OptimizerKind::Sgd {
                self.optimizer.momentum = momentum;
            }
            lr = lr_w;
            let unlabeled = match self.unlabeled.as_mut() {
                Some(u) => Some(u.next(step)?),
                None => None,
            };
            let at = format!("epoch {} step {} (batch {i})", epoch + 1, step + 1);
            let parts = self.step(&batch, unlabeled.as_ref(), lr_w, lr_b, &at)?;
            for k in 0..4 {
                sums[k] += parts[k];
            }
            images += batch.len();
            let images_per_s = images as f64 / start.elapsed().as_secs_f64();
            let distilling = self.distiller.is_some();
            bar.set_message(console::step_message(
                &sums,
                i + 1,
                distilling,
                images_per_s,
            ));
            bar.inc(1);
        }
        bar.finish();
        if self.distiller.is_some() {
            console::log_distill_terms(std::mem::take(&mut self.distill_terms), nb);
        }
        let secs = start.elapsed().as_secs_f64();
        Ok(EpochRow {
            epoch: epoch + 1,
            box_loss: sums[0] / nb as f64,
            cls_loss: sums[1] / nb as f64,
            dfl_loss: sums[2] / nb as f64,
            distill_loss: self.distiller.is_some().then(|| sums[3] / nb as f64),
            report: None,
            map50: None,
            map: None,
            raw_line: None,
            lr,
            images_per_s: images as f64 / secs,
            epoch_s: secs,
        })
    }

    /// One optimizer step: `L_det` on the labeled batch, plus `α·L_distill`
    /// on it and on the unlabeled batch when distilling. Returns the
    /// (box, cls, dfl, distill) values for the logs.
    fn step(
        &mut self,
        batch: &Batch,
        unlabeled: Option<&Batch>,
        lr_w: f64,
        lr_b: f64,
        at: &str,
    ) -> Result<[f64; 4]> {
        let (x, ir) = batch_inputs(batch, self.opts.imgsz, &self.device)?; // [B, 3, S, S], [B, 1, S, S]
        let t0 = Instant::now();
        let out = self.model.forward_t(&x, ir.as_ref(), true)?;
        let mut times = StepTimes {
            forward_ms: ms_since(t0),
            ..StepTimes::default()
        };
        let t0 = Instant::now();
        let loss = self.loss.compute(&out.levels, &batch.labels)?;
        let mut total = loss.total;
        if let Some(aux) = &out.aux_loss {
            // a decoupled teacher's split (similarity + orthogonality), × B like L_det
            total = (total + aux.affine(batch.len() as f64, 0.0)?)?;
        }
        let mut distill_value = 0.0f64;
        if let Some(d) = &self.distiller {
            let distill = DistillStep {
                distiller: d,
                student: &self.model,
                det_loss: &self.loss,
                alpha: self.opts.distill.as_ref().map_or(1.0, |o| o.alpha),
                seed: self.opts.seed ^ self.optimizer.step.wrapping_mul(0x9e37_79b9),
                imgsz: self.opts.imgsz,
                device: &self.device,
                batch,
                rgb: &x,
                ir: ir.as_ref(),
                student_out: &out,
            };
            let terms = &mut self.distill_terms;
            total = distill.add_labeled(total, &mut distill_value, terms, &mut times)?;
            if let Some(u) = unlabeled {
                let pseudo = &mut self.distill_terms[3];
                total = distill.add_unlabeled(total, u, &mut distill_value, pseudo)?;
            }
        }
        let parts = [
            loss.box_loss as f64,
            loss.cls_loss as f64,
            loss.dfl_loss as f64,
            distill_value,
        ];
        ensure_finite(&parts, at)?;
        times.loss_ms += ms_since(t0);
        let t0 = Instant::now();
        let grads = total.backward()?;
        times.backward_ms = ms_since(t0);
        let t0 = Instant::now();
        self.optimizer.step(&grads, lr_w, lr_b)?;
        self.ema.update()?;
        times.optimizer_ms = ms_since(t0);
        self.last_step = times;
        Ok(parts)
    }

    /// Writes a checkpoint: model, EMA and distiller-head tensors, the
    /// optimizer state when `with_optimizer` (for `--resume`), and in the
    /// metadata the model config and the run's progress and options.
    fn save(&self, path: &Path, with_optimizer: bool) -> Result<()> {
        let mut tensors = BTreeMap::new();
        for (name, var) in named_vars(&self.varmap) {
            tensors.insert(format!("model.{name}"), var.as_tensor().clone());
        }
        for (name, t) in self.ema.tensors() {
            tensors.insert(format!("ema.{name}"), t.clone());
        }
        if let Some(d) = &self.distiller {
            for (name, var) in named_vars(&d.heads) {
                tensors.insert(format!("distill.{name}"), var.as_tensor().clone());
            }
        }
        if with_optimizer {
            tensors.extend(self.optimizer.state());
        }
        let meta = CheckpointMeta {
            config: self.cfg.clone(),
            progress: Some(Progress {
                epochs_done: self.epochs_done,
                optimizer_step: self.optimizer.step,
                ema_updates: self.ema.updates,
                best_fitness: self.best_fitness,
                args: serde_json::to_value(&self.opts)?,
            }),
            version: env!("CARGO_PKG_VERSION").to_string(),
        };
        checkpoint::save(path, &meta, &tensors)
    }
}
