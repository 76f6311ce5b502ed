//! Convolution as one custom op: im2col + one matrix product forward,
//! matrix products + col2im backward.
//!
//! candle 0.11's CPU `conv2d` has a fast forward (im2col + gemm), but its
//! backward is slow: the input gradient goes through `conv_transpose2d`,
//! a hand-written loop, and it is computed even for the input image,
//! which needs none. Built from candle ops instead (im2col, matmul,
//! reshape, transpose, copy), one convolution would be five graph nodes,
//! and candle's backward pays a zero-filled buffer and an add for every
//! node's gradient. Here it is one node:
//!
//! ```text
//! forward   x [B, C, H, W] --im2col--> cols [C·k·k, B·N]      N = Ho·Wo
//!           y' = W [O, C·k·k] · cols  → [O, B·N] → y [B, O, Ho, Wo] (+ bias)
//! backward  dy' = dy as [O, B·N]
//!           dW = dy' · colsᵀ           (cols kept from the forward within a
//!                                       memory budget, else computed again)
//!           dx = col2im(Wᵀ · dy')      only when x needs a gradient
//!           dbias = Σ_columns dy'
//! ```
//!
//! The batch sits in the gemm's columns: one large product per
//! convolution instead of one per image (the deep levels are a few pixels
//! wide), and the weight gradient needs no sum over images.

use super::{contiguous_f32, storage_f32};
use candle_core::{CpuStorage, CustomOp2, CustomOp3, DType, Layout, Result, Shape, Tensor};
use rayon::prelude::*;
use std::mem::MaybeUninit;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};

/// Geometry of a square-kernel convolution (no dilation, one group).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConvGeometry {
    pub k: usize,
    pub stride: usize,
    pub padding: usize,
}

impl ConvGeometry {
    /// Output size along one axis of length `len_px`.
    pub fn out_len(&self, len_px: usize) -> Result<usize> {
        let padded = len_px + 2 * self.padding;
        if padded < self.k || self.stride == 0 {
            candle_core::bail!(
                "conv: input length {len_px} (+2×{} padding) is smaller than the {}×{} kernel",
                self.padding,
                self.k,
                self.k
            );
        }
        Ok((padded - self.k) / self.stride + 1)
    }
}

/// The sizes of one convolution.
#[derive(Debug, Clone, Copy)]
struct Dims {
    b: usize,
    c: usize,
    h: usize,
    w: usize,
    o: usize,
    ho: usize,
    wo: usize,
    geo: ConvGeometry,
}

impl Dims {
    fn of(x: &Shape, w: &Shape, geo: ConvGeometry) -> Result<Dims> {
        let (b, c, h, wd) = x.dims4()?;
        let (o, c_w, k, k2) = w.dims4()?;
        if c_w != c || k != k2 || k != geo.k {
            candle_core::bail!(
                "conv: weight {:?} does not fit input {:?} (square kernels, one group)",
                w.dims(),
                x.dims()
            );
        }
        Ok(Dims {
            b,
            c,
            h,
            w: wd,
            o,
            ho: geo.out_len(h)?,
            wo: geo.out_len(wd)?,
            geo,
        })
    }
    /// Output pixels per image.
    fn n(&self) -> usize {
        self.ho * self.wo
    }
    /// Rows of the column matrix: C·k·k.
    fn ckk(&self) -> usize {
        self.c * self.geo.k * self.geo.k
    }
}

/// The fast convolution: `x [B, C, H, W]`, `w [O, C, k, k]`, `bias [O]`
/// → `[B, O, Ho, Wo]`; same result as candle's
/// `x.conv2d(w, padding, stride, 1, 1)` plus the bias.
pub fn conv2d(
    x: &Tensor,
    w: &Tensor,
    bias: Option<&Tensor>,
    stride: usize,
    padding: usize,
) -> Result<Tensor> {
    let k = w.dim(2)?;
    let op = Conv2dOp {
        geo: ConvGeometry { k, stride, padding },
        cols: Mutex::new(None),
    };
    // validated here, so that a bad shape is an error before any work
    Dims::of(x.shape(), w.shape(), op.geo)?;
    let (x, w) = (x.contiguous()?, w.contiguous()?);
    match bias {
        Some(b) => x.apply_op3(&w, &b.contiguous()?, op),
        None => x.apply_op2(&w, op),
    }
}

/// The convolution op (CustomOp2 without a bias, CustomOp3 with one).
/// One per call: it lives in the graph until the backward pass.
struct Conv2dOp {
    geo: ConvGeometry,
    /// The forward's column matrix, for the backward's weight gradient.
    cols: Mutex<Option<KeptCols>>,
}

/// Bytes of column matrices kept from forward passes, all convolutions
/// together.
static KEPT_BYTES: AtomicUsize = AtomicUsize::new(0);

/// The budget for [`KEPT_BYTES`]: `IRDISTILL_CONV_CACHE_MB` (default 512
/// MiB; 0 = always recompute). Over it, a convolution computes its columns
/// again in the backward pass (about 7 % of a step at imgsz 128, where
/// every layer fits): same numbers, more time, less memory.
fn keep_budget_bytes() -> usize {
    static BUDGET: OnceLock<usize> = OnceLock::new();
    *BUDGET.get_or_init(|| {
        std::env::var("IRDISTILL_CONV_CACHE_MB")
            .ok()
            .and_then(|v| v.parse::<usize>().ok())
            .unwrap_or(512)
            << 20
    })
}

/// A column matrix counted against the budget while it lives.
struct KeptCols(Vec<f32>);

impl KeptCols {
    /// Keeps `cols` if the budget allows, else hands them back.
    fn try_keep(cols: Vec<f32>) -> std::result::Result<KeptCols, Vec<f32>> {
        let bytes = cols.len() * size_of::<f32>();
        let budget = keep_budget_bytes();
        let taken = KEPT_BYTES.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |held| {
            (held + bytes <= budget).then_some(held + bytes)
        });
        match taken {
            Ok(_) => Ok(KeptCols(cols)),
            Err(_) => Err(cols),
        }
    }
}

impl Drop for KeptCols {
    fn drop(&mut self) {
        KEPT_BYTES.fetch_sub(self.0.len() * size_of::<f32>(), Ordering::Relaxed);
    }
}

impl Conv2dOp {
    fn forward(
        &self,
        x: (&CpuStorage, &Layout),
        w: (&CpuStorage, &Layout),
        bias: Option<(&CpuStorage, &Layout)>,
    ) -> Result<(CpuStorage, Shape)> {
        let d = Dims::of(x.1.shape(), w.1.shape(), self.geo)?;
        let xs = contiguous_f32(x.0, x.1, "conv2d")?;
        let ws = contiguous_f32(w.0, w.1, "conv2d")?;
        let bias = bias
            .map(|(s, l)| contiguous_f32(s, l, "conv2d"))
            .transpose()?;
        let (bn, ckk) = (d.b * d.n(), d.ckk());
        let cols = im2col(xs, d);
        // y' [O, B·N] = W [O, C·k·k] · cols [C·k·k, B·N]
        let mut yt = uninit_vec(d.o * bn);
        gemm(&mut yt, (d.o, bn, ckk), (ws, ckk, 1), (&cols, bn, 1));
        // Kept for the backward pass when the budget allows (dropped with
        // the op when no backward comes: inference, or no gradient).
        if let Ok(kept) = KeptCols::try_keep(cols) {
            *self.cols.lock().unwrap_or_else(|e| e.into_inner()) = Some(kept);
        }
        // y'[o, (b, n)] → y[b, o, n], + bias[o]
        let n = d.n();
        let mut y = uninit_vec(d.b * d.o * n);
        y.par_chunks_mut(n).enumerate().for_each(|(row, out)| {
            let (img, o) = (row / d.o, row % d.o);
            let src = &yt[o * bn + img * n..][..n];
            let add = bias.map_or(0.0, |b| b[o]);
            for (dst, &v) in out.iter_mut().zip(src) {
                *dst = v + add;
            }
        });
        Ok((CpuStorage::F32(y), Shape::from((d.b, d.o, d.ho, d.wo))))
    }

    /// (dx if `need_dx`, dW, dbias if `need_dbias`).
    fn backward(
        &self,
        x: &Tensor,
        w: &Tensor,
        grad: &Tensor,
        need_dx: bool,
        need_dbias: bool,
    ) -> Result<(Option<Tensor>, Tensor, Option<Tensor>)> {
        let d = Dims::of(x.shape(), w.shape(), self.geo)?;
        let grad = grad.contiguous()?;
        let (xs, xl) = x.storage_and_layout();
        let (ws, wl) = w.storage_and_layout();
        let (gs, gl) = grad.storage_and_layout();
        let (xd, wd, gd) = (
            storage_f32(&xs, xl, "conv2d")?,
            storage_f32(&ws, wl, "conv2d")?,
            storage_f32(&gs, gl, "conv2d")?,
        );
        let (n, bn, ckk) = (d.n(), d.b * d.n(), d.ckk());
        // dy [B, O, N] → dy' [O, B·N]; dbias[o] = Σ dy'[o, ·]
        let mut dyt = uninit_vec(d.o * bn);
        let dbias: Vec<f32> = dyt
            .par_chunks_mut(bn)
            .enumerate()
            .map(|(o, row)| {
                let mut sum = 0f64;
                for (img, seg) in row.chunks_mut(n).enumerate() {
                    let src = &gd[(img * d.o + o) * n..][..n];
                    seg.copy_from_slice(src);
                    sum += src.iter().map(|&v| v as f64).sum::<f64>();
                }
                sum as f32
            })
            .collect();
        // dW [O, C·k·k] = dy' [O, B·N] · colsᵀ [B·N, C·k·k]
        let kept = self.cols.lock().unwrap_or_else(|e| e.into_inner()).take();
        let cols = match &kept {
            Some(k) => &k.0,
            None => &im2col(xd, d),
        };
        let mut dw = uninit_vec(d.o * ckk);
        gemm(&mut dw, (d.o, ckk, bn), (&dyt, bn, 1), (cols, 1, bn));
        drop(kept);
        let dx = if need_dx {
            // dcols [C·k·k, B·N] = Wᵀ [C·k·k, O] · dy' [O, B·N]
            let mut dcols = uninit_vec(ckk * bn);
            gemm(&mut dcols, (ckk, bn, d.o), (wd, 1, ckk), (&dyt, bn, 1));
            Some(col2im(&dcols, d))
        } else {
            None
        };
        drop((xs, ws, gs));
        let dev = x.device();
        let dx = dx
            .map(|v| Tensor::from_vec(v, (d.b, d.c, d.h, d.w), dev))
            .transpose()?;
        let dw = Tensor::from_vec(dw, w.shape(), dev)?;
        let dbias = need_dbias
            .then(|| Tensor::from_vec(dbias, d.o, dev))
            .transpose()?;
        Ok((dx, dw, dbias))
    }
}

impl CustomOp2 for Conv2dOp {
    fn name(&self) -> &'static str {
        "irdistill-conv2d"
    }

    fn cpu_fwd(
        &self,
        sx: &CpuStorage,
        lx: &Layout,
        sw: &CpuStorage,
        lw: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        self.forward((sx, lx), (sw, lw), None)
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        // the input image needs no gradient: candle would drop it anyway
        let (dx, dw, _) = self.backward(x, w, grad, x.track_op(), false)?;
        Ok((dx, Some(dw)))
    }
}

impl CustomOp3 for Conv2dOp {
    fn name(&self) -> &'static str {
        "irdistill-conv2d-bias"
    }

    fn cpu_fwd(
        &self,
        sx: &CpuStorage,
        lx: &Layout,
        sw: &CpuStorage,
        lw: &Layout,
        sb: &CpuStorage,
        lb: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        self.forward((sx, lx), (sw, lw), Some((sb, lb)))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _bias: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (dx, dw, db) = self.backward(x, w, grad, x.track_op(), true)?;
        Ok((dx, Some(dw), db))
    }
}

/// A buffer the caller overwrites entirely before reading it (gemm with
/// `read_dst = false`, the scatters above): zeroing it first would be one
/// more pass over memory.
fn uninit_vec(len: usize) -> Vec<f32> {
    let mut v = Vec::with_capacity(len);
    // SAFETY: f32 has no invalid bit patterns, and every caller writes all
    // `len` entries before any is read.
    #[allow(clippy::uninit_vec)]
    unsafe {
        v.set_len(len)
    };
    v
}

/// `dst [m, n]` (row-major) = `lhs [m, k]` · `rhs [k, n]`, each operand
/// given as (data, row stride, column stride), on rayon's threads.
fn gemm(
    dst: &mut [f32],
    (m, n, k): (usize, usize, usize),
    (lhs, lhs_rs, lhs_cs): (&[f32], usize, usize),
    (rhs, rhs_rs, rhs_cs): (&[f32], usize, usize),
) {
    assert!(dst.len() >= m * n, "gemm: destination too small");
    assert!(
        m == 0 || k == 0 || lhs.len() > (m - 1) * lhs_rs + (k - 1) * lhs_cs,
        "gemm: lhs too small"
    );
    assert!(
        k == 0 || n == 0 || rhs.len() > (k - 1) * rhs_rs + (n - 1) * rhs_cs,
        "gemm: rhs too small"
    );
    let threads = rayon::current_num_threads();
    let parallelism = if threads > 1 {
        gemm::Parallelism::Rayon(threads)
    } else {
        gemm::Parallelism::None
    };
    // SAFETY: the bounds are checked above; dst does not alias lhs or rhs
    // (it is a distinct &mut).
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            n as isize,
            false,
            lhs.as_ptr(),
            lhs_cs as isize,
            lhs_rs as isize,
            rhs.as_ptr(),
            rhs_cs as isize,
            rhs_rs as isize,
            0.0,
            1.0,
            false,
            false,
            false,
            parallelism,
        )
    }
}

/// `x [B, C, H, W]` → `[C·k·k, B·N]`: row `(c, ky, kx)`, column `(b, oy,
/// ox)` holds `x[b, c, oy·s + ky − p, ox·s + kx − p]` (0 outside).
fn im2col(x: &[f32], d: Dims) -> Vec<f32> {
    let (k, n) = (d.geo.k, d.n());
    let len = d.ckk() * d.b * n;
    // Every entry is written below (padding as 0): no zeroing pass first.
    let mut cols: Vec<f32> = Vec::with_capacity(len);
    // One channel fills its k·k rows, for every image: disjoint writes.
    cols.spare_capacity_mut()[..len]
        .par_chunks_mut(k * k * d.b * n)
        .enumerate()
        .for_each(|(ch, rows)| {
            for (tap, row) in rows.chunks_mut(d.b * n).enumerate() {
                for (img, seg) in row.chunks_mut(n).enumerate() {
                    let plane = &x[(img * d.c + ch) * d.h * d.w..][..d.h * d.w];
                    fill_row(seg, plane, d, (tap / k, tap % k));
                }
            }
        });
    // SAFETY: fill_row wrote all `len` entries.
    unsafe { cols.set_len(len) };
    cols
}

/// One image's part of an im2col row: kernel tap (ky, kx) read at every
/// output position; every entry is written (0 in the padding).
fn fill_row(row: &mut [MaybeUninit<f32>], plane: &[f32], d: Dims, (ky, kx): (usize, usize)) {
    let s = d.geo.stride;
    let (lo, hi) = valid_columns(d, kx);
    for oy in 0..d.ho {
        let out = &mut row[oy * d.wo..][..d.wo];
        let Some(iy) = input_index(oy, ky, d.geo, d.h) else {
            out.fill(MaybeUninit::new(0.0)); // padding row
            continue;
        };
        out[..lo].fill(MaybeUninit::new(0.0));
        out[hi..].fill(MaybeUninit::new(0.0));
        if lo == hi {
            continue;
        }
        // input column of output column `lo`
        let first = lo * s + kx - d.geo.padding;
        let src = &plane[iy * d.w + first..];
        if s == 1 {
            for (o, &v) in out[lo..hi].iter_mut().zip(src) {
                o.write(v);
            }
        } else {
            for (o, &v) in out[lo..hi].iter_mut().zip(src.iter().step_by(s)) {
                o.write(v);
            }
        }
    }
}

/// Output columns `lo..hi` whose kernel tap `kx` lands inside the image
/// (the others read padding).
fn valid_columns(d: Dims, kx: usize) -> (usize, usize) {
    let (s, p) = (d.geo.stride, d.geo.padding);
    // ox·s + kx − p ≥ 0  and  ox·s + kx − p < w
    let lo = p.saturating_sub(kx).div_ceil(s).min(d.wo);
    let hi = (d.w + p).saturating_sub(kx).div_ceil(s).clamp(lo, d.wo);
    (lo, hi)
}

/// The input row that output row `oy` reads with kernel tap `ky`, or None
/// in the padding.
fn input_index(oy: usize, ky: usize, geo: ConvGeometry, h: usize) -> Option<usize> {
    (oy * geo.stride + ky)
        .checked_sub(geo.padding)
        .filter(|&iy| iy < h)
}

/// The adjoint of [`im2col`]: sums each column entry back onto the input
/// pixel it was read from. `[C·k·k, B·N]` → `[B, C, H, W]`.
fn col2im(cols: &[f32], d: Dims) -> Vec<f32> {
    let (k, n, bn) = (d.geo.k, d.n(), d.b * d.n());
    let mut x = vec![0f32; d.b * d.c * d.h * d.w];
    // One (image, channel) plane gathers its k·k row segments: disjoint
    // writes.
    x.par_chunks_mut(d.h * d.w)
        .enumerate()
        .for_each(|(plane_idx, plane)| {
            let (img, ch) = (plane_idx / d.c, plane_idx % d.c);
            for tap in 0..k * k {
                let row = &cols[(ch * k * k + tap) * bn + img * n..][..n];
                add_row(plane, row, d, (tap / k, tap % k));
            }
        });
    x
}

/// The adjoint of [`fill_row`]: adds one row segment back onto the plane.
fn add_row(plane: &mut [f32], row: &[f32], d: Dims, (ky, kx): (usize, usize)) {
    let s = d.geo.stride;
    let (lo, hi) = valid_columns(d, kx);
    if lo >= hi {
        return;
    }
    let first = lo * s + kx - d.geo.padding;
    for oy in 0..d.ho {
        let Some(iy) = input_index(oy, ky, d.geo, d.h) else {
            continue;
        };
        let grads = &row[oy * d.wo + lo..][..hi - lo];
        let dst = &mut plane[iy * d.w + first..];
        if s == 1 {
            for (x, g) in dst.iter_mut().zip(grads) {
                *x += g;
            }
        } else {
            for (x, g) in dst.iter_mut().step_by(s).zip(grads) {
                *x += g;
            }
        }
    }
}

/// True when [`conv2d`] can replace candle's conv for these tensors.
pub fn supported(x: &Tensor, w: &Tensor) -> bool {
    x.device().is_cpu() && x.dtype() == DType::F32 && w.dtype() == DType::F32
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trainer::ops::max_abs_diff;
    use candle_core::{Device, Var};

    /// Forward and both gradients against candle's reference conv2d, for
    /// the kernel/stride/padding combinations the models use and odd sizes.
    #[test]
    fn matches_candle_conv_and_its_gradients() -> Result<()> {
        let dev = Device::Cpu;
        let cases = [
            // (b, c, o, h, w, k, stride, padding)
            (2, 3, 4, 9, 7, 3, 2, 1),
            (3, 5, 6, 8, 8, 3, 1, 1),
            (2, 4, 3, 6, 5, 1, 1, 0),
            (1, 2, 3, 7, 7, 1, 2, 0),
            (2, 3, 2, 5, 6, 5, 1, 2),
            (1, 2, 2, 4, 4, 3, 2, 0),
            // maps narrower than the kernel's reach: taps that miss every column
            (2, 2, 3, 1, 1, 3, 1, 1),
            (1, 3, 2, 3, 2, 5, 1, 2),
            (2, 2, 2, 3, 2, 3, 1, 1),
            // (stride 2 on such maps: narrow_strided_maps_match_a_subsampled_stride_1_conv)
        ];
        for (b, c, o, h, w, k, s, p) in cases {
            let x = Var::randn(0f32, 1., (b, c, h, w), &dev)?;
            let wt = Var::randn(0f32, 1., (o, c, k, k), &dev)?;
            let bias = Var::randn(0f32, 1., o, &dev)?;
            // a non-trivial upstream gradient: weight the outputs
            let y_ref = x
                .conv2d(&wt, p, s, 1, 1)?
                .broadcast_add(&bias.reshape((1, o, 1, 1))?)?;
            let g = Tensor::randn(0f32, 1., y_ref.shape(), &dev)?;
            let y_fast = conv2d(&x, &wt, Some(&bias), s, p)?;
            assert_eq!(
                y_fast.dims(),
                y_ref.dims(),
                "case {:?}",
                (b, c, o, h, w, k, s, p)
            );
            assert!(max_abs_diff(&y_fast, &y_ref) < 1e-4);

            let gr = (y_ref * &g)?.sum_all()?.backward()?;
            let gf = (y_fast * &g)?.sum_all()?.backward()?;
            for v in [&x, &wt, &bias] {
                let (a, bb) = (gr.get(v).unwrap(), gf.get(v).unwrap());
                let d = max_abs_diff(a, bb);
                assert!(
                    d < 1e-3,
                    "gradient differs by {d} in case {:?}",
                    (b, c, o, h, w, k, s, p)
                );
            }
        }
        Ok(())
    }

    /// Stride-2 taps that miss every column of a narrow map. candle's own
    /// strided conv2d backward gives a wrongly shaped input gradient there,
    /// so the reference is its stride-1 conv, subsampled at every second
    /// row and column (index_select, differentiable).
    #[test]
    fn narrow_strided_maps_match_a_subsampled_stride_1_conv() -> Result<()> {
        let dev = Device::Cpu;
        for (c, o, h, w, k) in [
            (2, 2, 3, 2, 3),
            (3, 2, 2, 3, 5),
            (2, 3, 1, 2, 3),
            (2, 2, 5, 4, 1),
        ] {
            let (s, p) = (2, k / 2);
            let x = Var::randn(0f32, 1., (2, c, h, w), &dev)?;
            let wt = Var::randn(0f32, 1., (o, c, k, k), &dev)?;
            let bias = Var::randn(0f32, 1., o, &dev)?;
            let every_second = |len: usize| {
                let idx: Vec<u32> = (0..len as u32).step_by(s).collect();
                Tensor::new(idx, &dev)
            };
            let full = x.conv2d(&wt, p, 1, 1, 1)?; // [B, O, H', W'] at stride 1
            let (_, _, h1, w1) = full.dims4()?;
            let y_ref = full
                .index_select(&every_second(h1)?, 2)?
                .index_select(&every_second(w1)?, 3)?
                .broadcast_add(&bias.reshape((1, o, 1, 1))?)?;
            let y_fast = conv2d(&x, &wt, Some(&bias), s, p)?;
            let case = (c, o, h, w, k);
            assert_eq!(y_fast.dims(), y_ref.dims(), "case {case:?}");
            assert!(max_abs_diff(&y_fast, &y_ref) < 1e-4, "case {case:?}");
            let g = Tensor::randn(0f32, 1., y_ref.shape(), &dev)?;
            let gr = (y_ref * &g)?.sum_all()?.backward()?;
            let gf = (y_fast * &g)?.sum_all()?.backward()?;
            for v in [&x, &wt, &bias] {
                let d = max_abs_diff(gr.get(v).unwrap(), gf.get(v).unwrap());
                assert!(d < 1e-3, "gradient differs by {d} in case {case:?}");
            }
        }
        Ok(())
    }

    /// col2im is the adjoint of im2col: <im2col(x), y> = <x, col2im(y)>,
    /// also for strided taps that miss every column of a narrow map.
    #[test]
    fn col2im_is_the_adjoint_of_im2col() -> Result<()> {
        let dev = Device::Cpu;
        // (c, h, w, k, stride, padding)
        let cases = [
            (3, 7, 6, 3, 2, 1),
            (2, 3, 2, 3, 2, 1),
            (3, 2, 3, 5, 2, 2),
            (2, 5, 4, 1, 2, 0),
        ];
        for (c, h, w, k, stride, padding) in cases {
            let geo = ConvGeometry { k, stride, padding };
            let x = Tensor::randn(0f32, 1., (2, c, h, w), &dev)?;
            let wt = Tensor::zeros((4, c, k, k), DType::F32, &dev)?;
            let d = Dims::of(x.shape(), wt.shape(), geo)?;
            let xv = x.flatten_all()?.to_vec1::<f32>()?;
            let cols = im2col(&xv, d);
            let y: Vec<f32> = Tensor::randn(0f32, 1., cols.len(), &dev)?.to_vec1()?;
            let back = col2im(&y, d);
            let dot =
                |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(p, q)| (p * q) as f64).sum::<f64>();
            let (lhs, rhs) = (dot(&cols, &y), dot(&xv, &back));
            assert!(
                (lhs - rhs).abs() < 1e-4 * lhs.abs().max(1.0),
                "{lhs} vs {rhs} in case {:?}",
                (c, h, w, k, stride, padding)
            );
        }
        Ok(())
    }

    /// The image needs no gradient: the fast path computes none for it.
    #[test]
    fn no_gradient_for_a_plain_input() -> Result<()> {
        let dev = Device::Cpu;
        let x = Tensor::randn(0f32, 1., (1, 3, 8, 8), &dev)?;
        let wt = Var::randn(0f32, 1., (2, 3, 3, 3), &dev)?;
        let grads = conv2d(&x, &wt, None, 2, 1)?.sum_all()?.backward()?;
        assert!(grads.get(&x).is_none());
        assert!(grads.get(&wt).is_some());
        Ok(())
    }

    #[test]
    fn shape_errors_are_errors() {
        let dev = Device::Cpu;
        let x = Tensor::zeros((1, 3, 2, 2), DType::F32, &dev).unwrap();
        let w = Tensor::zeros((2, 4, 3, 3), DType::F32, &dev).unwrap();
        assert!(conv2d(&x, &w, None, 1, 0).is_err());
        let w = Tensor::zeros((2, 3, 5, 5), DType::F32, &dev).unwrap();
        assert!(conv2d(&x, &w, None, 1, 0).is_err());
    }
}
