//! The little dense linear algebra the estimators need, in `f64` on the host: Gram matrices,
//! Cholesky solves, matrix–vector products. Row-major throughout.

/// `x · v` for `x` of shape `[n, f]`.
pub(crate) fn matvec(x: &[f64], n: usize, f: usize, v: &[f64]) -> Vec<f64> {
    (0..n).map(|i| dot(&x[i * f..(i + 1) * f], v)).collect()
}

/// `xᵀ · u` for `x` of shape `[n, f]`.
pub(crate) fn matvec_t(x: &[f64], n: usize, f: usize, u: &[f64]) -> Vec<f64> {
    let mut out = vec![0.0; f];
    for i in 0..n {
        let ui = u[i];
        if ui == 0.0 {
            continue;
        }
        for (o, &xij) in out.iter_mut().zip(&x[i * f..(i + 1) * f]) {
            *o += ui * xij;
        }
    }
    out
}

pub(crate) fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(a, b)| a * b).sum()
}

/// `Σᵢ wᵢ xᵢ xᵢᵀ` (`[f, f]`, full), `w = None` for weights 1.
pub(crate) fn weighted_gram(x: &[f64], n: usize, f: usize, w: Option<&[f64]>) -> Vec<f64> {
    let mut g = vec![0.0; f * f];
    for i in 0..n {
        let wi = w.map_or(1.0, |w| w[i]);
        if wi == 0.0 {
            continue;
        }
        let row = &x[i * f..(i + 1) * f];
        for j in 0..f {
            let a = wi * row[j];
            if a == 0.0 {
                continue;
            }
            let gj = &mut g[j * f..(j + 1) * f];
            for k in j..f {
                gj[k] += a * row[k];
            }
        }
    }
    for j in 0..f {
        for k in 0..j {
            g[j * f + k] = g[k * f + j];
        }
    }
    g
}

/// `x xᵀ` (`[n, n]`) for `x` of shape `[n, f]`.
pub(crate) fn outer_gram(x: &[f64], n: usize, f: usize) -> Vec<f64> {
    let mut k = vec![0.0; n * n];
    for i in 0..n {
        for j in i..n {
            let v = dot(&x[i * f..(i + 1) * f], &x[j * f..(j + 1) * f]);
            k[i * n + j] = v;
            k[j * n + i] = v;
        }
    }
    k
}

pub(crate) use tdhook_kernels::linalg::{cholesky, cholesky_solve};

/// Solve the symmetric positive (semi-)definite `a x = b`, adding a growing jitter to the
/// diagonal when the factorisation fails (a Newton step only needs a descent direction: when
/// nothing factors, steepest descent, `b` itself).
pub(crate) fn solve_spd_jitter(a: &[f64], n: usize, b: &[f64]) -> Vec<f64> {
    tdhook_kernels::linalg::solve_spd_jittered(a, n, b, 0.0).unwrap_or_else(|| b.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cholesky_solves_a_known_system() {
        // a = [[4, 2], [2, 3]], x = [1, -2] → b = [0, -4].
        let a = [4.0, 2.0, 2.0, 3.0];
        let l = cholesky(&a, 2).unwrap();
        let x = cholesky_solve(&l, 2, &[0.0, -4.0]);
        assert!(
            (x[0] - 1.0).abs() < 1e-12 && (x[1] + 2.0).abs() < 1e-12,
            "{x:?}"
        );
    }

    #[test]
    fn cholesky_rejects_a_singular_matrix() {
        assert!(cholesky(&[1.0, 1.0, 1.0, 1.0], 2).is_none());
        // The jittered solve still returns something finite.
        let x = solve_spd_jitter(&[1.0, 1.0, 1.0, 1.0], 2, &[1.0, 1.0]);
        assert!(x.iter().all(|v| v.is_finite()));
    }

    #[test]
    fn gram_matches_the_definition() {
        let x = [1.0, 2.0, 3.0, -1.0, 0.5, 4.0];
        let g = weighted_gram(&x, 3, 2, Some(&[1.0, 2.0, 0.5]));
        let want = |j: usize, k: usize| {
            (0..3)
                .map(|i| [1.0, 2.0, 0.5][i] * x[i * 2 + j] * x[i * 2 + k])
                .sum::<f64>()
        };
        for j in 0..2 {
            for k in 0..2 {
                assert!((g[j * 2 + k] - want(j, k)).abs() < 1e-12);
            }
        }
        let k = outer_gram(&x, 3, 2);
        assert!((k[1] - (1.0 * 3.0 - 2.0 * 1.0)).abs() < 1e-12);
        assert_eq!(matvec(&x, 3, 2, &[1.0, 1.0]), vec![3.0, 2.0, 4.5]);
        assert_eq!(matvec_t(&x, 3, 2, &[1.0, 1.0, 1.0]), vec![4.5, 5.0]);
    }
}
