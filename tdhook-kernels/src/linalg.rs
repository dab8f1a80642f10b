//! Small dense f64 linear algebra: the Cholesky factor and the solves behind the closed-form
//! probes here and the estimators in `tdhook` (one implementation for both).

use rayon::prelude::*;

/// The lower Cholesky factor `L` of the symmetric `a` (`[n, n]`, row-major; only its lower
/// triangle is read), with zeros above the diagonal; `None` when `a` is not numerically
/// positive definite (a pivot below `1e-14` of its diagonal entry, or not finite).
///
/// ```
/// use tdhook_kernels::linalg::{cholesky, cholesky_solve};
/// // a = [[4, 2], [2, 3]], x = [1, -2] → b = [0, -4]
/// let l = cholesky(&[4.0, 2.0, 2.0, 3.0], 2).unwrap();
/// let x = cholesky_solve(&l, 2, &[0.0, -4.0]);
/// assert!((x[0] - 1.0).abs() < 1e-12 && (x[1] + 2.0).abs() < 1e-12);
/// assert!(cholesky(&[1.0, 1.0, 1.0, 1.0], 2).is_none());
/// ```
pub fn cholesky(a: &[f64], n: usize) -> Option<Vec<f64>> {
    let mut l = a[..n * n].to_vec();
    for i in 0..n {
        for j in 0..=i {
            let (ri, rj) = (i * n, j * n);
            let mut s = l[ri + j];
            // s -= L[i, :j] · L[j, :j], four accumulators so the loop vectorises
            let mut acc = [0f64; 4];
            let c = j / 4;
            for q in 0..c {
                for k in 0..4 {
                    acc[k] += l[ri + q * 4 + k] * l[rj + q * 4 + k];
                }
            }
            for p in c * 4..j {
                s -= l[ri + p] * l[rj + p];
            }
            s -= (acc[0] + acc[1]) + (acc[2] + acc[3]);
            if i == j {
                // Relative floor: a pivot lost to rounding means a singular matrix.
                let scale = a[ri + i].abs().max(f64::MIN_POSITIVE);
                if !s.is_finite() || s <= scale * 1e-14 {
                    return None;
                }
                l[ri + i] = s.sqrt();
            } else {
                l[ri + j] = s / l[rj + j];
            }
        }
        l[i * n + i + 1..(i + 1) * n].fill(0.0);
    }
    Some(l)
}

/// Solve `L Lᵀ x = b` given the lower factor `l` from [`cholesky`].
pub fn cholesky_solve(l: &[f64], n: usize, b: &[f64]) -> Vec<f64> {
    let mut z = b[..n].to_vec();
    for i in 0..n {
        let mut s = z[i];
        for p in 0..i {
            s -= l[i * n + p] * z[p];
        }
        z[i] = s / l[i * n + i];
    }
    for i in (0..n).rev() {
        let mut s = z[i];
        for p in i + 1..n {
            s -= l[p * n + i] * z[p];
        }
        z[i] = s / l[i * n + i];
    }
    z
}

/// Solve `(a + alpha·I) x = b` for a symmetric positive semi-definite `a`, adding a diagonal
/// jitter that grows from `1e-12` of the largest diagonal entry until the matrix factors.
/// `None` when no finite jitter makes it factor (non-finite entries).
///
/// ```
/// use tdhook_kernels::linalg::solve_spd_jittered;
/// // singular: the jitter makes it solvable
/// let x = solve_spd_jittered(&[1.0, 1.0, 1.0, 1.0], 2, &[1.0, 1.0], 0.0).unwrap();
/// assert!(x.iter().all(|v| v.is_finite()));
/// assert!(solve_spd_jittered(&[f64::NAN, 0.0, 0.0, 1.0], 2, &[1.0, 1.0], 0.0).is_none());
/// ```
pub fn solve_spd_jittered(a: &[f64], n: usize, b: &[f64], alpha: f64) -> Option<Vec<f64>> {
    let max_diag = (0..n)
        .map(|i| (a[i * n + i] + alpha).abs())
        .fold(0.0, f64::max)
        .max(1e-300);
    let mut m = a[..n * n].to_vec();
    let mut jitter = 0.0;
    loop {
        for i in 0..n {
            m[i * n + i] = a[i * n + i] + alpha + jitter;
        }
        if let Some(l) = cholesky(&m, n) {
            return Some(cholesky_solve(&l, n, b));
        }
        jitter = if jitter == 0.0 {
            max_diag * 1e-12
        } else {
            jitter * 10.0
        };
        if !jitter.is_finite() {
            return None;
        }
    }
}

/// [`solve_spd_jittered`] for `K` systems (`a.len() = K·m·m`, `b.len() = K·m`), in parallel;
/// a system that cannot be solved gives NaN.
pub(crate) fn batched_spd_solve(a: &[f64], b: &[f64], k: usize, m: usize, alpha: f64) -> Vec<f64> {
    let mut out = vec![0f64; k * m];
    out.par_chunks_mut(m.max(1)).enumerate().for_each(|(i, x)| {
        let ai = &a[i * m * m..(i + 1) * m * m];
        let bi = &b[i * m..(i + 1) * m];
        match solve_spd_jittered(ai, m, bi, alpha) {
            Some(sol) => x.copy_from_slice(&sol),
            None => x.fill(f64::NAN),
        }
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn solves_a_known_system() {
        // A = [[4, 2], [2, 3]], b = [2, 1] → x = [0.5, 0]
        let x = batched_spd_solve(&[4., 2., 2., 3.], &[2., 1.], 1, 2, 0.0);
        assert!((x[0] - 0.5).abs() < 1e-12 && x[1].abs() < 1e-12);
    }

    #[test]
    fn singular_matrix_gets_jitter_and_nan_input_does_not_hang() {
        let x = batched_spd_solve(&[1., 1., 1., 1.], &[1., 1.], 1, 2, 0.0);
        assert!(x.iter().all(|v| v.is_finite()));
        let x = batched_spd_solve(&[f64::NAN, 0., 0., 1.], &[1., 1.], 1, 2, 0.0);
        assert!(x.iter().all(|v| v.is_nan()));
    }

    #[test]
    fn the_factor_reproduces_the_matrix_with_zeros_above() {
        // a 5×5 SPD matrix: B Bᵀ + I with B of mixed signs (covers the 4-wide accumulators)
        let n = 5;
        let bm: Vec<f64> = (0..n * n)
            .map(|i| ((i * 7 % 11) as f64 - 5.0) / 3.0)
            .collect();
        let mut a = vec![0.0; n * n];
        for i in 0..n {
            for j in 0..n {
                a[i * n + j] = (0..n).map(|k| bm[i * n + k] * bm[j * n + k]).sum::<f64>()
                    + if i == j { 1.0 } else { 0.0 };
            }
        }
        let l = cholesky(&a, n).unwrap();
        for i in 0..n {
            for j in 0..n {
                if j > i {
                    assert_eq!(l[i * n + j], 0.0);
                }
                let llt: f64 = (0..n).map(|k| l[i * n + k] * l[j * n + k]).sum();
                assert!((llt - a[i * n + j]).abs() < 1e-10, "({i}, {j})");
            }
        }
    }
}
