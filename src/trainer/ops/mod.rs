//! Training-speed kernels for candle's CPU backend, each a drop-in for a
//! candle reference op with the same result up to floating-point rounding
//! (tests compare values and gradients against the reference).
//!
//! - [`conv::conv2d`]: convolution as im2col + gemm, backward as gemms +
//!   col2im, no gradient for the input image;
//! - [`bn_silu::batch_norm_silu`]: training-mode BatchNorm + SiLU as one
//!   op with a two-pass backward.
//!
//! The fast paths are on by default on the CPU. `IRDISTILL_REFERENCE_OPS=1`
//! (or [`set_reference_ops`]) switches back to candle's own ops, to measure
//! what the fast paths buy and to check that training ends the same.

pub mod bn_silu;
pub mod conv;

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, Layout, Storage, Tensor};
use std::sync::atomic::{AtomicU8, Ordering};

/// Thread settings candle reads once, at its first CPU op; call this at
/// the start of `main`, before any thread is spawned. A value already set
/// in the environment is kept.
///
/// - `RAYON_NUM_THREADS` = candle's own default (physical cores): when it
///   is unset, candle counts the physical cores again, by parsing
///   /proc/cpuinfo, on every matrix product (6 % of a training step here).
/// - `CANDLE_NUM_THREADS=1`: candle 0.11 splits element-wise ops over a
///   second, spin-waiting thread pool beside rayon's. With both pools (and
///   the data loader) on a small machine, its workers get descheduled and
///   the main thread spins for them: a third of a step on 2 cores, where
///   this setting halved the step time. Matrix products and the
///   [`conv`]/[`bn_silu`] kernels still run on all rayon threads.
pub fn configure_cpu_threads() {
    if std::env::var_os("RAYON_NUM_THREADS").is_none() {
        let n = candle_core::utils::get_num_threads();
        std::env::set_var("RAYON_NUM_THREADS", n.to_string());
    }
    if std::env::var_os("CANDLE_NUM_THREADS").is_none() {
        std::env::set_var("CANDLE_NUM_THREADS", "1");
    }
}

/// Runs `f` on a thread of a rayon pool of `RAYON_NUM_THREADS` threads
/// (see [`configure_cpu_threads`]), so that the kernels' parallel loops
/// start from a worker: called from any other thread, every one of them
/// is queued to the pool and the caller sleeps on a lock until it is done,
/// two context switches per op, thousands per step. Falls back to the
/// calling thread if the pool cannot be built.
pub fn on_compute_threads<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    match rayon::ThreadPoolBuilder::new()
        .thread_name(|i| format!("compute-{i}"))
        .build()
    {
        Ok(pool) => pool.install(f),
        Err(_) => f(),
    }
}

/// 0 = not decided yet (read the environment), 1 = fast, 2 = reference.
static MODE: AtomicU8 = AtomicU8::new(0);

/// Use candle's reference ops (true) or the fast paths (false, default).
pub fn set_reference_ops(reference: bool) {
    MODE.store(if reference { 2 } else { 1 }, Ordering::Relaxed);
}

/// True when candle's reference ops are in use.
pub fn reference_ops() -> bool {
    match MODE.load(Ordering::Relaxed) {
        0 => {
            let reference = std::env::var("IRDISTILL_REFERENCE_OPS")
                .map(|v| !v.is_empty() && v != "0")
                .unwrap_or(false);
            set_reference_ops(reference);
            reference
        }
        m => m == 2,
    }
}

/// `x [B, C, H, W]` ⊛ `w [O, C, k, k]` (+ `bias [O]`) with "stride" and
/// symmetric "padding": the fast path where it applies, else candle's.
pub fn conv2d(
    x: &Tensor,
    w: &Tensor,
    bias: Option<&Tensor>,
    stride: usize,
    padding: usize,
) -> candle_core::Result<Tensor> {
    if !reference_ops() && conv::supported(x, w) {
        return conv::conv2d(x, w, bias, stride, padding);
    }
    let y = x.conv2d(w, padding, stride, 1, 1)?;
    match bias {
        // [O] → [1, O, 1, 1]
        Some(b) => y.broadcast_add(&b.reshape((1, b.dim(0)?, 1, 1))?),
        None => Ok(y),
    }
}

/// The f32 data a custom op reads: `op` names it in the error for another
/// dtype or a strided layout (callers make their inputs contiguous).
fn contiguous_f32<'a>(s: &'a CpuStorage, l: &Layout, op: &str) -> candle_core::Result<&'a [f32]> {
    let data = match s {
        CpuStorage::F32(d) => d,
        other => candle_core::bail!("{op}: f32 only, got {:?}", other.dtype()),
    };
    match l.contiguous_offsets() {
        Some((start, end)) => Ok(&data[start..end]),
        None => candle_core::bail!("{op}: input must be contiguous"),
    }
}

/// [`contiguous_f32`] for a tensor's storage, which must be on the CPU.
fn storage_f32<'a>(s: &'a Storage, l: &Layout, op: &str) -> candle_core::Result<&'a [f32]> {
    match s {
        Storage::Cpu(s) => contiguous_f32(s, l, op),
        _ => candle_core::bail!("{op}: CPU tensors only"),
    }
}

/// The largest absolute element difference of two same-shaped tensors:
/// how the kernels' and the model's tests compare results.
#[cfg(test)]
pub(crate) fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}
