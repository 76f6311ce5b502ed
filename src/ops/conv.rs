//! Convolution as im2col + matrix product, with a backward pass that is
//! matrix products too.
//!
//! candle 0.11's CPU `conv2d` has a fast forward (im2col + gemm), but its
//! backward is slow: the input gradient goes through `conv_transpose2d`,
//! a hand-written loop, and it is computed even for the input image,
//! which needs none. Here a convolution is
//!
//! ```text
//! x [B, C, H, W] --im2col--> cols [B, C·k·k, Ho·Wo]
//! y = W [O, C·k·k] · cols   (one gemm per image)   → [B, O, Ho, Wo]
//! ```
//!
//! so candle's autograd differentiates the product with gemms, and only
//! [`Im2Col`]'s backward (col2im, a scatter-add) is written here. When `x`
//! needs no gradient (the image), candle never calls that backward.
//! 1×1 convolutions with stride 1 skip im2col entirely: `x` viewed as
//! `[B, C, H·W]` already is its own column matrix.

use super::contiguous_f32;
use candle_core::{CpuStorage, CustomOp1, DType, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

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

/// The fast convolution: `x [B, C, H, W]`, `w [O, C, k, k]` →
/// `[B, O, Ho, Wo]`; same result as `x.conv2d(w, padding, stride, 1, 1)`.
pub fn conv2d(x: &Tensor, w: &Tensor, stride: usize, padding: usize) -> Result<Tensor> {
    let (b, c, h, wd) = x.dims4()?;
    let (o, c_w, k, k2) = w.dims4()?;
    if c_w != c || k != k2 {
        candle_core::bail!(
            "conv: weight {:?} does not fit input {:?} (square kernels, one group)",
            w.dims(),
            x.dims()
        );
    }
    let geo = ConvGeometry { k, stride, padding };
    let (ho, wo) = (geo.out_len(h)?, geo.out_len(wd)?);
    // cols: [B, C·k·k, Ho·Wo]
    let cols = if k == 1 && stride == 1 && padding == 0 {
        x.reshape((b, c, h * wd))?
    } else {
        x.contiguous()?.apply_op1(Im2Col(geo))?
    };
    // [O, C·k·k] broadcast over the batch (stride 0: no copy) · cols
    let w2 = w.reshape((o, c * k * k))?.broadcast_left(b)?;
    w2.matmul(&cols)?.reshape((b, o, ho, wo))
}

/// `[B, C, H, W]` → `[B, C·k·k, Ho·Wo]`: row `(c, ky, kx)`, column
/// `(oy, ox)` holds `x[c, oy·s + ky − p, ox·s + kx − p]` (0 outside).
#[derive(Debug, Clone, Copy)]
pub struct Im2Col(pub ConvGeometry);

/// The adjoint of [`Im2Col`]: sums each column entry back onto the input
/// pixel it was read from. `[B, C·k·k, Ho·Wo]` → `[B, C, H, W]`.
#[derive(Debug, Clone, Copy)]
pub struct Col2Im {
    pub geo: ConvGeometry,
    pub h: usize,
    pub w: usize,
}

impl CustomOp1 for Im2Col {
    fn name(&self) -> &'static str {
        "irdistill-im2col"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = contiguous_f32(s, l, self.name())?;
        let (b, c, h, w) = l.shape().dims4()?;
        let geo = self.0;
        let (ho, wo) = (geo.out_len(h)?, geo.out_len(w)?);
        let (k, n) = (geo.k, ho * wo);
        let mut cols = vec![0f32; b * c * k * k * n];
        // One (image, channel) plane fills its k·k rows: disjoint writes.
        cols.par_chunks_mut(k * k * n)
            .zip(x.par_chunks(h * w))
            .for_each(|(rows, plane)| {
                for ky in 0..k {
                    for kx in 0..k {
                        let row = &mut rows[(ky * k + kx) * n..][..n];
                        fill_row(row, plane, (h, w), (ho, wo), (ky, kx), geo);
                    }
                }
            });
        Ok((CpuStorage::F32(cols), Shape::from((b, c * k * k, n))))
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad_res: &Tensor) -> Result<Option<Tensor>> {
        let (_, _, h, w) = arg.dims4()?;
        let col2im = Col2Im { geo: self.0, h, w };
        Ok(Some(grad_res.contiguous()?.apply_op1_no_bwd(&col2im)?))
    }
}

/// One im2col row: kernel tap (ky, kx) read at every output position.
fn fill_row(
    row: &mut [f32],
    plane: &[f32],
    (h, w): (usize, usize),
    (ho, wo): (usize, usize),
    (ky, kx): (usize, usize),
    geo: ConvGeometry,
) {
    let (s, p) = (geo.stride, geo.padding as isize);
    for oy in 0..ho {
        let iy = (oy * s + ky) as isize - p;
        let out = &mut row[oy * wo..][..wo];
        if iy < 0 || iy >= h as isize {
            continue; // padding row: stays 0
        }
        let src = &plane[iy as usize * w..][..w];
        for (ox, o) in out.iter_mut().enumerate() {
            let ix = (ox * s + kx) as isize - p;
            if ix >= 0 && ix < w as isize {
                *o = src[ix as usize];
            }
        }
    }
}

impl CustomOp1 for Col2Im {
    fn name(&self) -> &'static str {
        "irdistill-col2im"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let cols = contiguous_f32(s, l, self.name())?;
        let (b, ckk, n) = l.shape().dims3()?;
        let geo = self.geo;
        let (h, w, k) = (self.h, self.w, geo.k);
        let (ho, wo) = (geo.out_len(h)?, geo.out_len(w)?);
        if ckk % (k * k) != 0 || n != ho * wo {
            candle_core::bail!(
                "col2im: columns {:?} do not fit a {k}×{k} kernel over {h}×{w}",
                l.dims()
            );
        }
        let c = ckk / (k * k);
        let mut x = vec![0f32; b * c * h * w];
        // One (image, channel) plane gathers its k·k rows: disjoint writes.
        x.par_chunks_mut(h * w)
            .zip(cols.par_chunks(k * k * n))
            .for_each(|(plane, rows)| {
                for ky in 0..k {
                    for kx in 0..k {
                        let row = &rows[(ky * k + kx) * n..][..n];
                        add_row(plane, row, (h, w), (ho, wo), (ky, kx), geo);
                    }
                }
            });
        Ok((CpuStorage::F32(x), Shape::from((b, c, h, w))))
    }
}

/// The adjoint of [`fill_row`]: adds one row back onto the plane.
fn add_row(
    plane: &mut [f32],
    row: &[f32],
    (h, w): (usize, usize),
    (ho, wo): (usize, usize),
    (ky, kx): (usize, usize),
    geo: ConvGeometry,
) {
    let (s, p) = (geo.stride, geo.padding as isize);
    for oy in 0..ho {
        let iy = (oy * s + ky) as isize - p;
        if iy < 0 || iy >= h as isize {
            continue;
        }
        let dst = &mut plane[iy as usize * w..][..w];
        for (ox, g) in row[oy * wo..][..wo].iter().enumerate() {
            let ix = (ox * s + kx) as isize - p;
            if ix >= 0 && ix < w as isize {
                dst[ix as usize] += g;
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
    use candle_core::{Device, Var};

    fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
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
        ];
        for (b, c, o, h, w, k, s, p) in cases {
            let x = Var::randn(0f32, 1., (b, c, h, w), &dev)?;
            let wt = Var::randn(0f32, 1., (o, c, k, k), &dev)?;
            // a non-trivial upstream gradient: weight the outputs
            let y_ref = x.conv2d(&wt, p, s, 1, 1)?;
            let g = Tensor::randn(0f32, 1., y_ref.shape(), &dev)?;
            let y_fast = conv2d(&x, &wt, s, p)?;
            assert_eq!(
                y_fast.dims(),
                y_ref.dims(),
                "case {:?}",
                (b, c, o, h, w, k, s, p)
            );
            assert!(max_abs_diff(&y_fast, &y_ref) < 1e-4);

            let gr = (y_ref * &g)?.sum_all()?.backward()?;
            let gf = (y_fast * &g)?.sum_all()?.backward()?;
            for v in [&x, &wt] {
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

    /// col2im is the adjoint of im2col: <im2col(x), y> = <x, col2im(y)>.
    #[test]
    fn col2im_is_the_adjoint_of_im2col() -> Result<()> {
        let dev = Device::Cpu;
        let geo = ConvGeometry {
            k: 3,
            stride: 2,
            padding: 1,
        };
        let x = Tensor::randn(0f32, 1., (2, 3, 7, 6), &dev)?;
        let cols = x.apply_op1_no_bwd(&Im2Col(geo))?;
        let y = Tensor::randn(0f32, 1., cols.shape(), &dev)?;
        let back = y.apply_op1_no_bwd(&Col2Im { geo, h: 7, w: 6 })?;
        let lhs = (cols * &y)?.sum_all()?.to_scalar::<f32>()?;
        let rhs = (x * back)?.sum_all()?.to_scalar::<f32>()?;
        assert!(
            (lhs - rhs).abs() < 1e-3 * lhs.abs().max(1.0),
            "{lhs} vs {rhs}"
        );
        Ok(())
    }

    /// The image needs no gradient: the fast path computes none for it.
    #[test]
    fn no_gradient_for_a_plain_input() -> Result<()> {
        let dev = Device::Cpu;
        let x = Tensor::randn(0f32, 1., (1, 3, 8, 8), &dev)?;
        let wt = Var::randn(0f32, 1., (2, 3, 3, 3), &dev)?;
        let grads = conv2d(&x, &wt, 2, 1)?.sum_all()?.backward()?;
        assert!(grads.get(&x).is_none());
        assert!(grads.get(&wt).is_some());
        Ok(())
    }

    #[test]
    fn shape_errors_are_errors() {
        let dev = Device::Cpu;
        let x = Tensor::zeros((1, 3, 2, 2), DType::F32, &dev).unwrap();
        let w = Tensor::zeros((2, 4, 3, 3), DType::F32, &dev).unwrap();
        assert!(conv2d(&x, &w, 1, 0).is_err());
        let w = Tensor::zeros((2, 3, 5, 5), DType::F32, &dev).unwrap();
        assert!(conv2d(&x, &w, 1, 0).is_err());
    }
}
