//! Procedural paired RGB + IR scene generator: the embedded default data for
//! training, tests and demos.
//!
//! A frame is made in three steps, one module each:
//! [`scene`] samples a layout (horizon, road, buildings, lamps, people and
//! cars on a ground plane), [`raster`] paints it into reflectance /
//! temperature / depth layers and measures the label boxes, and [`camera`]
//! renders those layers as the RGB camera (day, night, fog) and the thermal
//! camera see them. Everything is seeded per pair: pair `i` of seed `s` is
//! the same whatever else is generated, in any order, on any thread.

pub mod camera;
pub mod noise;
pub mod preview;
pub mod raster;
pub mod scene;
pub mod shapes;
pub mod writer;

use crate::shared::condition::{Condition, Split};
use crate::shared::pair::FramePair;
use anyhow::{ensure, Result};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
pub use scene::{SceneParams, CLASS_NAMES};

/// What to generate.
#[derive(Debug, Clone)]
pub struct SynthConfig {
    pub scene: SceneParams,
    /// Conditions drawn uniformly per pair.
    pub conditions: Vec<Condition>,
}

impl Default for SynthConfig {
    fn default() -> Self {
        Self {
            scene: SceneParams::default(),
            conditions: Condition::ALL.to_vec(),
        }
    }
}

/// A generated pair and the split its index falls in.
#[derive(Debug, Clone)]
pub struct SynthPair {
    pub pair: FramePair,
    pub split: Split,
}

/// Deterministic source of pairs: `pair(i)` depends only on the config, the
/// seed and `i`.
#[derive(Debug, Clone)]
pub struct Generator {
    config: SynthConfig,
    seed: u64,
}

/// Smallest frame side the scene layout makes sense for.
pub const MIN_SIDE_PX: u32 = 32;
/// Largest frame side (memory per pair grows with the square).
pub const MAX_SIDE_PX: u32 = 4096;

impl Generator {
    pub fn new(config: SynthConfig, seed: u64) -> Result<Self> {
        let (w, h) = (config.scene.width_px, config.scene.height_px);
        ensure!(
            (MIN_SIDE_PX..=MAX_SIDE_PX).contains(&w) && (MIN_SIDE_PX..=MAX_SIDE_PX).contains(&h),
            "frame size {w}x{h} out of range: each side must be {MIN_SIDE_PX}..={MAX_SIDE_PX} pixels"
        );
        ensure!(!config.conditions.is_empty(), "no conditions to generate");
        ensure!(
            config.scene.max_misregistration_px <= w.min(h) / 8,
            "misregistration {} px is too large for a {w}x{h} frame",
            config.scene.max_misregistration_px
        );
        Ok(Self { config, seed })
    }

    pub fn config(&self) -> &SynthConfig {
        &self.config
    }

    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// Class names, in class-id order.
    pub fn names() -> Vec<String> {
        CLASS_NAMES.iter().map(|s| s.to_string()).collect()
    }

    /// Split of pair `index`: 80 % train, 10 % val, 10 % test, by a hash of
    /// the index alone, so it is the same for every seed and pair count.
    pub fn split_of(index: u64) -> Split {
        Split::from_hash(noise::mix64(index ^ 0x5eed_5eed))
    }

    /// File stem of pair `index` in a dataset of `total` pairs.
    pub fn name_of(index: u64, total: u64) -> String {
        let digits = total.saturating_sub(1).max(1).ilog10() as usize + 1;
        format!("{index:0width$}", width = digits.max(6))
    }

    fn rng_for(&self, index: u64) -> ChaCha8Rng {
        ChaCha8Rng::seed_from_u64(noise::mix64(
            self.seed ^ noise::mix64(index.wrapping_add(1)),
        ))
    }

    /// The scene layout of pair `index` (before rendering).
    pub fn scene(&self, index: u64) -> scene::Scene {
        let mut rng = self.rng_for(index);
        let conditions = &self.config.conditions;
        let condition = conditions[rng.random_range(0..conditions.len())];
        scene::Scene::sample(&self.config.scene, condition, &mut rng)
    }

    /// Generates pair `index`, named as in a dataset of `total` pairs.
    pub fn pair_named(&self, index: u64, name: String) -> SynthPair {
        let scene = self.scene(index);
        let layers = raster::paint(&scene);
        let rgb = camera::render_rgb(&scene, &layers);
        let ir = camera::render_ir(&scene, &layers);
        SynthPair {
            pair: FramePair {
                name,
                rgb,
                ir,
                labels: layers.labels,
                condition: Some(scene.condition),
            },
            split: Self::split_of(index),
        }
    }

    /// Generates pair `index`.
    pub fn pair(&self, index: u64) -> SynthPair {
        self.pair_named(index, Self::name_of(index, 0))
    }

    /// Pairs `start..end` whose split is `split`, in index order.
    pub fn pairs_in_split(
        &self,
        split: Split,
        start: u64,
        end: u64,
    ) -> impl Iterator<Item = SynthPair> + '_ {
        (start..end)
            .filter(move |&i| Self::split_of(i) == split)
            .map(|i| self.pair(i))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn generator(conditions: &[Condition]) -> Generator {
        let config = SynthConfig {
            conditions: conditions.to_vec(),
            ..Default::default()
        };
        Generator::new(config, 11).unwrap()
    }

    #[test]
    fn same_seed_same_pair_any_order() {
        let g = generator(&Condition::ALL);
        let a = g.pair(5);
        let _ = g.pair(2);
        let b = g.pair(5);
        assert_eq!(a.pair.rgb.as_raw(), b.pair.rgb.as_raw());
        assert_eq!(a.pair.ir.as_raw(), b.pair.ir.as_raw());
        assert_eq!(a.pair.labels, b.pair.labels);
        let other = Generator::new(SynthConfig::default(), 12).unwrap().pair(5);
        assert_ne!(a.pair.rgb.as_raw(), other.pair.rgb.as_raw());
    }

    #[test]
    fn labels_lie_inside_the_frame_and_have_size() {
        let g = generator(&Condition::ALL);
        let mut count = 0;
        for i in 0..40 {
            let p = g.pair(i).pair;
            for l in &p.labels {
                let b = l.bbox;
                assert!(
                    b.x1 >= 0.0 && b.y1 >= 0.0 && b.x2 <= 320.0 && b.y2 <= 256.0,
                    "{b:?}"
                );
                assert!(b.width() >= 1.5 && b.height() >= 1.5, "{b:?}");
                assert!(l.class_id < CLASS_NAMES.len());
                count += 1;
            }
        }
        assert!(count > 80, "only {count} objects in 40 frames");
    }

    #[test]
    fn rejects_bad_sizes() {
        let mut config = SynthConfig::default();
        config.scene.width_px = 8;
        let err = Generator::new(config, 0).unwrap_err().to_string();
        assert!(err.contains("8x256"), "{err}");
    }

    #[test]
    fn splits_are_roughly_80_10_10() {
        let n = 10_000;
        let test = (0..n)
            .filter(|&i| Generator::split_of(i) == Split::Test)
            .count();
        let val = (0..n)
            .filter(|&i| Generator::split_of(i) == Split::Val)
            .count();
        assert!((800..1200).contains(&test), "{test}");
        assert!((800..1200).contains(&val), "{val}");
    }
}
