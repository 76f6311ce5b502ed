//! Contrastive distillation (InfoNCE) between the student's and the
//! teacher's features of each object.
//!
//! Per object (a ground-truth box, or the teacher's confident detection on
//! an unlabeled pair) both neck features are average-pooled over the cells
//! of its level whose centres lie in the box (a RoI pool on the grid, see
//! [`super::objects`]), then projected by a small MLP per network and level
//! to an L2-normalised embedding. For student object i, the teacher's
//! embedding of the same object is the positive; the teacher embeddings of
//! every other object in the batch and of sampled background cells are the
//! negatives: `−log softmax_j(z_s,i · z_t,j / τ)[i]`.
//!
//! The teacher's features are detached; its projection head is a
//! distillation head trained with the student (as in CRD), not part of the
//! frozen teacher.

use super::objects::{cells_in, level_of};
use crate::shared::bbox::BBox;
use crate::trainer::model::STRIDES;
use anyhow::Result;
use candle_core::{Device, Module, Tensor};
use candle_nn::{Linear, VarBuilder};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Embedding width.
pub const EMBED_DIM: usize = 64;
const HIDDEN: usize = 128;
/// Background cells sampled per image and level as extra negatives.
const BACKGROUND_PER_IMAGE: usize = 4;

/// Linear → ReLU → Linear.
struct Projector {
    fc1: Linear,
    fc2: Linear,
}

impl Projector {
    fn load(vb: VarBuilder, c_in: usize) -> Result<Self> {
        Ok(Self {
            fc1: candle_nn::linear(c_in, HIDDEN, vb.pp("fc1"))?,
            fc2: candle_nn::linear(HIDDEN, EMBED_DIM, vb.pp("fc2"))?,
        })
    }

    /// `[n, C]` → L2-normalised `[n, EMBED_DIM]`.
    fn embed(&self, x: &Tensor) -> Result<Tensor> {
        let z = self.fc2.forward(&self.fc1.forward(x)?.relu()?)?;
        let norm = (z.sqr()?.sum_keepdim(1)? + 1e-12)?.sqrt()?;
        Ok(z.broadcast_div(&norm)?)
    }
}

pub struct ContrastHeads {
    student: Vec<Projector>,
    teacher: Vec<Projector>,
    tau: f64,
}

/// Which rows of a level's `[B·H·W, C]` feature matrix each object pools.
struct LevelPool {
    /// `[n_objects, B·H·W]` averaging weights.
    matrix: Tensor,
    /// Row indices of the sampled background cells.
    background: Tensor,
    n_objects: usize,
    n_background: usize,
}

impl ContrastHeads {
    pub fn load(
        vb: VarBuilder,
        student: [usize; 3],
        teacher: [usize; 3],
        tau: f64,
    ) -> Result<Self> {
        Ok(Self {
            student: (0..3)
                .map(|l| Projector::load(vb.pp("student").pp(l), student[l]))
                .collect::<Result<_>>()?,
            teacher: (0..3)
                .map(|l| Projector::load(vb.pp("teacher").pp(l), teacher[l]))
                .collect::<Result<_>>()?,
            tau,
        })
    }

    /// `objects`: per image, boxes in input pixels. `None` when the batch
    /// holds no object (nothing to contrast).
    pub fn loss(
        &self,
        student: [&Tensor; 3],
        teacher: [&Tensor; 3],
        objects: &[Vec<BBox>],
        seed: u64,
    ) -> Result<Option<Tensor>> {
        let device = student[0].device().clone();
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let (mut z_s, mut z_t, mut z_bg) = (Vec::new(), Vec::new(), Vec::new());
        for l in 0..3 {
            let (b, _, h, w) = student[l].dims4()?;
            let pool = level_pool(objects, l, b, h, w, &mut rng, &device)?;
            let rows_s = as_rows(student[l])?; // [B·H·W, Cs]
            let rows_t = as_rows(&teacher[l].detach())?; // [B·H·W, Ct]
            if pool.n_objects > 0 {
                z_s.push(self.student[l].embed(&pool.matrix.matmul(&rows_s)?)?);
                z_t.push(self.teacher[l].embed(&pool.matrix.matmul(&rows_t)?)?);
            }
            if pool.n_background > 0 {
                z_bg.push(self.teacher[l].embed(&rows_t.index_select(&pool.background, 0)?)?);
            }
        }
        if z_s.is_empty() {
            return Ok(None);
        }
        let z_s = Tensor::cat(&z_s, 0)?; // [n, D]
        let n = z_s.dim(0)?;
        let keys = Tensor::cat(&[z_t, z_bg].concat(), 0)?; // [n + m, D]
        let logits = (z_s.matmul(&keys.t()?)? / self.tau)?; // [n, n + m]
        let targets = Tensor::arange(0u32, n as u32, &device)?;
        Ok(Some(candle_nn::loss::cross_entropy(&logits, &targets)?))
    }
}

/// `[B, C, H, W]` → `[B·H·W, C]`, row = (b·H + y)·W + x.
fn as_rows(x: &Tensor) -> Result<Tensor> {
    let (b, c, h, w) = x.dims4()?;
    Ok(x.permute((0, 2, 3, 1))?.reshape((b * h * w, c))?)
}

fn level_pool(
    objects: &[Vec<BBox>],
    level: usize,
    b: usize,
    h: usize,
    w: usize,
    rng: &mut ChaCha8Rng,
    device: &Device,
) -> Result<LevelPool> {
    let stride = STRIDES[level];
    let cells = b * h * w;
    let mut weights = Vec::new();
    let mut background = Vec::new();
    let mut n_objects = 0;
    for (i, boxes) in objects.iter().enumerate().take(b) {
        let mut occupied = vec![false; h * w];
        for bb in boxes {
            let inside = cells_in(bb, stride, h, w);
            for &(y, x) in &inside {
                occupied[y * w + x] = true;
            }
            if level_of(bb) != level {
                continue;
            }
            let mut row = vec![0f32; cells];
            for &(y, x) in &inside {
                row[(i * h + y) * w + x] = 1.0 / inside.len() as f32;
            }
            weights.extend(row);
            n_objects += 1;
        }
        let free: Vec<usize> = (0..h * w).filter(|&c| !occupied[c]).collect();
        for _ in 0..BACKGROUND_PER_IMAGE.min(free.len()) {
            background.push((i * h * w + free[rng.random_range(0..free.len())]) as u32);
        }
    }
    let n_background = background.len();
    Ok(LevelPool {
        matrix: Tensor::from_vec(weights, (n_objects, cells), device)?,
        background: Tensor::from_vec(background, n_background, device)?,
        n_objects,
        n_background,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::DType;
    use candle_nn::VarMap;

    #[test]
    fn info_nce_is_finite_reaches_both_projectors_and_needs_objects() {
        let dev = Device::Cpu;
        let varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, &dev);
        let heads = ContrastHeads::load(vb, [8, 8, 8], [8, 8, 8], 0.1).unwrap();
        let objects = vec![
            vec![BBox::new(0., 0., 16., 16.), BBox::new(40., 40., 60., 60.)],
            vec![BBox::new(8., 30., 30., 60.)],
        ];
        let f3 = Tensor::randn(0f32, 1f32, (2, 8, 8, 8), &dev).unwrap();
        let f4 = Tensor::randn(0f32, 1f32, (2, 8, 4, 4), &dev).unwrap();
        let f5 = Tensor::randn(0f32, 1f32, (2, 8, 2, 2), &dev).unwrap();
        let l = heads
            .loss([&f3, &f4, &f5], [&f3, &f4, &f5], &objects, 0)
            .unwrap()
            .unwrap();
        let v = l.to_scalar::<f32>().unwrap();
        // 3 objects + up to 4 background cells per image: a uniform guess is ln(11)
        assert!(v.is_finite() && v > 0.0 && v < 5.0, "{v}");
        // gradients reach both projectors
        let grads = l.backward().unwrap();
        for (name, var) in varmap.data().lock().unwrap().iter() {
            if name.ends_with("0.fc1.weight") {
                assert!(grads.get(var.as_tensor()).is_some(), "{name}");
            }
        }
        // no objects → no loss
        assert!(heads
            .loss([&f3, &f4, &f5], [&f3, &f4, &f5], &[vec![], vec![]], 0)
            .unwrap()
            .is_none());
    }
}
