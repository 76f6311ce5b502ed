//! Optimizers with parameter groups and inspectable state (so `--resume`
//! can save and restore it): AdamW (decoupled weight decay, PyTorch
//! semantics) and SGD with Nesterov momentum (L2 decay, as PyTorch).
//! As in ultralytics, only convolution/linear weights decay; biases and
//! BatchNorm parameters do not.

use anyhow::{bail, Result};
use candle_core::{Tensor, Var};
use std::collections::BTreeMap;

/// Parameter groups as ultralytics builds them: conv weights decay;
/// BatchNorm scales and biases do not, and biases have their own warm-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Group {
    Decay,
    BnWeight,
    Bias,
}

impl Group {
    pub fn of(name: &str, var: &Var) -> Group {
        if name.ends_with(".bias") {
            Group::Bias
        } else if var.rank() >= 2 {
            Group::Decay
        } else {
            Group::BnWeight
        }
    }
}

/// A trainable tensor and its group.
pub struct Param {
    pub name: String,
    pub var: Var,
    pub group: Group,
}

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum OptimizerKind {
    #[value(name = "adamw")]
    AdamW,
    #[value(name = "sgd")]
    Sgd,
}

pub struct Optimizer {
    pub kind: OptimizerKind,
    pub params: Vec<Param>,
    /// AdamW: first and second moments; SGD: momentum buffer in `m`.
    m: Vec<Tensor>,
    v: Vec<Tensor>,
    pub step: u64,
    pub weight_decay: f64,
    /// AdamW beta1 / SGD momentum (warm-up ramps it).
    pub momentum: f64,
    pub beta2: f64,
    pub eps: f64,
}

impl Optimizer {
    pub fn new(
        kind: OptimizerKind,
        params: Vec<Param>,
        weight_decay: f64,
        momentum: f64,
    ) -> Result<Self> {
        let zeros = |p: &Param| p.var.as_tensor().zeros_like();
        let m = params
            .iter()
            .map(zeros)
            .collect::<candle_core::Result<Vec<_>>>()?;
        let v = params
            .iter()
            .map(zeros)
            .collect::<candle_core::Result<Vec<_>>>()?;
        Ok(Self {
            kind,
            params,
            m,
            v,
            step: 0,
            weight_decay,
            momentum,
            beta2: 0.999,
            eps: 1e-8,
        })
    }

    /// One update with learning rate `lr` (`lr_bias` for the bias group,
    /// which warm-up treats differently).
    pub fn step(
        &mut self,
        grads: &candle_core::backprop::GradStore,
        lr: f64,
        lr_bias: f64,
    ) -> Result<()> {
        self.step += 1;
        let t = self.step as i32;
        for (i, p) in self.params.iter().enumerate() {
            let Some(g) = grads.get(p.var.as_tensor()) else {
                continue;
            };
            // Detach: a gradient carries its op graph, and moments built
            // from it would chain every step's graph to the next (memory
            // grows without bound).
            let g = &g.detach();
            let w = &p.var.as_tensor().detach();
            let lr = if p.group == Group::Bias { lr_bias } else { lr };
            let wd = if p.group == Group::Decay {
                self.weight_decay
            } else {
                0.0
            };
            match self.kind {
                OptimizerKind::AdamW => {
                    let b1 = self.momentum;
                    let m = ((&self.m[i] * b1)? + (g * (1.0 - b1))?)?;
                    let v = ((&self.v[i] * self.beta2)? + (g.sqr()? * (1.0 - self.beta2))?)?;
                    let m_hat = (&m / (1.0 - b1.powi(t)))?;
                    let v_hat = (&v / (1.0 - self.beta2.powi(t)))?;
                    let update = (m_hat / (v_hat.sqrt()? + self.eps)?)?;
                    let decayed = (w * (1.0 - lr * wd))?;
                    p.var.set(&(decayed - (update * lr)?)?)?;
                    self.m[i] = m;
                    self.v[i] = v;
                }
                OptimizerKind::Sgd => {
                    let g = if wd > 0.0 {
                        (g + (w * wd)?)?
                    } else {
                        g.clone()
                    };
                    let buf = ((&self.m[i] * self.momentum)? + &g)?;
                    let nesterov = (g + (&buf * self.momentum)?)?;
                    p.var.set(&(w - (nesterov * lr)?)?)?;
                    self.m[i] = buf;
                }
            }
        }
        Ok(())
    }

    /// State tensors by name, for checkpoints.
    pub fn state(&self) -> BTreeMap<String, Tensor> {
        let mut out = BTreeMap::new();
        for (i, p) in self.params.iter().enumerate() {
            out.insert(format!("optim.m.{}", p.name), self.m[i].clone());
            out.insert(format!("optim.v.{}", p.name), self.v[i].clone());
        }
        out
    }

    /// Restores [`Optimizer::state`] output (and the step count).
    pub fn load_state(
        &mut self,
        tensors: &std::collections::HashMap<String, Tensor>,
        step: u64,
    ) -> Result<()> {
        for (i, p) in self.params.iter().enumerate() {
            for (kind, slot) in [("m", &mut self.m[i]), ("v", &mut self.v[i])] {
                let key = format!("optim.{kind}.{}", p.name);
                match tensors.get(&key) {
                    Some(t) if t.shape() == slot.shape() => *slot = t.clone(),
                    Some(t) => bail!(
                        "checkpoint tensor {key} has shape {:?}, expected {:?}",
                        t.shape(),
                        slot.shape()
                    ),
                    None => bail!("checkpoint lacks optimizer state {key}"),
                }
            }
        }
        self.step = step;
        Ok(())
    }
}

/// Learning-rate schedule: linear warm-up over `warmup_steps` (the bias
/// group starts at `warmup_bias_lr` and comes down, as ultralytics; for
/// AdamW that start is 0, "no higher than 0.01 for Adam"), then cosine
/// decay from `lr0` to `lr0 * lrf` at `total_steps`. The momentum ramp
/// applies to SGD only (ultralytics never changes Adam's betas).
#[derive(Debug, Clone, Copy)]
pub struct Schedule {
    pub lr0: f64,
    pub lrf: f64,
    pub warmup_steps: u64,
    pub total_steps: u64,
    pub warmup_bias_lr: f64,
    pub warmup_momentum: f64,
    pub momentum: f64,
}

impl Schedule {
    /// `(lr, lr_bias, momentum)` at `step` (0-based).
    pub fn at(&self, step: u64) -> (f64, f64, f64) {
        let span = (self.total_steps.max(1)) as f64;
        let progress = (step as f64 / span).min(1.0);
        let cosine =
            self.lrf + (1.0 - self.lrf) * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos());
        let lr = self.lr0 * cosine;
        if step < self.warmup_steps {
            let k = step as f64 / self.warmup_steps as f64;
            let lr_w = lr * k;
            let bias_w = self.warmup_bias_lr + (lr - self.warmup_bias_lr) * k;
            let mom = self.warmup_momentum + (self.momentum - self.warmup_momentum) * k;
            (lr_w, bias_w, mom)
        } else {
            (lr, lr, self.momentum)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn adamw_first_step_moves_by_lr() {
        // After one step m_hat = g and v_hat = g², so the update is lr·sign(g).
        let var = Var::from_slice(&[1.0f32, -2.0], 2, &Device::Cpu).unwrap();
        let params = vec![Param {
            name: "b".into(),
            var: var.clone(),
            group: Group::Bias,
        }];
        let mut opt = Optimizer::new(OptimizerKind::AdamW, params, 0.0, 0.9).unwrap();
        let loss = (var.as_tensor() * 3.0).unwrap().sum_all().unwrap();
        let grads = loss.backward().unwrap();
        opt.step(&grads, 0.1, 0.1).unwrap();
        let v: Vec<f32> = var.as_tensor().to_vec1().unwrap();
        assert!(
            (v[0] - 0.9).abs() < 1e-5 && (v[1] + 2.1).abs() < 1e-5,
            "{v:?}"
        );
    }

    #[test]
    fn sgd_nesterov_with_decay_matches_hand_computation() {
        // w = 2, g = 1, wd = 0.5 -> g' = 2; buf = 2; nesterov = 2 + 0.9·2 = 3.8; w = 2 − 0.1·3.8
        let var = Var::from_slice(&[2.0f32, 0.0, 0.0, 0.0], (2, 2), &Device::Cpu).unwrap();
        let params = vec![Param {
            name: "c.weight".into(),
            var: var.clone(),
            group: Group::Decay,
        }];
        let mut opt = Optimizer::new(OptimizerKind::Sgd, params, 0.5, 0.9).unwrap();
        let grads = var.as_tensor().sum_all().unwrap().backward().unwrap();
        opt.step(&grads, 0.1, 0.1).unwrap();
        let v: Vec<Vec<f32>> = var.as_tensor().to_vec2().unwrap();
        assert!((v[0][0] - 1.62).abs() < 1e-5, "{v:?}");
    }

    #[test]
    fn schedule_warms_up_then_decays() {
        let s = Schedule {
            lr0: 0.01,
            lrf: 0.01,
            warmup_steps: 10,
            total_steps: 100,
            warmup_bias_lr: 0.1,
            warmup_momentum: 0.8,
            momentum: 0.937,
        };
        assert_eq!(s.at(0).0, 0.0);
        assert!((s.at(0).1 - 0.1).abs() < 1e-12);
        assert!((s.at(0).2 - 0.8).abs() < 1e-12);
        let (lr10, b10, m10) = s.at(10);
        assert_eq!(lr10, b10);
        assert_eq!(m10, 0.937);
        assert!(s.at(50).0 < lr10 && s.at(100).0 > 0.0);
        assert!((s.at(100).0 - 0.0001).abs() < 1e-12);
    }
}
