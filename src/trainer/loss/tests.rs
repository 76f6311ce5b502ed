//! End-to-end tests of [`DetectionLoss`]: hand-computed values, an
//! independent numpy re-implementation of ultralytics' loss, gradients, and
//! the error cases. The parts have their own tests beside them.

use super::*;
use crate::shared::bbox::BBox;
use candle_core::{Device, Var};
use rand::{Rng, SeedableRng};

fn label(class_id: usize, b: [f32; 4]) -> Label {
    Label {
        class_id,
        bbox: BBox::new(b[0], b[1], b[2], b[3]),
    }
}

fn rel_close(a: f32, b: f64, rel: f64) -> bool {
    ((a as f64) - b).abs() <= rel * b.abs().max(1e-6)
}

/// Uniform random logits in `[-lo, lo)`.
fn random_levels(
    seed: u64,
    b: usize,
    no: usize,
    shapes: &[(usize, usize)],
    lo: f32,
) -> Vec<Tensor> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    shapes
        .iter()
        .map(|&(h, w)| {
            let v: Vec<f32> = (0..b * no * h * w)
                .map(|_| rng.random_range(-lo..lo))
                .collect();
            Tensor::from_vec(v, (b, no, h, w), &Device::Cpu).unwrap()
        })
        .collect()
}

/// One image, one 2×2 level of stride 8 (16×16 px), one class; every side
/// distribution is (almost) one-hot on bin 1 (logit 30, others 0), class
/// logits 0.
#[test]
fn full_loss_by_hand() {
    let mut v = vec![0f32; 65 * 4];
    for c in (0..64).filter(|c| c % 16 == 1) {
        for p in 0..4 {
            v[c * 4 + p] = 30.0;
        }
    }
    let x = Tensor::from_vec(v, (1, 65, 2, 2), &Device::Cpu).unwrap();
    let mut cfg = LossConfig::new(1);
    cfg.strides = vec![8.0];
    let out = detection_loss(&[x], &[vec![label(0, [0.0, 0.0, 14.0, 8.0])]], &cfg).unwrap();
    // Anchors (grid) (0.5,0.5), (1.5,0.5), (0.5,1.5), (1.5,1.5); px ×8.
    // Every distance decodes to 1 (+1e-11): pred boxes anchor ± 8 px:
    // anchor 0 (−4,−4,12,12), anchor 1 (4,−4,20,12).
    // gt (0,0,14,8): candidates are anchors 0 (4,4) and 1 (12,4).
    // CIoU(gt, pred0): inter 12·8 = 96, union 112 + 256 − 96 = 272,
    //   IoU 0.3529412; enclosing 18×16, c² = 580; rho² = 3² = 9;
    //   v = 4/π² (atan 1.75 − atan 1)² = 0.0287307, alpha = v/(v − IoU + 1)
    //   = 0.0425143: CIoU0 = 0.3529412 − 9/580 − 0.0012215 = 0.3362025.
    // CIoU(gt, pred1): inter 10·8 = 80, union 288, IoU 0.2777778;
    //   enclosing 20×16, c² = 656; rho² = 5² = 25; alpha = 0.0382591:
    //   CIoU1 = 0.2777778 − 25/656 − 0.0010992 = 0.2385688.
    // Scores σ(0) = 0.5: align = √0.5 · CIoU⁶; anchor 0 has both maxima:
    //   t0 = CIoU0 · align0/(align0 + 1e-9) = 0.3362021,
    //   t1 = CIoU0 · align1/(align0 + 1e-9) = 0.0429217. tss = max(0.379, 1) = 1.
    // cls: BCE(0, t) = ln 2 at all 4 anchors: 4 ln 2 · 0.5 = 1.3862944.
    // box (grid units, same CIoU up to eps): 7.5 · ((1 − 0.3362024)·t0 +
    //   (1 − 0.2385688)·t1) = 1.9188907.
    // dfl: log-softmax is 0 at bin 1 and −30 elsewhere. Targets (grid):
    //   anchor 0 ltrb (0.5, 0.5, 1.25, 0.5): 0.5·30 + 0.5·0 = 15 (×3) and
    //   0.75·0 + 0.25·30 = 7.5: mean 13.125; anchor 1 (1.5, 0.5, 0.25, 0.5):
    //   15, 15, 0.75·30 = 22.5, 15: mean 16.875.
    //   1.5 · (13.125·t0 + 16.875·t1) = 7.7054356.
    // Total (batch 1) 11.0106207. The numpy re-implementation of
    // ultralytics (see `matches_numpy_reference`) gives the same numbers.
    assert_eq!(out.num_fg, 2);
    assert!(rel_close(out.cls_loss, 1.3862944, 1e-5), "{out:?}");
    assert!(rel_close(out.box_loss, 1.9188907, 1e-4), "{out:?}");
    assert!(rel_close(out.dfl_loss, 7.7054356, 1e-4), "{out:?}");
    let total: f32 = out.total.to_vec0().unwrap();
    assert!(rel_close(total, 11.0106207, 1e-4), "{total}");
    assert!(rel_close(
        out.assignments[0].target_scores[1],
        0.0429217,
        1e-4
    ));
}

/// The inputs of the numpy reference: value `i` (flat index over
/// `[B, C, H, W]`) of level `l` is `1.5 sin(0.37 i + 1.3 l + 0.2) +
/// 0.4 cos(0.23 i)`, minus `0.35 · bin` on the box channels (short boxes).
fn reference_levels() -> Vec<Tensor> {
    [(4usize, 4usize), (2, 2)]
        .iter()
        .enumerate()
        .map(|(l, &(h, w))| {
            let (b, c) = (3, 66);
            let v: Vec<f32> = (0..b * c * h * w)
                .map(|i| {
                    let fi = i as f64;
                    let ch = (i / (h * w)) % c;
                    let mut v =
                        1.5 * (0.37 * fi + 1.3 * l as f64 + 0.2).sin() + 0.4 * (0.23 * fi).cos();
                    if ch < 64 {
                        v -= 0.35 * (ch % 16) as f64;
                    }
                    v as f32
                })
                .collect();
            Tensor::from_vec(v, (b, c, h, w), &Device::Cpu).unwrap()
        })
        .collect()
}

/// Against an independent numpy re-implementation of ultralytics'
/// v8DetectionLoss / TaskAlignedAssigner / BboxLoss / DFLoss / bbox_iou
/// (vectorised like the torch code, float64, ties in top-k to the lower
/// index), run once; the numbers are its output. Batch of 3 (32×32
/// images, levels 4×4 @ 8 and 2×2 @ 16, 2 classes), the last image
/// without objects.
// Long because it is a reference table (five cases of the numpy output).
#[test]
fn matches_numpy_reference() {
    let levels = reference_levels();
    let few = vec![
        vec![
            label(1, [2.0, 3.0, 29.0, 27.0]),
            label(0, [5.0, 4.0, 14.0, 13.0]),
        ],
        vec![label(0, [10.0, 12.0, 20.0, 30.0])],
        vec![],
    ];
    let many = vec![
        vec![
            label(1, [2.0, 3.0, 29.0, 27.0]),
            label(0, [5.0, 4.0, 14.0, 13.0]),
            label(0, [17.0, 1.0, 31.0, 15.0]),
            label(1, [1.0, 17.0, 15.0, 31.0]),
        ],
        vec![
            label(0, [10.0, 12.0, 20.0, 30.0]),
            label(1, [18.0, 2.0, 30.0, 12.0]),
            label(1, [0.0, 0.0, 32.0, 32.0]),
        ],
        vec![],
    ];
    let empty = vec![vec![], vec![], vec![]];
    // (targets, topk, total, [box, cls, dfl], fg, tss)
    type Case<'a> = (&'a Vec<Vec<Label>>, usize, f64, [f64; 3], usize, f64);
    let cases: [Case; 5] = [
        (
            &few,
            10,
            162.29584379516956,
            [3.553324067306917, 48.68938431616019, 1.8559062149227532],
            12,
            1.0,
        ),
        (
            &few,
            3,
            162.06370089396142,
            [3.5028010264933616, 48.68773323697238, 1.8306993678547387],
            6,
            1.0,
        ),
        (
            &many,
            10,
            100.3270034550617,
            [3.9281022138252575, 27.18190574288223, 2.3323265283130796],
            27,
            1.7958799024395165,
        ),
        (
            &many,
            3,
            94.70260176091234,
            [4.137005811391289, 25.088532764347303, 2.3419953445655244],
            16,
            1.9432664950322236,
        ),
        (
            &empty,
            10,
            145.893384841378,
            [0.0, 48.631128280459336, 0.0],
            0,
            1.0,
        ),
    ];
    for (targets, topk, total, items, fg, tss) in cases {
        let mut cfg = LossConfig::new(2);
        cfg.strides = vec![8.0, 16.0];
        cfg.assigner.topk = topk;
        let out = detection_loss(&levels, targets, &cfg).unwrap();
        let msg = format!("topk {topk}, {} gts: {out:?}", targets[0].len());
        assert_eq!(out.num_fg, fg, "{msg}");
        assert!(rel_close(out.target_scores_sum, tss, 1e-4), "{msg}");
        assert!(rel_close(out.box_loss, items[0], 1e-4), "{msg}");
        assert!(rel_close(out.cls_loss, items[1], 1e-5), "{msg}");
        assert!(rel_close(out.dfl_loss, items[2], 1e-4), "{msg}");
        assert!(
            rel_close(out.total.to_vec0::<f32>().unwrap(), total, 1e-5),
            "{msg}"
        );
    }
}

#[test]
fn random_inputs_give_a_finite_positive_loss_and_gradients() {
    // 64×64 images: levels 8×8, 4×4, 2×2; 3 classes; batch 2.
    let shapes = [(8, 8), (4, 4), (2, 2)];
    let levels = random_levels(7, 2, 67, &shapes, 3.0);
    let vars: Vec<Var> = levels
        .iter()
        .map(|t| Var::from_tensor(t).unwrap())
        .collect();
    let ts: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().clone()).collect();
    let targets = vec![
        vec![
            label(0, [3.0, 5.0, 40.0, 30.0]),
            label(2, [30.0, 30.0, 62.0, 63.0]),
        ],
        vec![label(1, [10.0, 10.0, 18.0, 20.0])],
    ];
    let out = DetectionLoss::new(3).compute(&ts, &targets).unwrap();
    let total: f32 = out.total.to_vec0().unwrap();
    assert!(out.num_fg > 0, "{out:?}");
    for v in [out.box_loss, out.cls_loss, out.dfl_loss] {
        assert!(v.is_finite() && v > 0.0, "{out:?}");
    }
    assert!(((out.box_loss + out.cls_loss + out.dfl_loss) * 2.0 - total).abs() < 1e-3 * total);
    let grads = out.total.backward().unwrap();
    let mut box_grad = 0f32;
    for v in &vars {
        let g = grads.get(v).expect("gradient for every level");
        let g2: f32 = g.sqr().unwrap().sum_all().unwrap().to_vec0().unwrap();
        assert!(g2.is_finite() && g2 > 0.0);
        box_grad += g
            .narrow(1, 0, 64)
            .unwrap()
            .abs()
            .unwrap()
            .sum_all()
            .unwrap()
            .to_vec0::<f32>()
            .unwrap();
    }
    assert!(box_grad > 0.0);
}

#[test]
fn batch_without_objects_pushes_all_scores_down() {
    let levels = random_levels(3, 2, 65, &[(4, 4), (2, 2), (1, 1)], 2.0);
    let vars: Vec<Var> = levels
        .iter()
        .map(|t| Var::from_tensor(t).unwrap())
        .collect();
    let ts: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().clone()).collect();
    let out = DetectionLoss::new(1)
        .compute(&ts, &[vec![], vec![]])
        .unwrap();
    assert_eq!((out.box_loss, out.dfl_loss, out.num_fg), (0.0, 0.0, 0));
    // cls = 0.5 · Σ BCE(x, 0) / 1 = 0.5 · Σ softplus(x).
    let expect: f32 = levels
        .iter()
        .map(|t| {
            let v: Vec<f32> = t
                .narrow(1, 64, 1)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap();
            v.iter().map(|x| (1.0 + x.exp()).ln()).sum::<f32>()
        })
        .sum::<f32>()
        * 0.5;
    assert!(
        (out.cls_loss - expect).abs() < 1e-4 * expect,
        "{} vs {expect}",
        out.cls_loss
    );
    let grads = out.total.backward().unwrap();
    for v in &vars {
        let g = grads.get(v).unwrap();
        let gc: Vec<f32> = g
            .narrow(1, 64, 1)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        assert!(gc.iter().all(|&x| x > 0.0), "class logits must all go down");
        let gb: f32 = g
            .narrow(1, 0, 64)
            .unwrap()
            .abs()
            .unwrap()
            .sum_all()
            .unwrap()
            .to_vec0()
            .unwrap();
        assert_eq!(gb, 0.0);
    }
}

#[test]
fn sgd_on_the_predictions_lowers_the_loss() {
    // One 32×32 image, one 4×4 level, one class, one object.
    let x = Var::from_tensor(&random_levels(11, 1, 65, &[(4, 4)], 1.0)[0]).unwrap();
    let mut cfg = LossConfig::new(1);
    cfg.strides = vec![8.0];
    let loss = DetectionLoss::with_config(cfg);
    let targets = vec![vec![label(0, [6.0, 4.0, 27.0, 22.0])]];
    let mut first = None;
    let mut last = (0f32, 0f32, 0f32);
    // Plain gradient descent, lr 0.5: total 5.76 → 0.95, box 0.073 → 0.040.
    for _ in 0..40 {
        let out = loss.compute(&[x.as_tensor().clone()], &targets).unwrap();
        let total: f32 = out.total.to_vec0().unwrap();
        first.get_or_insert((total, out.box_loss, out.dfl_loss));
        last = (total, out.box_loss, out.dfl_loss);
        let g = out.total.backward().unwrap().get(&x).unwrap().clone();
        x.set(&(x.as_tensor() - (g * 0.5).unwrap()).unwrap())
            .unwrap();
    }
    let first = first.unwrap();
    assert!(last.0 < 0.5 * first.0, "total {first:?} -> {last:?}");
    assert!(last.1 < 0.8 * first.1, "box {first:?} -> {last:?}");
    assert!(last.2 < first.2, "dfl {first:?} -> {last:?}");
}

#[test]
fn bad_shapes_are_errors() {
    let levels = random_levels(1, 1, 66, &[(2, 2)], 1.0);
    let mut cfg = LossConfig::new(1);
    cfg.strides = vec![8.0];
    // 66 channels for 1 class (expects 65).
    assert!(detection_loss(&levels, &[vec![]], &cfg).is_err());
    cfg = LossConfig::new(2);
    cfg.strides = vec![8.0];
    // Two target lists for a batch of one; a class id out of range.
    assert!(detection_loss(&levels, &[vec![], vec![]], &cfg).is_err());
    assert!(detection_loss(&levels, &[vec![label(2, [0.0, 0.0, 9.0, 9.0])]], &cfg).is_err());
    // Levels and strides disagree.
    cfg.strides = vec![8.0, 16.0];
    assert!(detection_loss(&levels, &[vec![]], &cfg).is_err());
}

#[test]
fn target_weights_scale_the_assigned_scores() {
    // pseudo-labels: weight 1 is the plain loss; a lower weight lowers the
    // targets (and their share) of that object's anchors only
    let levels = random_levels(5, 1, 65, &[(4, 4), (2, 2), (1, 1)], 1.0);
    let gts = vec![vec![
        label(0, [2.0, 2.0, 20.0, 20.0]),
        label(0, [12.0, 4.0, 30.0, 28.0]),
    ]];
    let loss = DetectionLoss::new(1);
    let plain = loss.compute(&levels, &gts).unwrap();
    let ones = loss
        .compute_weighted(&levels, &gts, Some(&[vec![1.0, 1.0]]))
        .unwrap();
    assert_eq!(plain.cls_loss, ones.cls_loss);
    let half = loss
        .compute_weighted(&levels, &gts, Some(&[vec![0.5, 1.0]]))
        .unwrap();
    assert_eq!(half.num_fg, plain.num_fg);
    let first_only: f32 = plain.assignments[0]
        .target_gt_idx
        .iter()
        .zip(&plain.assignments[0].fg_mask)
        .enumerate()
        .filter(|(_, (&g, &fg))| fg && g == 0)
        .map(|(n, _)| plain.assignments[0].target_scores[n])
        .sum();
    assert!(first_only > 0.0, "the first object has anchors");
    // tss is max(Σ, 1): compare the sums before that floor
    let sum = |o: &LossOutput| o.assignments[0].target_scores.iter().sum::<f32>();
    assert!((sum(&plain) - sum(&half) - 0.5 * first_only).abs() < 1e-5);
}
