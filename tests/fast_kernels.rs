//! The fast CPU kernels (`irdistill::trainer::ops`) against candle's reference ops
//! on a whole student: one training-mode forward and backward, each f32
//! gradient compared with the same computation in f64. The fast path must
//! be as close to the f64 truth as candle's own f32 ops are.

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};
use irdistill::trainer::model::{trainable_vars, ModelConfig, YoloV8};
use std::collections::BTreeMap;

fn student(dtype: DType, weights: Option<&VarMap>) -> (VarMap, YoloV8) {
    let cfg = ModelConfig {
        scale: "student-p".into(),
        nc: 2,
        names: vec!["person".into(), "car".into()],
        imgsz: 64,
        fusion: None,
    };
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, dtype, &Device::Cpu);
    let model = YoloV8::load(vb, &cfg).unwrap();
    if let Some(src) = weights {
        let src = src.data().lock().unwrap();
        for (name, var) in varmap.data().lock().unwrap().iter() {
            var.set(&src[name].as_tensor().to_dtype(dtype).unwrap())
                .unwrap();
        }
    }
    (varmap, model)
}

/// Gradients of Σ level·R (R fixed, random) by tensor name, in f64.
fn gradients(
    model: &YoloV8,
    varmap: &VarMap,
    x: &Tensor,
    r: &[Tensor],
) -> BTreeMap<String, Vec<f64>> {
    let out = model.forward_t(x, true).unwrap();
    let mut loss = Tensor::zeros((), x.dtype(), x.device()).unwrap();
    for (level, w) in out.levels.iter().zip(r) {
        let w = w.to_dtype(x.dtype()).unwrap();
        loss = (loss + (level * w).unwrap().sum_all().unwrap()).unwrap();
    }
    let grads = loss.backward().unwrap();
    let vars: Vec<Var> = trainable_vars(varmap);
    let data = varmap.data().lock().unwrap();
    data.iter()
        .filter(|(_, v)| {
            vars.iter()
                .any(|t| t.as_tensor().id() == v.as_tensor().id())
        })
        .map(|(name, v)| {
            let g = grads
                .get(v.as_tensor())
                .expect("every trainable tensor has a gradient");
            let g = g.to_dtype(DType::F64).unwrap().flatten_all().unwrap();
            (name.clone(), g.to_vec1::<f64>().unwrap())
        })
        .collect()
}

fn rel_err(a: &[f64], truth: &[f64]) -> f64 {
    let num: f64 = a.iter().zip(truth).map(|(x, y)| (x - y).powi(2)).sum();
    let den: f64 = truth.iter().map(|y| y * y).sum();
    (num / den.max(1e-300)).sqrt()
}

#[test]
fn fast_gradients_are_as_accurate_as_candles() {
    let dev = Device::Cpu;
    let (vm32, _) = student(DType::F32, None);
    irdistill::trainer::train::init::seed_weights(&vm32, 7).unwrap();
    let x = Tensor::rand(0f32, 1f32, (4, 3, 64, 64), &dev).unwrap();
    let r: Vec<Tensor> = [8usize, 4, 2]
        .iter()
        .map(|&g| Tensor::randn(0f64, 1., (4, 66, g, g), &dev).unwrap())
        .collect();

    // truth: candle's ops in f64 (the fast path is f32 only)
    let (vm64, m64) = student(DType::F64, Some(&vm32));
    let truth = gradients(&m64, &vm64, &x.to_dtype(DType::F64).unwrap(), &r);
    irdistill::trainer::ops::set_reference_ops(true);
    let (vmr, mr) = student(DType::F32, Some(&vm32));
    let reference = gradients(&mr, &vmr, &x, &r);
    irdistill::trainer::ops::set_reference_ops(false);
    let (vmf, mf) = student(DType::F32, Some(&vm32));
    let fast = gradients(&mf, &vmf, &x, &r);

    assert_eq!(truth.len(), fast.len());
    // per tensor: ‖g − g64‖ / ‖g64‖; both paths are about 2e-5 here
    let (mut worst_fast, mut worst_ref) = ((0.0f64, String::new()), 0.0f64);
    for (name, t) in &truth {
        let (ef, er) = (rel_err(&fast[name], t), rel_err(&reference[name], t));
        assert!(
            ef < 2e-4,
            "{name}: fast gradient off by {ef:.2e} (candle's f32: {er:.2e})"
        );
        if ef > worst_fast.0 {
            worst_fast = (ef, name.clone());
        }
        worst_ref = worst_ref.max(er);
    }
    eprintln!(
        "gradient error vs f64, worst tensor: fast {:.2e} ({}), candle's f32 ops {:.2e}",
        worst_fast.0, worst_fast.1, worst_ref
    );
    assert!(
        worst_fast.0 <= 3.0 * worst_ref,
        "fast kernels' worst gradient error {:.2e} ({}) is far above candle's own {:.2e}",
        worst_fast.0,
        worst_fast.1,
        worst_ref
    );
}
