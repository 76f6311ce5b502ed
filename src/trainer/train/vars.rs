//! A `VarMap`'s variables by name: listed in a stable (sorted) order, so
//! that optimizer state, EMA and checkpoints line up run after run, and set
//! from named tensors (checkpoints, EMA averages).

use anyhow::{ensure, Context, Result};
use candle_core::{Tensor, Var};
use candle_nn::VarMap;
use std::collections::HashMap;

/// Named vars of `varmap`, sorted by name.
pub fn named_vars(varmap: &VarMap) -> Vec<(String, Var)> {
    let data = varmap.data().lock().expect("VarMap mutex poisoned");
    let mut v: Vec<(String, Var)> = data.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

/// Sets every var of `varmap` from `tensors` (names must match); `what`
/// names the source in errors.
pub fn load_into(varmap: &VarMap, tensors: &HashMap<String, Tensor>, what: &str) -> Result<()> {
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
