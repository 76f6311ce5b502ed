//! The numpy behaviour pycocotools' numbers depend on, reproduced bit for
//! bit: `np.linspace` (the thresholds), stable `np.argsort(-scores)` (the
//! ranking in `evaluateImg` and `accumulate`) and numpy's pairwise summation
//! (the means in `summarize`).

use std::cmp::Ordering;

/// Evenly spaced values computed as `numpy.linspace(start, stop, num)` does
/// (`i * step + start`, last element forced to `stop`), so that comparisons
/// against the thresholds agree with numpy bit for bit (0.9 comes out as
/// 0.8999999999999999, for instance).
pub fn linspace(start: f64, stop: f64, num: usize) -> Vec<f64> {
    if num == 0 {
        return Vec::new();
    }
    if num == 1 {
        return vec![start];
    }
    let step = (stop - start) / (num - 1) as f64;
    let mut out: Vec<f64> = (0..num).map(|i| i as f64 * step + start).collect();
    out[num - 1] = stop;
    out
}

/// Descending score order as numpy's `argsort(-scores)`: equal scores compare
/// equal (so a stable sort keeps input order) and NaN goes last.
pub(super) fn by_score_desc(a: f64, b: f64) -> Ordering {
    match (a.is_nan(), b.is_nan()) {
        (false, false) => b.partial_cmp(&a).unwrap_or(Ordering::Equal),
        (a_nan, b_nan) => a_nan.cmp(&b_nan),
    }
}

/// The sum of `a` in numpy's summation order (`pairwise_sum` in numpy's
/// loops): plain below 8 values, 8 interleaved partial sums up to 128,
/// otherwise split in two halves (the first a multiple of 8). Summing in the
/// same order makes the means bit-identical to pycocotools', not just close.
pub(super) fn pairwise_sum(a: &[f64]) -> f64 {
    let n = a.len();
    if n < 8 {
        a.iter().fold(-0.0, |acc, &v| acc + v)
    } else if n <= 128 {
        let mut r = [0.0; 8];
        r.copy_from_slice(&a[..8]);
        let blocks_end = n - n % 8;
        for block in a[8..blocks_end].chunks_exact(8) {
            for (acc, &v) in r.iter_mut().zip(block) {
                *acc += v;
            }
        }
        let mut res = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
        for &v in &a[blocks_end..] {
            res += v;
        }
        res
    } else {
        let half = n / 2;
        let half = half - half % 8;
        pairwise_sum(&a[..half]) + pairwise_sum(&a[half..])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairwise_sum_follows_numpy_order() {
        // Exact on integers whatever the order; checks every branch adds all.
        for n in [0usize, 1, 7, 8, 9, 16, 127, 128, 129, 1000, 5050] {
            let a: Vec<f64> = (0..n).map(|i| (i % 13) as f64).collect();
            assert_eq!(pairwise_sum(&a), a.iter().sum::<f64>(), "n = {n}");
        }
        // [1, 1e-16 x 8]: left to right every tiny term is lost against the
        // 1, while numpy's partial sums add six of them together first.
        let mut a = vec![1.0];
        a.extend([1e-16; 8]);
        assert_eq!(a.iter().sum::<f64>(), 1.0);
        // np.sum(np.array([1.0] + [1e-16] * 8)) in numpy 2.x:
        assert_eq!(pairwise_sum(&a), 1.0000000000000007);
    }
}
