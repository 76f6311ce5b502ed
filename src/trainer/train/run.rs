//! The training loop: pair → student → losses → step, with validation of
//! the EMA weights after each epoch, logs, curves and checkpoints.
//!
//! ```text
//! PairSource ─ loader (workers: letterbox + augment) ─ Batch rgb [B,3,S,S] (+ ir [B,1,S,S])
//!   └─ Detector::forward_t(train) ─ levels ─ DetectionLoss ─┐
//!   └─ (distill) frozen teacher ─ Distiller ─ α·L_distill ──┴─ backward ─ Optimizer ─ EMA
//! each epoch: EMA weights ─ validate (COCO mAP per condition) ─ results.csv/png, last/best.safetensors
//! ```

use super::augment::AugmentParams;
use super::ema::Ema;
use super::loader::{batches_per_epoch, Batch, EpochLoader, LoaderConfig};
use super::optim::{Group, Optimizer, OptimizerKind, Param, Schedule};
use super::plot;
use super::source::{open_data, open_unlabeled, DataSpec, PairSource, SynthSizes};
use crate::shared::condition::Split;
use crate::shared::eval::{evaluate_dataset, EvalImage, EvalReport};
use crate::shared::nms::{self, NmsParams};
use crate::trainer::checkpoint::{self, CheckpointMeta, Progress};
use crate::trainer::distill::{DistillOptions, Distiller};
use crate::trainer::loss::DetectionLoss;
use crate::trainer::model::{is_running_stat, Detector, Fusion, ModelConfig};
use anyhow::{bail, ensure, Context, Result};
use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};
use indicatif::{ProgressBar, ProgressStyle};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

/// Everything `trainer train` takes (also stored in checkpoints).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrainOptions {
    pub data: String,
    pub model: String,
    pub imgsz: usize,
    pub epochs: usize,
    pub batch: usize,
    pub out: PathBuf,
    pub seed: u64,
    pub optimizer: OptimizerKind,
    pub lr0: f64,
    pub lrf: f64,
    pub weight_decay: f64,
    pub momentum: f64,
    pub warmup_epochs: f64,
    pub workers: usize,
    pub synth_train: usize,
    pub synth_val: usize,
    pub augment: bool,
    /// Split validated on: `val`; `train` checks that the model can fit
    /// its training data (a sanity check when something does not learn).
    #[serde(default = "default_val_split")]
    pub val_split: Split,
    /// Stop after this many epochs in this invocation (the schedule still
    /// spans `epochs`); for tests of `--resume`.
    #[serde(skip)]
    pub stop_after: Option<usize>,
    /// Teachers: how RGB and IR are fused (CCAFusion when absent).
    #[serde(default)]
    pub fusion: Option<Fusion>,
    /// Distill from a frozen teacher (`trainer distill`).
    #[serde(default)]
    pub distill: Option<DistillOptions>,
}

fn default_val_split() -> Split {
    Split::Val
}

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

/// Picks the compute device for `--device`.
pub fn device(name: &str) -> Result<Device> {
    match name {
        "cpu" => Ok(Device::Cpu),
        // candle answers with an error when built without CUDA support
        "cuda" => Device::new_cuda(0).context(
            "--device cuda: no usable CUDA device (or a build without the `cuda` feature)",
        ),
        other => bail!("--device {other}: expected cpu or cuda"),
    }
}

/// Draws every convolution weight again from a seeded RNG (PyTorch's default
/// kaiming-uniform bound 1/sqrt(fan_in)): candle's CPU initialisers cannot be
/// seeded, and runs with the same `--seed` must start from the same weights.
pub fn seed_weights(varmap: &VarMap, seed: u64) -> Result<()> {
    let data = varmap.data().lock().expect("VarMap mutex poisoned");
    let mut names: Vec<&String> = data.keys().collect();
    names.sort();
    for name in names {
        let var = &data[name];
        if var.rank() < 2 || is_running_stat(name) {
            continue;
        }
        let dims = var.dims().to_vec();
        let fan_in: usize = dims[1..].iter().product();
        let bound = 1.0 / (fan_in.max(1) as f32).sqrt();
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ crate::shared::condition::stable_hash(name));
        let values: Vec<f32> = (0..var.elem_count())
            .map(|_| rng.random_range(-bound..bound))
            .collect();
        var.set(&Tensor::from_vec(values, dims, var.device())?.to_dtype(var.dtype())?)?;
    }
    Ok(())
}

/// Starts BatchNorm running statistics at the statistics of real batches
/// instead of (mean 0, var 1). With momentum 0.03 the initial variance of 1
/// otherwise dominates for hundreds of steps (true variances here are often
/// ~1e-3), and every validation before then runs a model whose eval-mode
/// normalisation is far off its training-mode one. Zeroing the stats first
/// makes one train-mode forward leave exactly `momentum × batch statistic`
/// in them, which is divided out and averaged over the `batches`.
pub fn warm_start_batchnorm(
    model: &Detector,
    varmap: &VarMap,
    batches: &[(Tensor, Option<Tensor>)],
) -> Result<()> {
    let momentum = crate::trainer::model::blocks::BN_MOMENTUM;
    let stats: Vec<(String, Var)> = named_vars(varmap)
        .into_iter()
        .filter(|(n, _)| is_running_stat(n))
        .collect();
    let mut sums: Vec<Option<Tensor>> = vec![None; stats.len()];
    for (x, ir) in batches {
        for (_, v) in &stats {
            v.set(&v.as_tensor().zeros_like()?)?;
        }
        model.forward_t(x, ir.as_ref(), true)?;
        for (k, (_, v)) in stats.iter().enumerate() {
            let batch_stat = (v.as_tensor().detach() / momentum)?;
            sums[k] = Some(match sums[k].take() {
                None => batch_stat,
                Some(s) => (s + batch_stat)?,
            });
        }
    }
    for ((_, v), sum) in stats.iter().zip(sums) {
        if let Some(sum) = sum {
            v.set(&(sum / batches.len() as f64)?)?;
        }
    }
    Ok(())
}

/// Named vars of `varmap`, sorted by name.
pub fn named_vars(varmap: &VarMap) -> Vec<(String, Var)> {
    let data = varmap.data().lock().expect("VarMap mutex poisoned");
    let mut v: Vec<(String, Var)> = data.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

/// Sets every var of `varmap` from `tensors` (names must match).
pub fn load_into(
    varmap: &VarMap,
    tensors: &std::collections::HashMap<String, Tensor>,
    what: &str,
) -> Result<()> {
    for (name, var) in named_vars(varmap) {
        let t = tensors
            .get(&name)
            .with_context(|| format!("{what} lacks tensor {name}"))?;
        ensure!(
            t.shape() == var.shape(),
            "{what}: tensor {name} has shape {:?}, the model expects {:?}",
            t.shape(),
            var.shape()
        );
        var.set(&t.to_device(var.device())?.to_dtype(var.dtype())?)?;
    }
    Ok(())
}

/// A batch's images as a `[B, C, S, S]` tensor.
pub fn batch_tensor(data: &[f32], b: usize, c: usize, s: usize, device: &Device) -> Result<Tensor> {
    Ok(Tensor::from_slice(data, (b, c, s, s), device)?)
}

/// A batch's model inputs: RGB `[B, 3, S, S]` and, when loaded, IR `[B, 1, S, S]`.
pub fn batch_inputs(b: &Batch, s: usize, device: &Device) -> Result<(Tensor, Option<Tensor>)> {
    let rgb = batch_tensor(&b.rgb, b.len(), 3, s, device)?;
    let ir =
        b.ir.as_ref()
            .map(|v| batch_tensor(v, b.len(), 1, s, device))
            .transpose()?;
    Ok((rgb, ir))
}

/// Runs `model` over `source` and COCO-evaluates its detections, in
/// model-input pixels (letterboxed), per condition. A teacher gets the IR
/// image of each pair too.
pub fn validate(
    model: &Detector,
    source: Arc<dyn PairSource>,
    names: &[String],
    imgsz: usize,
    batch: usize,
    workers: usize,
    device: &Device,
) -> Result<EvalReport> {
    let cfg = LoaderConfig {
        batch_size: batch,
        imgsz: imgsz as u32,
        augment: None,
        with_ir: model.needs_ir(),
        shuffle: false,
        workers,
        seed: 0,
    };
    let mut images = Vec::new();
    for b in EpochLoader::start(source, &cfg, 0, 0) {
        let b = b?;
        let (x, ir) = batch_inputs(&b, imgsz, device)?;
        let out = model
            .predict(&x, ir.as_ref())?
            .to_device(&Device::Cpu)?
            .to_dtype(DType::F32)?; // [B, 4+nc, N]
        for (i, labels) in b.labels.into_iter().enumerate() {
            let row: Vec<f32> = out.get(i)?.flatten_all()?.to_vec1()?;
            images.push(EvalImage {
                labels,
                detections: nms::detections(&row, names.len(), &NmsParams::VAL),
                condition: b.conditions[i],
            });
        }
    }
    Ok(evaluate_dataset(names, &images))
}

/// Fitness used to pick `best.safetensors` (ultralytics: 0.1·mAP50 + 0.9·mAP50-95).
pub fn fitness(r: &EvalReport) -> f64 {
    0.1 * r.overall.stats.map50 + 0.9 * r.overall.stats.map
}

/// A training run in progress: `train` drives it epoch by epoch; tests
/// drive single steps ([`Trainer::first_batches`], [`Trainer::train_step`]).
pub struct Trainer {
    opts: TrainOptions,
    data: DataSpec,
    device: Device,
    cfg: ModelConfig,
    varmap: VarMap,
    model: Detector,
    eval_varmap: VarMap,
    eval_model: Detector,
    distiller: Option<Distiller>,
    unlabeled: Option<UnlabeledStream>,
    /// Sums of the (feature, contrastive, response) terms this epoch.
    distill_terms: [f64; 3],
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

/// Where a training step's time goes, in milliseconds.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct StepTimes {
    /// Model forward (and the teacher's, when distilling).
    pub forward_ms: f64,
    /// Detection loss (assigner included) and distillation losses.
    pub loss_ms: f64,
    pub backward_ms: f64,
    /// Optimizer step and EMA update.
    pub optimizer_ms: f64,
}

fn ms_since(t0: Instant) -> f64 {
    t0.elapsed().as_secs_f64() * 1e3
}

/// `trainer train`.
pub fn train(opts: TrainOptions, device_name: &str, resume: bool) -> Result<Vec<EpochRow>> {
    let mut t = Trainer::new(opts, device_name, resume)?;
    t.run()?;
    Ok(t.rows)
}

impl Trainer {
    pub fn new(mut opts: TrainOptions, device_name: &str, resume: bool) -> Result<Self> {
        let last = opts.out.join("last.safetensors");
        let device = device(device_name)?;
        let resumed = if resume {
            let ckpt = checkpoint::load(&last, &device)
                .with_context(|| format!("--resume: cannot resume from {}", last.display()))?;
            let progress = ckpt
                .meta
                .progress
                .clone()
                .with_context(|| format!("{} holds no training progress", last.display()))?;
            let saved: TrainOptions = serde_json::from_value(progress.args.clone())
                .context("--resume: stored training arguments")?;
            // the run continues with its own arguments; only the stop point may differ
            // (the folder may have moved since: keep the one given now)
            let (stop_after, out) = (opts.stop_after, opts.out.clone());
            opts = saved;
            opts.stop_after = stop_after;
            opts.out = out;
            Some((ckpt, progress))
        } else {
            None
        };
        validate_options(&opts)?;
        std::fs::create_dir_all(&opts.out)
            .with_context(|| format!("cannot create {}", opts.out.display()))?;
        if !resume {
            for f in ["last.safetensors", "best.safetensors", "results.csv"] {
                if opts.out.join(f).exists() {
                    bail!("{} already holds a run ({f}); pass --resume to continue it or choose another --out", opts.out.display());
                }
            }
        }
        let synth = SynthSizes {
            train: opts.synth_train,
            val: opts.synth_val,
            seed: opts.seed,
        };
        tracing::info!("loading data {}", opts.data);
        let data = open_data(&opts.data, synth, opts.val_split)?;
        let cfg = ModelConfig {
            scale: opts.model.clone(),
            nc: data.names.len(),
            names: data.names.clone(),
            imgsz: opts.imgsz,
            fusion: opts.fusion,
        };
        let varmap = VarMap::new();
        let model = Detector::load(VarBuilder::from_varmap(&varmap, DType::F32, &device), &cfg)?;
        seed_weights(&varmap, opts.seed)?;
        let distiller = match (&opts.distill, &model) {
            (None, _) => None,
            (Some(d), Detector::Student(student)) => {
                let distiller = Distiller::new(d, &cfg, student.feature_channels(), &device)?;
                seed_weights(&distiller.heads, opts.seed ^ 0xd157)?;
                Some(distiller)
            }
            (Some(_), Detector::Teacher(_)) => bail!(
                "--model {}: distillation trains an RGB student (student-p or student-n), not a teacher",
                opts.model
            ),
        };
        let unlabeled = match opts.distill.as_ref().and_then(|d| d.unlabeled.as_deref()) {
            None => None,
            Some(spec) => Some(UnlabeledStream::new(
                open_unlabeled(spec, opts.seed, opts.synth_train)?,
                &opts,
            )),
        };
        if !resume {
            warm_start_from_data(&model, &varmap, &data, &opts, &device)?;
        }
        let eval_varmap = VarMap::new();
        let eval_model = Detector::load(
            VarBuilder::from_varmap(&eval_varmap, DType::F32, &device),
            &cfg,
        )?;

        let mut named = named_vars(&varmap);
        if let Some(d) = &distiller {
            // the adapters and projection heads train with the student
            named.extend(
                named_vars(&d.heads)
                    .into_iter()
                    .map(|(n, v)| (format!("distill.{n}"), v)),
            );
        }
        let params: Vec<Param> = named
            .into_iter()
            .filter(|(n, _)| !is_running_stat(n))
            .map(|(name, var)| Param {
                group: Group::of(&name, &var),
                name,
                var,
            })
            .collect();
        // ultralytics scales weight decay with the batch (nominal batch 64)
        let wd = opts.weight_decay * opts.batch as f64 / 64.0;
        let mut optimizer = Optimizer::new(opts.optimizer, params, wd, opts.momentum)?;
        let mut ema = Ema::new(named_vars(&varmap))?;
        let nb = batches_per_epoch(data.train.len(), opts.batch) as u64;
        let total = nb * opts.epochs as u64;
        let warmup = ((opts.warmup_epochs * nb as f64).round() as u64)
            .max(100)
            .min(total / 2);
        let schedule = Schedule {
            lr0: opts.lr0,
            lrf: opts.lrf,
            warmup_steps: warmup,
            total_steps: total,
            warmup_bias_lr: if opts.optimizer == OptimizerKind::AdamW {
                0.0
            } else {
                0.1
            },
            warmup_momentum: 0.8,
            momentum: opts.momentum,
        };
        let mut epochs_done = 0;
        let mut best_fitness = f64::NEG_INFINITY;
        let mut rows = Vec::new();
        if let Some((ckpt, progress)) = resumed {
            ensure!(
                ckpt.meta.config == cfg,
                "--resume: the checkpoint's model ({:?}) differs from the data's ({:?})",
                ckpt.meta.config,
                cfg
            );
            load_into(&varmap, &ckpt.group("model"), &last.display().to_string())?;
            let ema_tensors = ckpt.group("ema");
            for (name, _, avg) in ema.entries.iter_mut() {
                *avg = ema_tensors
                    .get(name)
                    .with_context(|| format!("{} lacks ema.{name}", last.display()))?
                    .clone();
            }
            ema.updates = progress.ema_updates;
            if let Some(d) = &distiller {
                load_into(
                    &d.heads,
                    &ckpt.group("distill"),
                    &last.display().to_string(),
                )?;
            }
            optimizer.load_state(&ckpt.tensors, progress.optimizer_step)?;
            epochs_done = progress.epochs_done;
            best_fitness = progress.best_fitness;
            rows = read_results_csv(&opts.out.join("results.csv"), epochs_done)?;
            tracing::info!("resuming {} after epoch {epochs_done}", opts.out.display());
        }
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
            distill_terms: [0.0; 3],
            last_step: StepTimes::default(),
            optimizer,
            ema,
            schedule,
            epochs_done,
            best_fitness,
            rows,
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
            eprintln!(
                "epoch {}/{}: val mAP50 {:.3} mAP50-95 {:.3} ({})",
                epoch + 1,
                self.opts.epochs,
                report.overall.stats.map50,
                report.overall.stats.map,
                report
                    .per_condition
                    .iter()
                    .map(|(k, m)| format!("{k} {:.3}", m.stats.map50))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            row.map50 = Some(report.overall.stats.map50);
            row.map = Some(report.overall.stats.map);
            row.report = Some(report);
            self.rows.push(row);
            self.epochs_done = epoch + 1;
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
            self.save(&self.opts.out.join("last.safetensors"), true)?;
        }
        Ok(())
    }

    fn loader_config(&self, shuffle: bool) -> LoaderConfig {
        LoaderConfig {
            batch_size: self.opts.batch,
            imgsz: self.opts.imgsz as u32,
            augment: self.opts.augment.then(AugmentParams::default),
            // the teacher (trained, or distilled from) sees the IR image
            with_ir: self.model.needs_ir() || self.distiller.is_some(),
            shuffle,
            workers: self.opts.workers,
            seed: self.opts.seed,
        }
    }

    fn train_epoch(&mut self, epoch: usize) -> Result<EpochRow> {
        let cfg = self.loader_config(true);
        let nb = batches_per_epoch(self.data.train.len(), self.opts.batch);
        let bar = ProgressBar::new(nb as u64);
        bar.set_style(
            ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} {msg} ({elapsed}<{eta})")
                .expect("valid template")
                .progress_chars("=> "),
        );
        bar.set_prefix(format!("epoch {}/{}", epoch + 1, self.opts.epochs));
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
            let n = (i + 1) as f64;
            let distill = if self.distiller.is_some() {
                format!(" distill {:.3}", sums[3] / n)
            } else {
                String::new()
            };
            bar.set_message(format!(
                "box {:.3} cls {:.3} dfl {:.3}{distill} {:.1} img/s",
                sums[0] / n,
                sums[1] / n,
                sums[2] / n,
                images as f64 / start.elapsed().as_secs_f64()
            ));
            bar.inc(1);
        }
        bar.finish();
        if self.distiller.is_some() {
            let t = std::mem::take(&mut self.distill_terms);
            eprintln!(
                "distill terms (labeled batches, before weights): feature {:.4} contrastive {:.4} response {:.4}",
                t[0] / nb as f64,
                t[1] / nb as f64,
                t[2] / nb as f64
            );
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
        let (s, dev) = (self.opts.imgsz, &self.device);
        let (x, ir) = batch_inputs(batch, s, dev)?;
        let t0 = Instant::now();
        let out = self.model.forward_t(&x, ir.as_ref(), true)?;
        let mut times = StepTimes {
            forward_ms: ms_since(t0),
            ..StepTimes::default()
        };
        let t0 = Instant::now();
        let loss = self.loss.compute(&out.levels, &batch.labels)?;
        let mut total = loss.total;
        let mut distill_value = 0.0f64;
        if let Some(d) = &self.distiller {
            let alpha = self.opts.distill.as_ref().map_or(1.0, |o| o.alpha);
            let seed = self.opts.seed ^ self.optimizer.step.wrapping_mul(0x9e37_79b9);
            let ir = ir
                .as_ref()
                .context("distillation needs the IR image of each pair")?;
            let t1 = Instant::now();
            let teacher = d.teacher_forward(&x, ir)?;
            let teacher_ms = ms_since(t1);
            times.forward_ms += teacher_ms;
            times.loss_ms -= teacher_ms;
            let terms = d.loss(&out, &teacher, Some(&batch.labels), seed)?;
            distill_value += terms.total.to_scalar::<f32>()? as f64;
            for (sum, v) in self.distill_terms.iter_mut().zip([
                terms.feature,
                terms.contrastive,
                terms.response,
            ]) {
                *sum += v as f64;
            }
            // × B like L_det (ultralytics scales its loss by the batch size)
            total = (total + terms.total.affine(alpha * batch.len() as f64, 0.0)?)?;
            if let Some(u) = unlabeled {
                let (ux, uir) = batch_inputs(u, s, dev)?;
                let uir = uir.context("unlabeled pairs need their IR image")?;
                let student = self.model.forward_t(&ux, None, true)?;
                let teacher = d.teacher_forward(&ux, &uir)?;
                let terms = d.loss(&student, &teacher, None, seed ^ 1)?;
                distill_value += terms.total.to_scalar::<f32>()? as f64;
                total = (total + terms.total.affine(alpha * u.len() as f64, 0.0)?)?;
            }
        }
        let parts = [
            loss.box_loss as f64,
            loss.cls_loss as f64,
            loss.dfl_loss as f64,
            distill_value,
        ];
        if !parts.iter().all(|v| v.is_finite()) {
            bail!(
                "non-finite loss at {at}: box {} cls {} dfl {} distill {}; stopping (lower --lr0?)",
                parts[0],
                parts[1],
                parts[2],
                parts[3]
            );
        }
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

/// Runs [`warm_start_batchnorm`] on up to 4 batches of the first epoch.
fn warm_start_from_data(
    model: &Detector,
    varmap: &VarMap,
    data: &DataSpec,
    opts: &TrainOptions,
    device: &Device,
) -> Result<()> {
    let cfg = LoaderConfig {
        batch_size: opts.batch,
        imgsz: opts.imgsz as u32,
        augment: opts.augment.then(AugmentParams::default),
        with_ir: model.needs_ir(),
        shuffle: true,
        workers: opts.workers,
        seed: opts.seed,
    };
    let batches = EpochLoader::start(data.train.clone(), &cfg, 0, 0)
        .take(4)
        .map(|b| batch_inputs(&b?, opts.imgsz, device))
        .collect::<Result<Vec<_>>>()?;
    warm_start_batchnorm(model, varmap, &batches)
}

/// The unlabeled pairs' batches, one per optimizer step, cycling through
/// epochs of their own. Batch k of the stream goes with optimizer step k,
/// so a resumed run continues where it stopped.
struct UnlabeledStream {
    source: Arc<dyn PairSource>,
    cfg: LoaderConfig,
    per_epoch: u64,
    loader: Option<(u64, EpochLoader)>,
}

impl UnlabeledStream {
    fn new(source: Arc<dyn PairSource>, opts: &TrainOptions) -> Self {
        let cfg = LoaderConfig {
            batch_size: opts.batch,
            imgsz: opts.imgsz as u32,
            augment: opts.augment.then(AugmentParams::default),
            with_ir: true,
            shuffle: true,
            workers: opts.workers,
            seed: opts.seed ^ 0x0a1b,
        };
        let per_epoch = batches_per_epoch(source.len(), opts.batch).max(1) as u64;
        Self {
            source,
            cfg,
            per_epoch,
            loader: None,
        }
    }

    /// The batch for optimizer step `step`.
    fn next(&mut self, step: u64) -> Result<Batch> {
        let epoch = step / self.per_epoch;
        if self.loader.as_ref().map(|(e, _)| *e) != Some(epoch) {
            let skip = (step % self.per_epoch) as usize;
            let loader = EpochLoader::start(self.source.clone(), &self.cfg, epoch as usize, skip);
            self.loader = Some((epoch, loader));
        }
        let (_, loader) = self.loader.as_mut().expect("started above");
        match loader.next() {
            Some(b) => b.context("loading unlabeled pairs"),
            None => {
                // the epoch ran out early (a step skipped): start the next one
                self.loader = None;
                self.next((epoch + 1) * self.per_epoch)
            }
        }
    }
}

/// Copies the EMA's averages into the evaluation model's vars.
fn load_ema(varmap: &VarMap, ema: &Ema) -> Result<()> {
    let map: std::collections::HashMap<String, Tensor> = ema
        .tensors()
        .map(|(n, t)| (n.to_string(), t.clone()))
        .collect();
    load_into(varmap, &map, "EMA")
}

fn validate_options(o: &TrainOptions) -> Result<()> {
    ensure!(
        o.imgsz >= 32 && o.imgsz % 32 == 0,
        "--imgsz {} must be a positive multiple of 32",
        o.imgsz
    );
    ensure!(o.epochs >= 1, "--epochs must be at least 1");
    ensure!(o.batch >= 1, "--batch must be at least 1");
    ensure!(o.lr0 > 0.0 && o.lr0.is_finite(), "--lr0 must be positive");
    ensure!(o.workers >= 1, "--workers must be at least 1");
    if o.data == "synth" {
        ensure!(
            o.synth_train >= 1 && o.synth_val >= 1,
            "--synth-train and --synth-val must be at least 1"
        );
    }
    crate::trainer::model::Scale::by_name(&o.model).context("--model")?;
    Ok(())
}

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
fn read_results_csv(path: &Path, epochs: usize) -> Result<Vec<EpochRow>> {
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
