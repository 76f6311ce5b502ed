//! Exponential moving average of the model's weights and BatchNorm
//! statistics (ultralytics' ModelEMA): validation and export use it.

use anyhow::Result;
use candle_core::{Tensor, Var};

pub struct Ema {
    /// (name, the model's var, its average).
    pub entries: Vec<(String, Var, Tensor)>,
    pub updates: u64,
    pub decay: f64,
    pub tau: f64,
}

impl Ema {
    /// Starts at the current weights of `vars` (all of them: running stats too).
    pub fn new(vars: Vec<(String, Var)>) -> Result<Self> {
        let entries = vars
            .into_iter()
            .map(|(n, v)| {
                let t = v.as_tensor().detach().copy()?;
                Ok((n, v, t))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            entries,
            updates: 0,
            decay: 0.9999,
            tau: 2000.0,
        })
    }

    /// Current decay: ramps from 0 so early averages are not dominated by
    /// the random initial weights.
    pub fn current_decay(&self) -> f64 {
        self.decay * (1.0 - (-(self.updates as f64) / self.tau).exp())
    }

    pub fn update(&mut self) -> Result<()> {
        self.updates += 1;
        let d = self.current_decay();
        for (_, var, avg) in self.entries.iter_mut() {
            *avg = ((&*avg * d)? + (var.as_tensor().detach() * (1.0 - d))?)?;
        }
        Ok(())
    }

    pub fn tensors(&self) -> impl Iterator<Item = (&str, &Tensor)> {
        self.entries.iter().map(|(n, _, t)| (n.as_str(), t))
    }
}
