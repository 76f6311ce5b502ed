//! Deterministic, stateless noise: value noise and fractal sums of it for
//! textures, and a counter-based hash for per-pixel sensor noise. Stateless
//! so that every pixel can be computed independently of generation order.

/// A 64-bit mix (splitmix64's finaliser): good avalanche, very cheap.
#[inline]
pub fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[inline]
fn lattice(seed: u64, ix: i32, iy: i32) -> f32 {
    let h = mix64(
        seed ^ ((ix as u32 as u64) << 32 | iy as u32 as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15),
    );
    (h >> 40) as f32 * (1.0 / (1u64 << 24) as f32)
}

/// Smooth value noise in `[0, 1)` at continuous coordinates (one lattice
/// cell per unit).
#[inline]
pub fn value_noise(seed: u64, x: f32, y: f32) -> f32 {
    // floor by truncation (libm's floorf showed up in profiles)
    let ix = x as i32 - (x < 0.0 && x != (x as i32) as f32) as i32;
    let iy = y as i32 - (y < 0.0 && y != (y as i32) as f32) as i32;
    let (fx, fy) = (ix as f32, iy as f32);
    let (tx, ty) = (x - fx, y - fy);
    // smoothstep weights: continuous first derivative, no grid creases
    let (sx, sy) = (tx * tx * (3.0 - 2.0 * tx), ty * ty * (3.0 - 2.0 * ty));
    let a = lattice(seed, ix, iy);
    let b = lattice(seed, ix + 1, iy);
    let c = lattice(seed, ix, iy + 1);
    let d = lattice(seed, ix + 1, iy + 1);
    let top = a + (b - a) * sx;
    let bottom = c + (d - c) * sx;
    top + (bottom - top) * sy
}

/// Fractal sum of `octaves` value-noise layers, each twice the frequency and
/// half the amplitude of the last; normalised to `[0, 1)`.
#[inline]
pub fn fbm(seed: u64, x: f32, y: f32, octaves: u32) -> f32 {
    let (mut sum, mut amp, mut norm, mut freq) = (0.0, 1.0, 0.0, 1.0);
    for o in 0..octaves {
        sum += amp
            * value_noise(
                seed.wrapping_add(o as u64 * 0x632b_e59b),
                x * freq,
                y * freq,
            );
        norm += amp;
        amp *= 0.5;
        freq *= 2.0;
    }
    sum / norm
}

/// Approximately standard-normal numbers from a counter: four 16-bit
/// uniforms of one hash summed (Irwin–Hall), rescaled to unit variance.
/// Cheap enough for every pixel of every frame; the tails are bounded at
/// ±3.46σ, which is harmless for sensor noise.
#[inline]
pub fn gauss(seed: u64, counter: u64) -> f32 {
    let h = mix64(seed ^ counter.wrapping_mul(0xd6e8_feb8_6659_fd93));
    let s = (h & 0xffff) + ((h >> 16) & 0xffff) + ((h >> 32) & 0xffff) + (h >> 48);
    // mean of the sum 2 * 65535, variance 4 * 65536^2 / 12
    (s as f32 - 131_070.0) * (1.0 / 37_837.2)
}

/// `exp(-x)` for `x >= 0`, flushed to 0 past `x = 30`: falloff terms are
/// evaluated for every pixel, and libm's underflow path is slow.
#[inline]
pub fn falloff(x: f32) -> f32 {
    if x > 30.0 {
        0.0
    } else {
        (-x).exp()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn value_noise_floor_handles_negative_coordinates() {
        // continuity across zero and at negative integers
        for x in [-2.0f32, -1.0, -0.5, 0.0] {
            let a = value_noise(1, x - 1e-4, 0.3);
            let b = value_noise(1, x + 1e-4, 0.3);
            assert!((a - b).abs() < 0.01, "{x}: {a} {b}");
        }
    }

    #[test]
    fn gauss_has_unit_variance_and_zero_mean() {
        let n = 200_000;
        let (mut s, mut s2) = (0.0f64, 0.0f64);
        for i in 0..n {
            let g = gauss(7, i) as f64;
            s += g;
            s2 += g * g;
        }
        let mean = s / n as f64;
        let var = s2 / n as f64 - mean * mean;
        assert!(mean.abs() < 0.01, "mean {mean}");
        assert!((var - 1.0).abs() < 0.02, "var {var}");
    }

    #[test]
    fn value_noise_is_continuous_and_bounded() {
        for i in 0..1000 {
            let x = i as f32 * 0.0137;
            let a = value_noise(3, x, 1.5);
            let b = value_noise(3, x + 1e-3, 1.5);
            assert!((0.0..1.0).contains(&a));
            assert!((a - b).abs() < 0.01);
        }
    }
}
