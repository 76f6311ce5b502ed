//! Inference with tract: loads an ONNX detector in ultralytics' YOLOv8
//! layout (ours or ultralytics' own), reads its input size and class names
//! from the metadata, and runs it on one letterboxed frame at a time.
//!
//! Model boundary:
//! - input `[1, 3, H, W]` f32, RGB in 0..1 (letterboxed, see `convert`);
//! - output `[1, 4 + nc, N]` f32: cx, cy, w, h in input pixels, then one
//!   sigmoid score per class (no NMS in the graph).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, ensure, Context, Result};
use tract_linalg::multithread::Executor;
use tract_onnx::prelude::*;
use tract_onnx::tract_core::runtime::RunOptions;
use tract_onnx::tract_hir::infer::{DimFact, Factoid};

/// What the caller knows beyond the model file (flags, config).
#[derive(Debug, Clone, Default)]
pub struct ModelOptions {
    /// Input size `(height, width)` when the model's metadata and input
    /// shape do not say.
    pub imgsz: Option<(u32, u32)>,
    /// Class names when the model has no `names` metadata.
    pub names: Option<Vec<String>>,
    /// Threads for tract's matrix products (1 = the calling thread only);
    /// 0 = `auto`: each count from 1 to the cores is timed at load and the
    /// fastest kept.
    pub threads: usize,
}

/// What the daemon needs to know about a loaded model.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelInfo {
    pub path: PathBuf,
    pub input_w_px: u32,
    pub input_h_px: u32,
    /// Class names in class-id order (`nc = names.len()`).
    pub names: Vec<String>,
    /// Anchors (candidate boxes) per frame: the `N` of `[1, 4 + nc, N]`.
    pub anchors: usize,
    /// Inference threads in use (chosen at load under `auto`).
    pub threads: usize,
    /// Under `auto`: each thread count timed, with its median ms per run.
    pub thread_timings_ms: Vec<(usize, f64)>,
}

impl ModelInfo {
    pub fn nc(&self) -> usize {
        self.names.len()
    }

    /// Input tensor length, `3·H·W`.
    pub fn input_len(&self) -> usize {
        3 * self.input_w_px as usize * self.input_h_px as usize
    }

    /// Output tensor length, `(4 + nc)·N`.
    pub fn output_len(&self) -> usize {
        (4 + self.nc()) * self.anchors
    }

    pub fn label(&self, class_id: usize) -> &str {
        self.names.get(class_id).map_or("?", |s| s.as_str())
    }
}

type Plan = Arc<TypedRunnableModel>;

/// A loaded, optimised model and its reusable run state.
pub struct Detector {
    info: ModelInfo,
    plan: Plan,
    state: TypedSimpleState,
}

/// Parses ultralytics' `names` metadata: a Python dict literal
/// `{0: 'person', 1: "it's"}`, or a JSON/Python list `['person', 'car']`.
pub fn parse_names(text: &str) -> Result<Vec<String>> {
    let t = text.trim();
    let (open, close, dict) = match t.chars().next() {
        Some('{') => ('{', '}', true),
        Some('[') => ('[', ']', false),
        _ => bail!("expected a dict {{0: 'name', …}} or a list ['name', …], got {t:?}"),
    };
    ensure!(t.ends_with(close), "unterminated {open}…{close} in {t:?}");
    let body = &t[1..t.len() - 1];
    let mut names: Vec<(usize, String)> = Vec::new();
    let mut chars = body.chars().peekable();
    let skip_ws = |c: &mut std::iter::Peekable<std::str::Chars>| {
        while c.peek().is_some_and(|ch| ch.is_whitespace()) {
            c.next();
        }
    };
    loop {
        skip_ws(&mut chars);
        if chars.peek().is_none() {
            break;
        }
        let index = if dict {
            let mut digits = String::new();
            while chars.peek().is_some_and(|c| c.is_ascii_digit()) {
                digits.push(chars.next().unwrap());
            }
            let k: usize = digits
                .parse()
                .with_context(|| format!("expected a class index in {t:?}"))?;
            skip_ws(&mut chars);
            ensure!(chars.next() == Some(':'), "expected ':' after {k} in {t:?}");
            skip_ws(&mut chars);
            k
        } else {
            names.len()
        };
        let quote = chars.next();
        ensure!(
            matches!(quote, Some('\'') | Some('"')),
            "expected a quoted name in {t:?}"
        );
        let quote = quote.unwrap();
        let mut name = String::new();
        loop {
            match chars.next() {
                None => bail!("unterminated name in {t:?}"),
                Some('\\') => name.push(chars.next().context("dangling escape")?),
                Some(c) if c == quote => break,
                Some(c) => name.push(c),
            }
        }
        names.push((index, name));
        skip_ws(&mut chars);
        match chars.next() {
            None => break,
            Some(',') => continue,
            Some(c) => bail!("unexpected {c:?} in {t:?}"),
        }
    }
    names.sort_by_key(|(i, _)| *i);
    for (k, (i, _)) in names.iter().enumerate() {
        ensure!(
            *i == k,
            "class indices must be 0..{}, got {i} in {t:?}",
            names.len()
        );
    }
    ensure!(!names.is_empty(), "no class names in {t:?}");
    Ok(names.into_iter().map(|(_, n)| n).collect())
}

/// Parses `imgsz` metadata: `[640, 640]` (h, w), `[640]` or `640`.
pub fn parse_imgsz(text: &str) -> Result<(u32, u32)> {
    let t = text
        .trim()
        .trim_start_matches(['[', '('])
        .trim_end_matches([']', ')']);
    let v: Vec<u32> = t
        .split(',')
        .map(|s| s.trim())
        .filter(|s| !s.is_empty())
        .map(|s| s.parse::<u32>())
        .collect::<std::result::Result<_, _>>()
        .with_context(|| format!("expected [H, W] or S, got {text:?}"))?;
    match v[..] {
        [s] if s > 0 => Ok((s, s)),
        [h, w] if h > 0 && w > 0 => Ok((h, w)),
        _ => bail!("expected [H, W] or S, got {text:?}"),
    }
}

fn metadata(model: &InferenceModel, key: &str) -> Option<String> {
    let t = model
        .properties
        .get(&format!("onnx.metadata_props.{key}"))?;
    t.try_as_plain_ram()
        .ok()?
        .to_scalar::<String>()
        .ok()
        .cloned()
}

fn concrete(d: &DimFact) -> Option<usize> {
    d.concretize()
        .and_then(|t| t.to_i64().ok())
        .and_then(|v| usize::try_from(v).ok())
}

/// Refuses what is not a model file before handing it to tract: a missing
/// path, or a Git LFS pointer checked out in its place.
fn check_model_file(path: &Path) -> Result<()> {
    let shown = path.display();
    ensure!(
        path.is_file(),
        "model {shown}: no such file (set --model or [model] path)"
    );
    // A clone without Git LFS holds a small text pointer instead.
    let mut head = [0u8; 64];
    let n = std::fs::File::open(path)
        .and_then(|mut f| std::io::Read::read(&mut f, &mut head))
        .with_context(|| format!("model {shown}: cannot read"))?;
    ensure!(
        !head[..n].starts_with(b"version https://git-lfs"),
        "model {shown}: this is a Git LFS pointer, not the model: run `git lfs pull` (package git-lfs)"
    );
    Ok(())
}

/// Parses the ONNX file; one input and one output, as YOLOv8 has.
fn read_onnx(path: &Path) -> Result<InferenceModel> {
    let shown = path.display();
    let model = tract_onnx::onnx()
        .model_for_path(path)
        .map_err(|e| anyhow::anyhow!("{e:?}"))
        .with_context(|| format!("model {shown}: not a readable ONNX model"))?;
    ensure!(
        model.inputs.len() == 1 && model.outputs.len() == 1,
        "model {shown}: expected one input and one output (YOLOv8 layout), found {} and {}",
        model.inputs.len(),
        model.outputs.len()
    );
    Ok(model)
}

/// The input size `(h, w)`: the metadata, else a concrete input shape,
/// else the caller's; the shape and the metadata must agree.
fn input_size_px(model: &InferenceModel, path: &Path, opts: &ModelOptions) -> Result<(u32, u32)> {
    let shown = path.display();
    let fact = model.input_fact(0)?.clone();
    let dims: Vec<Option<usize>> = fact.shape.dims().map(concrete).collect();
    if fact.shape.is_open() || !dims.is_empty() {
        ensure!(
            dims.len() == 4 && dims[1].map_or(true, |c| c == 3),
            "model {shown}: input shape {} is not [1, 3, H, W]",
            fact.format_dt_shape()
        );
    }
    let from_meta = match metadata(model, "imgsz") {
        Some(s) => Some(parse_imgsz(&s).with_context(|| format!("model {shown}: metadata imgsz"))?),
        None => None,
    };
    let from_shape = match (
        dims.get(2).copied().flatten(),
        dims.get(3).copied().flatten(),
    ) {
        (Some(h), Some(w)) => Some((h as u32, w as u32)),
        _ => None,
    };
    let (h, w) = match (from_shape, from_meta, opts.imgsz) {
        (Some(shape), Some(meta), _) if shape != meta => bail!(
            "model {shown}: input shape {}x{} disagrees with its imgsz metadata {}x{}",
            shape.0,
            shape.1,
            meta.0,
            meta.1
        ),
        (Some(s), _, _) | (None, Some(s), _) | (None, None, Some(s)) => s,
        (None, None, None) => bail!(
            "model {shown}: its input size is neither fixed nor in the metadata; pass --imgsz"
        ),
    };
    ensure!(h > 0 && w > 0, "model {shown}: input size {h}x{w}");
    Ok((h, w))
}

/// The model's `names` metadata, if it has one.
fn names_metadata(model: &InferenceModel, path: &Path) -> Result<Option<Vec<String>>> {
    match metadata(model, "names") {
        Some(s) => Ok(Some(parse_names(&s).with_context(|| {
            format!("model {}: metadata names", path.display())
        })?)),
        None => Ok(None),
    }
}

/// Fixes the input to `[1, 3, h, w]` and lets tract optimise the graph.
fn optimise(model: InferenceModel, path: &Path, (h, w): (u32, u32)) -> Result<TypedModel> {
    model
        .with_input_fact(0, f32::fact([1, 3, h as usize, w as usize]).into())
        .and_then(|m| m.into_optimized())
        .map_err(|e| anyhow::anyhow!("{e:?}"))
        .with_context(|| {
            format!(
                "model {}: tract could not optimise it for [1, 3, {h}, {w}]",
                path.display()
            )
        })
}

/// The optimised model's output `[1, 4 + nc, N]`: `(4 + nc, N)`.
fn output_rows_anchors(model: &TypedModel, path: &Path) -> Result<(usize, usize)> {
    let shown = path.display();
    let out_shape: Vec<usize> = model
        .output_fact(0)?
        .shape
        .as_concrete()
        .map(|s| s.to_vec())
        .with_context(|| format!("model {shown}: output shape is not concrete"))?;
    match out_shape[..] {
        [1, rows, n] if rows > 4 && n > 0 => Ok((rows, n)),
        _ => {
            bail!("model {shown}: output shape {out_shape:?} is not the YOLOv8 layout [1, 4+nc, N]")
        }
    }
}

/// Class names from the metadata, else the caller's, else numbered; their
/// count must match the output's `rows - 4` classes.
fn class_names(
    from_meta: Option<Vec<String>>,
    opts: &ModelOptions,
    path: &Path,
    (rows, anchors): (usize, usize),
) -> Result<Vec<String>> {
    Ok(match from_meta.or_else(|| opts.names.clone()) {
        Some(n) => {
            ensure!(
                n.len() == rows - 4,
                "model {}: output has {} classes ([1, {rows}, {anchors}]) but {} names",
                path.display(),
                rows - 4,
                n.len()
            );
            n
        }
        // No names anywhere: numbered classes, as ultralytics does.
        None => (0..rows - 4).map(|i| format!("class{i}")).collect(),
    })
}

/// The runnable plan on `threads` threads and its reusable run state.
fn plan(model: TypedModel, path: &Path, threads: usize) -> Result<(Plan, TypedSimpleState)> {
    let shown = path.display();
    let executor = if threads > 1 {
        Some(Executor::multithread(threads))
    } else {
        None
    };
    let plan = model
        .into_runnable_with_options(&RunOptions {
            executor,
            ..Default::default()
        })
        .map_err(|e| anyhow::anyhow!("{e:?}"))
        .with_context(|| format!("model {shown}: tract could not plan it"))?;
    let state = plan
        .spawn()
        .map_err(|e| anyhow::anyhow!("{e:?}"))
        .with_context(|| format!("model {shown}: tract could not prepare a run state"))?;
    Ok((plan, state))
}

/// `auto` times at most this many thread counts (a many-core workstation
/// does not try each of its cores).
const AUTO_MAX_THREADS: usize = 8;
/// Runs per count under `auto`: warm-up, then at least `AUTO_MIN_RUNS`
/// and as many more as fit `AUTO_BUDGET` (up to `AUTO_MAX_RUNS`).
const AUTO_WARM_UP_RUNS: usize = 2;
const AUTO_MIN_RUNS: usize = 5;
const AUTO_MAX_RUNS: usize = 50;
const AUTO_BUDGET: std::time::Duration = std::time::Duration::from_millis(150);
/// More threads must be this much faster than fewer to be chosen (a tie
/// goes to the fewer threads: they leave cores to capture and the OS).
const AUTO_MARGIN: f64 = 0.95;

/// The plan and run state on the thread count in use, with `auto`'s
/// timings.
struct Planned {
    plan: Plan,
    state: TypedSimpleState,
    threads: usize,
    timings_ms: Vec<(usize, f64)>,
}

/// Plans the model on `threads` threads; with 0 (`auto`) on each count
/// from 1 to the cores, timing each on a blank `input_shape` input, and
/// keeps the fastest. Timing beats a rule: tract on 2 threads can be slower
/// than on 1 (measured 162 vs 217 fps on the bundled model, 2 cores).
fn plan_threads(
    model: TypedModel,
    path: &Path,
    threads: usize,
    input_shape: [usize; 4],
) -> Result<Planned> {
    if threads > 0 {
        let (plan, state) = plan(model, path, threads)?;
        return Ok(Planned {
            plan,
            state,
            threads,
            timings_ms: Vec::new(),
        });
    }
    let cores = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(AUTO_MAX_THREADS);
    // the fastest so far
    let mut best: Option<(f64, usize, Plan, TypedSimpleState)> = None;
    let mut timings_ms = Vec::new();
    for t in 1..=cores {
        let (plan, mut state) = plan(model.clone(), path, t)?;
        let ms = median_run_ms(&mut state, input_shape)
            .with_context(|| format!("model {}: timing {t} threads", path.display()))?;
        timings_ms.push((t, ms));
        if best.as_ref().map_or(true, |(b, ..)| ms < *b * AUTO_MARGIN) {
            best = Some((ms, t, plan, state));
        }
    }
    let (_, threads, plan, state) = best.expect("at least one thread count");
    Ok(Planned {
        plan,
        state,
        threads,
        timings_ms,
    })
}

/// Median milliseconds of running `state` on a blank input.
fn median_run_ms(state: &mut TypedSimpleState, input_shape: [usize; 4]) -> Result<f64> {
    let input = Tensor::zero::<f32>(&input_shape)?;
    let mut run = || -> Result<f64> {
        let t0 = std::time::Instant::now();
        state
            .run(tvec!(input.clone().into_tvalue()))
            .map_err(|e| anyhow::anyhow!("{e:?}").context("tract run failed"))?;
        Ok(t0.elapsed().as_secs_f64() * 1e3)
    };
    for _ in 0..AUTO_WARM_UP_RUNS {
        run()?;
    }
    let start = std::time::Instant::now();
    let mut ms = Vec::new();
    while ms.len() < AUTO_MIN_RUNS || (start.elapsed() < AUTO_BUDGET && ms.len() < AUTO_MAX_RUNS) {
        ms.push(run()?);
    }
    ms.sort_by(f64::total_cmp);
    Ok(ms[ms.len() / 2])
}

impl Detector {
    /// Loads and optimises `path`; every error names the file and what is
    /// wrong (unreadable, not ONNX, not the YOLOv8 layout, …).
    pub fn load(path: &Path, opts: &ModelOptions) -> Result<Detector> {
        check_model_file(path)?;
        let model = read_onnx(path)?;
        let (h, w) = input_size_px(&model, path, opts)?;
        let names_meta = names_metadata(&model, path)?;
        let model = optimise(model, path, (h, w))?;
        let (rows, anchors) = output_rows_anchors(&model, path)?;
        let names = class_names(names_meta, opts, path, (rows, anchors))?;
        let planned = plan_threads(model, path, opts.threads, [1, 3, h as usize, w as usize])?;
        Ok(Detector {
            info: ModelInfo {
                path: path.to_path_buf(),
                input_w_px: w,
                input_h_px: h,
                names,
                anchors,
                threads: planned.threads,
                thread_timings_ms: planned.timings_ms,
            },
            plan: planned.plan,
            state: planned.state,
        })
    }

    pub fn info(&self) -> &ModelInfo {
        &self.info
    }

    /// Runs the model on one `[3, H, W]` input; writes the `[4 + nc, N]`
    /// output into `output` (resized, capacity kept).
    pub fn run(&mut self, input_chw: &[f32], output: &mut Vec<f32>) -> Result<()> {
        ensure!(
            input_chw.len() == self.info.input_len(),
            "input has {} values, the model takes {}",
            input_chw.len(),
            self.info.input_len()
        );
        // tract takes ownership of its inputs and allocates its intermediate
        // tensors per run anyway; one more copy of the input is noise.
        let shape = [
            1,
            3,
            self.info.input_h_px as usize,
            self.info.input_w_px as usize,
        ];
        let tensor = Tensor::from_shape(&shape, input_chw)?;
        let outputs = self
            .state
            .run(tvec!(tensor.into_tvalue()))
            .map_err(|e| anyhow::anyhow!("{e:?}").context("tract run failed"))?;
        let view = outputs[0].to_plain_array_view::<f32>()?;
        ensure!(
            view.len() == self.info.output_len(),
            "model output has {} values, expected {}",
            view.len(),
            self.info.output_len()
        );
        output.clear();
        output.extend(view.iter().copied());
        Ok(())
    }

    /// The optimised plan (for the benchmark's model-only timing).
    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    /// Time per operator kind over `runs` runs of `input_chw` (for `bench
    /// --profile`): (op name, total seconds, node count), slowest first.
    pub fn profile(&mut self, input_chw: &[f32], runs: usize) -> Result<Vec<(String, f64, usize)>> {
        use std::collections::HashMap;
        let shape = [
            1,
            3,
            self.info.input_h_px as usize,
            self.info.input_w_px as usize,
        ];
        let mut by_op: HashMap<String, (f64, std::collections::HashSet<usize>)> = HashMap::new();
        for _ in 0..runs {
            let tensor = Tensor::from_shape(&shape, input_chw)?;
            self.state
                .run_plan_with_eval(tvec!(tensor.into_tvalue()), |ctx, state, node, inputs| {
                    let t0 = std::time::Instant::now();
                    let r = tract_onnx::tract_core::plan::eval(ctx, state, node, inputs);
                    let e = by_op.entry(node.op().name().to_string()).or_default();
                    e.0 += t0.elapsed().as_secs_f64();
                    e.1.insert(node.id);
                    r
                })
                .map_err(|e| anyhow::anyhow!("{e:?}"))?;
        }
        let mut v: Vec<(String, f64, usize)> = by_op
            .into_iter()
            .map(|(k, (t, nodes))| (k, t / runs as f64, nodes.len()))
            .collect();
        v.sort_by(|a, b| b.1.total_cmp(&a.1));
        Ok(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ultralytics_names_and_imgsz() {
        assert_eq!(
            parse_names("{0: 'person', 1: 'car', 2: \"it's\"}").unwrap(),
            ["person", "car", "it's"]
        );
        assert_eq!(parse_names("['a', 'b']").unwrap(), ["a", "b"]);
        assert!(parse_names("{0: 'a', 2: 'b'}").is_err());
        assert!(parse_names("person,car").is_err());
        assert_eq!(parse_imgsz("[640, 640]").unwrap(), (640, 640));
        assert_eq!(parse_imgsz("[480, 640]").unwrap(), (480, 640));
        assert_eq!(parse_imgsz("256").unwrap(), (256, 256));
        assert!(parse_imgsz("[0, 3]").is_err());
    }
}
