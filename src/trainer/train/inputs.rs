//! From a loader's [`Batch`] (flat `f32` buffers) to the model's input
//! tensors: RGB `[B, 3, S, S]` and, when loaded, IR `[B, 1, S, S]`.

use super::loader::Batch;
use anyhow::Result;
use candle_core::{Device, Tensor};

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
