//! What a run starts from: the compute device, the data and the model,
//! weights drawn from the seed, BatchNorm statistics warm-started from real
//! batches, the distiller (when distilling) and the optimizer with its
//! learning-rate schedule. Continuing a run instead is `resume`.

use super::inputs::batch_inputs;
use super::loader::EpochLoader;
use super::optim::{Group, Optimizer, OptimizerKind, Param, Schedule};
use super::options::TrainOptions;
use super::source::{open_data, open_unlabeled, DataSpec, Repeated, SynthSizes};
use super::unlabeled::UnlabeledStream;
use super::vars::named_vars;
use crate::trainer::distill::Distiller;
use crate::trainer::model::{is_running_stat, Detector, ModelConfig};
use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

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

/// The training and validation pairs of `opts.data`.
pub(super) fn open_training_data(opts: &TrainOptions) -> Result<DataSpec> {
    let synth = SynthSizes {
        train: opts.synth_train,
        val: opts.synth_val,
        seed: opts.seed,
    };
    tracing::info!("loading data {}", opts.data);
    let mut data = open_data(
        &opts.data,
        synth,
        opts.val_split,
        opts.synth_conditions.as_deref(),
    )?;
    if opts.repeat > 1 {
        data.train = std::sync::Arc::new(Repeated {
            inner: data.train,
            times: opts.repeat,
        });
        data.description += &format!(", each epoch passes over them {}×", opts.repeat);
    }
    Ok(data)
}

/// The model `opts` asks for, with the data's classes.
pub(super) fn model_config(opts: &TrainOptions, data: &DataSpec) -> ModelConfig {
    ModelConfig {
        scale: opts.model.clone(),
        nc: data.names.len(),
        names: data.names.clone(),
        imgsz: opts.imgsz,
        fusion: opts.fusion,
    }
}

/// A detector for `cfg` with its variables in a fresh `VarMap` (f32, with
/// candle's unseeded initial values: see [`seed_weights`]).
pub(super) fn new_detector(cfg: &ModelConfig, device: &Device) -> Result<(VarMap, Detector)> {
    let varmap = VarMap::new();
    let model = Detector::load(VarBuilder::from_varmap(&varmap, DType::F32, device), cfg)?;
    Ok((varmap, model))
}

/// Draws every convolution weight again from a seeded RNG (PyTorch's default
/// kaiming-uniform bound 1/sqrt(fan_in)), and every linear layer's bias:
/// candle's CPU initialisers cannot be seeded, and runs with the same
/// `--seed` must start from the same weights (the distiller's projection
/// heads are linear layers; the detectors have none).
pub fn seed_weights(varmap: &VarMap, seed: u64) -> Result<()> {
    let data = varmap.data().lock().expect("VarMap mutex poisoned");
    let mut names: Vec<&String> = data.keys().collect();
    names.sort();
    for name in names {
        let var = &data[name];
        if is_running_stat(name) {
            continue;
        }
        let dims = var.dims().to_vec();
        let fan_in: usize = match linear_bias_fan_in(&data, name, var) {
            Some(fan_in) => fan_in,
            None if var.rank() < 2 => continue,
            None => dims[1..].iter().product(),
        };
        let bound = 1.0 / (fan_in.max(1) as f32).sqrt();
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ crate::shared::condition::stable_hash(name));
        let values: Vec<f32> = (0..var.elem_count())
            .map(|_| rng.random_range(-bound..bound))
            .collect();
        var.set(&Tensor::from_vec(values, dims, var.device())?.to_dtype(var.dtype())?)?;
    }
    Ok(())
}

/// The fan-in of a linear layer's bias (`X.bias` beside a rank-2
/// `X.weight`), drawn like PyTorch's `nn.Linear` does; `None` for every
/// other tensor. Convolution biases start at constants and need no draw.
fn linear_bias_fan_in(
    data: &std::collections::HashMap<String, Var>,
    name: &str,
    var: &Var,
) -> Option<usize> {
    let weight = data.get(&format!("{}.weight", name.strip_suffix(".bias")?))?;
    (var.rank() == 1 && weight.rank() == 2).then(|| weight.dims()[1])
}

/// The distiller of a `trainer distill` run (none otherwise), its adapters
/// and projection heads seeded like the student's weights.
pub(super) fn new_distiller(
    opts: &TrainOptions,
    cfg: &ModelConfig,
    model: &Detector,
    device: &Device,
) -> Result<Option<Distiller>> {
    match (&opts.distill, model) {
        (None, _) => Ok(None),
        (Some(d), Detector::Student(student)) => {
            let channels = [student.feature_channels(), student.backbone_channels()];
            let distiller = Distiller::new(d, cfg, channels, device)?;
            seed_weights(&distiller.heads, opts.seed ^ 0xd157)?;
            Ok(Some(distiller))
        }
        (Some(_), Detector::Teacher(_)) => bail!(
            "--model {}: distillation trains an RGB student (student-p or student-n), not a teacher",
            opts.model
        ),
    }
}

/// The unlabeled pairs of a distillation run, when it names some.
pub(super) fn unlabeled_stream(opts: &TrainOptions) -> Result<Option<UnlabeledStream>> {
    match opts.distill.as_ref().and_then(|d| d.unlabeled.as_deref()) {
        None => Ok(None),
        Some(spec) => Ok(Some(UnlabeledStream::new(
            open_unlabeled(spec, opts.seed, opts.synth_train)?,
            opts,
        ))),
    }
}

/// Starts BatchNorm running statistics at the statistics of real batches
/// instead of (mean 0, var 1). With momentum 0.03 the initial variance of 1
/// otherwise dominates for hundreds of steps (true variances here are often
/// ~1e-3), and every validation before then runs a model whose eval-mode
/// normalisation is far off its training-mode one. Zeroing the stats first
/// makes one train-mode forward leave exactly `momentum × batch statistic`
/// in them, which is divided out and averaged over the `batches`
/// (RGB `[B, 3, S, S]`, IR `[B, 1, S, S]` for a teacher).
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

/// Runs [`warm_start_batchnorm`] on up to 4 batches of the first epoch.
pub(super) fn warm_start_from_data(
    model: &Detector,
    varmap: &VarMap,
    data: &DataSpec,
    opts: &TrainOptions,
    device: &Device,
) -> Result<()> {
    let cfg = opts.training_loader(model.needs_ir(), true);
    let batches = EpochLoader::start(data.train.clone(), &cfg, 0, 0)
        .take(4)
        .map(|b| batch_inputs(&b?, opts.imgsz, device))
        .collect::<Result<Vec<_>>>()?;
    warm_start_batchnorm(model, varmap, &batches)
}

/// The optimizer over every trained tensor: the model's (running BatchNorm
/// statistics excepted) and, when distilling, the distiller's heads.
pub(super) fn new_optimizer(
    opts: &TrainOptions,
    varmap: &VarMap,
    distiller: Option<&Distiller>,
) -> Result<Optimizer> {
    let mut named = named_vars(varmap);
    if let Some(d) = distiller {
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
    Optimizer::new(opts.optimizer, params, wd, opts.momentum)
}

/// The learning-rate schedule of a run of `epochs × batches_per_epoch`
/// steps: warm-up over `warmup_epochs` (at least 100 steps, at most half
/// the run), then cosine decay.
pub(super) fn lr_schedule(opts: &TrainOptions, batches_per_epoch: u64) -> Schedule {
    let nb = batches_per_epoch;
    let total = nb * opts.epochs as u64;
    let warmup = ((opts.warmup_epochs * nb as f64).round() as u64)
        .max(100)
        .min(total / 2);
    Schedule {
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
    }
}

/// Chooses the teacher's pseudo-label threshold on the validation pairs
/// (best F1) when the run has unlabeled pairs and no `--teacher-conf`, and
/// writes the pseudo-labels' quality there to `pseudo_labels.json`.
pub(super) fn calibrate_pseudo_labels(
    distiller: &mut Distiller,
    data: &DataSpec,
    opts: &TrainOptions,
    device: &Device,
) -> Result<()> {
    if !distiller.needs_calibration() {
        return Ok(());
    }
    let images = super::validate::predict_images(
        distiller.teacher(),
        data.val.clone(),
        data.names.len(),
        opts.imgsz,
        opts.batch,
        opts.workers,
        device,
    )?;
    let q = distiller.calibrate(&images);
    tracing::info!(
        "pseudo-labels: teacher detections ≥ {:.2} (best F1 on {} validation pairs): precision {:.3} recall {:.3}",
        q.threshold,
        q.images,
        q.precision,
        q.recall
    );
    let path = opts.out.join("pseudo_labels.json");
    std::fs::write(&path, serde_json::to_string_pretty(&q)?)
        .with_context(|| format!("cannot write {}", path.display()))
}

/// Copies the teacher's RGB stream into the student: `backbone.*` from
/// the teacher's `backbone_rgb.*`, `neck.*` and `head.*` from its own, each
/// where the shapes agree (BatchNorm statistics are warm-started on RGB
/// batches afterwards). Fails when nothing fits (e.g. an early-fusion
/// teacher of another scale).
pub(super) fn init_from_teacher(
    varmap: &VarMap,
    teacher: &std::collections::HashMap<String, Tensor>,
) -> Result<()> {
    let vars = named_vars(varmap);
    let mut copied = 0;
    for (name, var) in &vars {
        let from = match name.strip_prefix("backbone.") {
            Some(rest) => format!("backbone_rgb.{rest}"),
            None => name.clone(),
        };
        if let Some(t) = teacher.get(&from).filter(|t| t.dims() == var.dims()) {
            var.set(&t.to_dtype(var.dtype())?.to_device(var.device())?)?;
            copied += 1;
        }
    }
    if copied == 0 {
        bail!("--init-from-teacher: no tensor of the teacher fits the student (another scale, or early fusion?)");
    }
    tracing::info!(
        "student initialised from the teacher's RGB stream: {copied} of {} tensors",
        vars.len()
    );
    Ok(())
}
