//! `--init W`: start training from existing weights instead of random ones.
//!
//! W may be
//! - one of our checkpoints (`last.safetensors`, `best.safetensors`: the EMA
//!   weights are taken), e.g. a model trained on generated scenes;
//! - an ultralytics YOLOv8 checkpoint converted to safetensors with
//!   ultralytics' own names (`model.0.conv.weight`, `model.0.bn.running_mean`,
//!   …, `model.22.cv3.0.2.bias`), see the README for the three-line
//!   conversion;
//! - an ONNX export, ours or ultralytics' (BatchNorm folded into each
//!   convolution's weight and bias; each BatchNorm is rebuilt around it:
//!   running statistics from the first batches, scale and shift chosen so
//!   that the model's outputs are exactly the export's in eval mode, and
//!   close to them in train mode).
//!
//! Every tensor whose name and shape match is loaded; the rest (e.g. the
//! class branch's last convolution when the class count differs, which
//! keeps its fresh initialisation) is reported by name. A teacher takes the
//! same file for both streams: `backbone_rgb` as is, `backbone_ir` with its
//! first convolution summed over the three input channels (IR has one; a
//! grey image then gets the response the RGB stream gives it).
//!
//! Name mapping (ultralytics `model.<i>.` → ours): layers 0–9 →
//! `backbone.b<i>.`, 12/15/16/18/19/21 → `neck.n<i>.`, 22 (Detect) →
//! `head.`; the blocks below share ultralytics' names (`conv`, `bn`, `cv1`,
//! `cv2`, `m.<j>`, `cv2.<level>.<k>`, `cv3.<level>.<k>`).

use crate::trainer::model::blocks::BN_EPS;
use crate::trainer::train::vars::named_vars;
use anyhow::{bail, ensure, Context, Result};
use candle_core::{DType, Device, Tensor};
use candle_nn::VarMap;
use std::collections::{BTreeSet, HashMap};
use std::path::Path;

/// What [`init_from_file`] loaded, for the log and for tests.
#[derive(Debug, Clone, Default)]
pub struct InitReport {
    /// Model tensors set from the file.
    pub loaded: usize,
    /// Model tensors left as initialised, with why.
    pub kept: Vec<String>,
    /// Tensors of the file that nothing in the model took.
    pub unused: Vec<String>,
    /// BatchNorms set from a folded export (`backbone.b0.bn`, and the
    /// export's bias): they need [`rebase_folded_batchnorm`] once running
    /// statistics exist.
    pub folded: Vec<(String, Tensor)>,
}

impl InitReport {
    /// Whether every BatchNorm's statistics came from the file (none folded,
    /// none kept fresh, e.g. a teacher's fusion blocks from a student file),
    /// so the model needs no statistics from data.
    pub fn has_batchnorm_stats(&self) -> bool {
        self.folded.is_empty() && !self.kept.iter().any(|k| k.contains(".running_"))
    }
}

/// For each folded BatchNorm (export bias b, running stats (μ, σ²) just
/// measured on data): weight √(σ² + eps) and bias b + μ, so that
/// `BN(Wx) = Wx + b` with the running statistics (eval mode: exactly the
/// export) and with batch statistics equal to them (train mode). Statistics
/// measured in train mode are those of a model that is not yet the export
/// (each pass makes deeper layers' statistics closer, not exact), so the
/// caller alternates measuring and rebasing a few times ([`FOLDED_PASSES`]);
/// eval-mode outputs are the export's after any pass, train mode only
/// approximately.
pub fn rebase_folded_batchnorm(varmap: &VarMap, folded: &[(String, Tensor)]) -> Result<()> {
    let vars: HashMap<String, candle_core::Var> = named_vars(varmap).into_iter().collect();
    let get = |name: String| {
        vars.get(&name)
            .cloned()
            .with_context(|| format!("model has no var {name}"))
    };
    for (bn, bias) in folded {
        let (w, b) = (get(format!("{bn}.weight"))?, get(format!("{bn}.bias"))?);
        let (mean, var) = (
            get(format!("{bn}.running_mean"))?,
            get(format!("{bn}.running_var"))?,
        );
        w.set(&(var.as_tensor() + BN_EPS)?.sqrt()?)?;
        let bias = bias.to_dtype(b.dtype())?.to_device(b.device())?;
        b.set(&(bias + mean.as_tensor())?)?;
    }
    Ok(())
}

/// Measure-and-rebase passes for a folded export (see
/// [`rebase_folded_batchnorm`]).
pub const FOLDED_PASSES: usize = 3;

/// Sets the model's vars from `path`; see the module docs. Fails when
/// nothing fits (another architecture or scale).
pub fn init_from_file(varmap: &VarMap, path: &Path) -> Result<InitReport> {
    let file = read_weights(path).with_context(|| format!("--init {}", path.display()))?;
    let mut report = InitReport::default();
    let mut used = BTreeSet::new();
    for (name, var) in named_vars(varmap) {
        match find(&file, &name) {
            Found::Tensor(key, t) => {
                let fitted = if t.dims() == var.dims() {
                    Some(t.clone())
                } else {
                    ir_first_conv(&name, &t, var.dims())?
                };
                match fitted {
                    Some(t) => {
                        var.set(&t.to_dtype(var.dtype())?.to_device(var.device())?)?;
                        used.insert(key);
                        report.loaded += 1;
                    }
                    None => report.kept.push(format!(
                        "{name}: shape {:?} in the file, {:?} in the model",
                        t.dims(),
                        var.dims()
                    )),
                }
            }
            Found::Folded(key, bias, value) if bias.dims() == var.dims() => {
                let value = Tensor::full(value, var.dims(), &Device::Cpu)?;
                var.set(&value.to_dtype(var.dtype())?.to_device(var.device())?)?;
                used.insert(key);
                report.loaded += 1;
            }
            Found::Folded(_, bias, _) => report.kept.push(format!(
                "{name}: folded bias of shape {:?}, {:?} in the model",
                bias.dims(),
                var.dims()
            )),
            Found::FoldedBias(key, t) if t.dims() == var.dims() => {
                var.set(&t.to_dtype(var.dtype())?.to_device(var.device())?)?;
                used.insert(key);
                report.loaded += 1;
                if let Some(bn) = name.strip_suffix(".bias") {
                    report.folded.push((bn.to_owned(), t.clone()));
                }
            }
            Found::FoldedBias(_, t) => report.kept.push(format!(
                "{name}: folded bias of shape {:?}, {:?} in the model",
                t.dims(),
                var.dims()
            )),
            Found::Missing => report.kept.push(format!("{name}: not in the file")),
        }
    }
    report.unused = file
        .tensors
        .keys()
        .filter(|k| !used.contains(*k))
        .cloned()
        .collect();
    report.unused.sort();
    ensure!(
        report.loaded > 0,
        "--init {}: none of its {} tensors fits this model (another architecture or scale?)",
        path.display(),
        file.tensors.len()
    );
    // a file of another scale matches a few small layers by chance; a
    // pretrained start means most convolutions come from the file
    let convs: Vec<String> = named_vars(varmap)
        .into_iter()
        .map(|(n, _)| n)
        .filter(|n| n.ends_with("conv.weight"))
        .collect();
    let kept_convs = convs
        .iter()
        .filter(|n| report.kept.iter().any(|k| k.starts_with(&format!("{n}:"))))
        .count();
    ensure!(
        kept_convs * 2 <= convs.len(),
        "--init {}: only {} of the model's {} convolutions fit (another scale or \
         architecture?); first misfit: {}",
        path.display(),
        convs.len() - kept_convs,
        convs.len(),
        report.kept.first().map_or("", String::as_str)
    );
    tracing::info!(
        "initialised from {}: {} tensors loaded, {} kept as initialised, {} of the file unused",
        path.display(),
        report.loaded,
        report.kept.len(),
        report.unused.len()
    );
    for k in &report.kept {
        tracing::info!("  kept: {k}");
    }
    Ok(report)
}

/// A weights file's tensors under our names.
struct WeightsFile {
    tensors: HashMap<String, Tensor>,
    /// BatchNorm folded into the convolutions (an ONNX export).
    folded: bool,
}

fn read_weights(path: &Path) -> Result<WeightsFile> {
    ensure!(path.is_file(), "no such file");
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    match ext.as_deref() {
        Some("onnx") => read_onnx(path),
        Some("safetensors") => read_safetensors(path),
        _ => bail!("expected a .safetensors or .onnx file"),
    }
}

fn read_safetensors(path: &Path) -> Result<WeightsFile> {
    let raw = candle_core::safetensors::load(path, &Device::Cpu)
        .with_context(|| format!("cannot read {} as safetensors", path.display()))?;
    // our checkpoints hold `model.*` (raw), `ema.*` (what is evaluated) and
    // `optim.*`; ultralytics names start with `model.<digit>`
    let has_ema = raw.keys().any(|k| k.starts_with("ema."));
    let mut tensors = HashMap::new();
    for (k, t) in raw {
        let ours = if has_ema {
            k.strip_prefix("ema.").map(str::to_owned)
        } else {
            Some(ours_from_ultralytics(&k).unwrap_or(k))
        };
        if let Some(name) = ours {
            tensors.insert(name, t.to_dtype(DType::F32)?);
        }
    }
    Ok(WeightsFile {
        tensors,
        folded: false,
    })
}

fn read_onnx(path: &Path) -> Result<WeightsFile> {
    use tract_onnx::pb::tensor_proto::DataType;
    use tract_onnx::prelude::Framework;
    let model = tract_onnx::onnx()
        .proto_model_for_path(path)
        .map_err(|e| anyhow::anyhow!("cannot read {} as ONNX: {e}", path.display()))?;
    let graph = model.graph.context("the ONNX file has no graph")?;
    let mut tensors = HashMap::new();
    for init in graph.initializer {
        if init.data_type != DataType::Float as i32 {
            continue;
        }
        let dims: Vec<usize> = init.dims.iter().map(|&d| d as usize).collect();
        let values: Vec<f32> = if !init.raw_data.is_empty() {
            init.raw_data
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect()
        } else {
            init.float_data.clone()
        };
        if values.len() != dims.iter().product::<usize>() {
            continue; // external data or an empty tensor: not a weight we use
        }
        let name = ours_from_ultralytics(&init.name).unwrap_or(init.name.clone());
        tensors.insert(name, Tensor::from_vec(values, dims, &Device::Cpu)?);
    }
    Ok(WeightsFile {
        tensors,
        folded: true,
    })
}

/// ultralytics' YOLOv8 name → ours (see the module docs); `None` when the
/// name is not one of its layers'.
pub fn ours_from_ultralytics(name: &str) -> Option<String> {
    let rest = name.strip_prefix("model.")?;
    let (layer, rest) = rest.split_once('.')?;
    let layer: usize = layer.parse().ok()?;
    Some(match layer {
        0..=9 => format!("backbone.b{layer}.{rest}"),
        12 | 15 | 16 | 18 | 19 | 21 => format!("neck.n{layer}.{rest}"),
        22 => format!("head.{rest}"),
        _ => return None,
    })
}

/// Where a model var's value comes from.
enum Found {
    /// The file's tensor of that name (after the teacher's stream mapping).
    Tensor(String, Tensor),
    /// A folded BatchNorm's constant (weight 1, mean 0, var 1 − eps), with
    /// the convolution's bias (its shape must be the BatchNorm's).
    Folded(String, Tensor, f64),
    /// A folded BatchNorm's bias: the convolution's bias.
    FoldedBias(String, Tensor),
    Missing,
}

fn find(file: &WeightsFile, name: &str) -> Found {
    // a teacher's two streams both come from a student's backbone
    let candidates: Vec<String> = [
        Some(name.to_owned()),
        name.strip_prefix("backbone_rgb.")
            .or_else(|| name.strip_prefix("backbone_ir."))
            .map(|rest| format!("backbone.{rest}")),
    ]
    .into_iter()
    .flatten()
    .collect();
    for key in &candidates {
        if let Some(t) = file.tensors.get(key) {
            return Found::Tensor(key.clone(), t.clone());
        }
        if !file.folded {
            continue;
        }
        // `X.bn.<stat>` of a folded export: X.conv.bias carries the shift
        let Some((block, stat)) = key.rsplit_once(".bn.") else {
            continue;
        };
        let bias_key = format!("{block}.conv.bias");
        let Some(bias) = file.tensors.get(&bias_key) else {
            continue;
        };
        return match stat {
            "bias" => Found::FoldedBias(bias_key, bias.clone()),
            "weight" => Found::Folded(bias_key, bias.clone(), 1.0),
            "running_mean" => Found::Folded(bias_key, bias.clone(), 0.0),
            "running_var" => Found::Folded(bias_key, bias.clone(), 1.0 - BN_EPS),
            _ => Found::Missing,
        };
    }
    Found::Missing
}

/// The IR stream's first convolution from an RGB one: `[C, 3, k, k]` summed
/// over its input channels to `[C, 1, k, k]` (a grey image seen as RGB
/// gives the same response). `None` for any other shape mismatch.
fn ir_first_conv(name: &str, t: &Tensor, want: &[usize]) -> Result<Option<Tensor>> {
    let dims = t.dims();
    let fits = name.starts_with("backbone_ir.b0.conv.weight")
        && dims.len() == 4
        && dims[1] == 3
        && want.len() == 4
        && want[1] == 1
        && (dims[0], dims[2], dims[3]) == (want[0], want[2], want[3]);
    if !fits {
        return Ok(None);
    }
    // summing would keep a grey input's response; IR frames are one
    // channel, so the sum over the three RGB weights is what one channel
    // needs to reproduce the RGB stream's response to a grey image
    Ok(Some(t.sum_keepdim(1)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_ultralytics_layer_names_to_ours() {
        let m = |s: &str| ours_from_ultralytics(s);
        assert_eq!(m("model.0.conv.weight").unwrap(), "backbone.b0.conv.weight");
        assert_eq!(
            m("model.9.cv2.bn.running_var").unwrap(),
            "backbone.b9.cv2.bn.running_var"
        );
        assert_eq!(
            m("model.18.m.0.cv1.conv.weight").unwrap(),
            "neck.n18.m.0.cv1.conv.weight"
        );
        assert_eq!(m("model.22.cv3.2.2.bias").unwrap(), "head.cv3.2.2.bias");
        assert_eq!(m("model.10.foo"), None); // Upsample has no weights
        assert_eq!(m("backbone.b0.conv.weight"), None);
    }

    #[test]
    fn the_ir_stream_sums_the_rgb_first_convolution_over_its_inputs() {
        let rgb = Tensor::arange(0f32, 2.0 * 3.0 * 4.0, &Device::Cpu)
            .unwrap()
            .reshape((2, 3, 2, 2))
            .unwrap();
        let ir = ir_first_conv("backbone_ir.b0.conv.weight", &rgb, &[2, 1, 2, 2])
            .unwrap()
            .unwrap();
        assert_eq!(ir.dims(), [2, 1, 2, 2]);
        // out 0, position (0, 0): inputs 0, 4, 8
        assert_eq!(ir.flatten_all().unwrap().to_vec1::<f32>().unwrap()[0], 12.0);
        // another layer, or another shape, is not adapted
        assert!(
            ir_first_conv("backbone_ir.b1.conv.weight", &rgb, &[2, 1, 2, 2])
                .unwrap()
                .is_none()
        );
        assert!(
            ir_first_conv("backbone_ir.b0.conv.weight", &rgb, &[4, 1, 2, 2])
                .unwrap()
                .is_none()
        );
    }
}
