//! Small dense f64 linear algebra for the closed-form probes.

use rayon::prelude::*;

/// Solves `(A_k + alpha·I) x_k = b_k` for `K` symmetric positive semi-definite `m × m`
/// matrices (row-major, `a.len() = K·m·m`, `b.len() = K·m`), by Cholesky. A matrix that is
/// not numerically positive definite gets a growing diagonal jitter (relative to its trace)
/// until it factors.
pub(crate) fn batched_spd_solve(a: &[f64], b: &[f64], k: usize, m: usize, alpha: f64) -> Vec<f64> {
    let mut out = vec![0f64; k * m];
    out.par_chunks_mut(m.max(1)).enumerate().for_each(|(i, x)| {
        let ai = &a[i * m * m..(i + 1) * m * m];
        let bi = &b[i * m..(i + 1) * m];
        x.copy_from_slice(&solve_one(ai, bi, m, alpha));
    });
    out
}

fn solve_one(a: &[f64], b: &[f64], m: usize, alpha: f64) -> Vec<f64> {
    let trace: f64 = (0..m)
        .map(|i| a[i * m + i])
        .sum::<f64>()
        .abs()
        .max(f64::MIN_POSITIVE);
    let mut jitter = 0.0;
    loop {
        let mut l = a.to_vec();
        for i in 0..m {
            l[i * m + i] += alpha + jitter;
        }
        if cholesky_in_place(&mut l, m) {
            return cholesky_solve(&l, b, m);
        }
        jitter = if jitter == 0.0 {
            1e-12 * trace / m as f64
        } else {
            jitter * 10.0
        };
    }
}

/// Lower Cholesky factor in place (the lower triangle of `a` becomes `L`); false when a pivot
/// is not positive. Row-oriented so the inner loop is a contiguous dot product.
fn cholesky_in_place(a: &mut [f64], m: usize) -> bool {
    for i in 0..m {
        for j in 0..=i {
            let (ri, rj) = (i * m, j * m);
            let mut s = a[ri + j];
            // s -= L[i, :j] · L[j, :j]
            let mut acc = [0f64; 4];
            let c = j / 4;
            for q in 0..c {
                for l in 0..4 {
                    acc[l] += a[ri + q * 4 + l] * a[rj + q * 4 + l];
                }
            }
            for p in c * 4..j {
                s -= a[ri + p] * a[rj + p];
            }
            s -= (acc[0] + acc[1]) + (acc[2] + acc[3]);
            if i == j {
                if s <= 0.0 || !s.is_finite() {
                    return false;
                }
                a[ri + i] = s.sqrt();
            } else {
                a[ri + j] = s / a[rj + j];
            }
        }
    }
    true
}

fn cholesky_solve(l: &[f64], b: &[f64], m: usize) -> Vec<f64> {
    // L z = b
    let mut z = b.to_vec();
    for i in 0..m {
        let mut s = z[i];
        for p in 0..i {
            s -= l[i * m + p] * z[p];
        }
        z[i] = s / l[i * m + i];
    }
    // Lᵀ x = z
    for i in (0..m).rev() {
        let mut s = z[i];
        for p in i + 1..m {
            s -= l[p * m + i] * z[p];
        }
        z[i] = s / l[i * m + i];
    }
    z
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
    fn singular_matrix_gets_jitter() {
        let x = batched_spd_solve(&[1., 1., 1., 1.], &[1., 1.], 1, 2, 0.0);
        assert!(x.iter().all(|v| v.is_finite()));
    }
}
