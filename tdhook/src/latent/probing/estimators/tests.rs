//! Estimator tests: closed forms and naive references.
#![allow(clippy::needless_range_loop)] // the naive references index like the formulas
use super::*;
use crate::Error;

/// Deterministic uniform numbers in [-1, 1).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 11) as f64 / (1u64 << 52) as f64 - 1.0
    }
}

/// `n` rows of `f` features; class 1 rows are shifted by `shift` along every feature.
fn blobs(n: usize, f: usize, shift: f64, seed: u64) -> (Vec<f64>, Vec<f64>) {
    let mut rng = Rng(seed);
    let mut x = Vec::with_capacity(n * f);
    let mut y = Vec::with_capacity(n);
    for i in 0..n {
        let label = (i % 2) as f64;
        for j in 0..f {
            x.push(rng.next() * (1.0 + j as f64 * 0.3) + label * shift);
        }
        y.push(label);
    }
    (x, y)
}

fn tx(x: &[f64], n: usize, f: usize) -> Tensor {
    Tensor::from_vec(
        x.iter().map(|&v| v as f32).collect::<Vec<_>>(),
        (n, f),
        &Device::Cpu,
    )
    .unwrap()
}

fn ty(y: &[f64]) -> Tensor {
    Tensor::from_vec(
        y.iter().map(|&v| v as f32).collect::<Vec<_>>(),
        y.len(),
        &Device::Cpu,
    )
    .unwrap()
}

/// The data as the estimators see it (rounded to f32, as the tensors hold it).
fn rounded(v: &[f64]) -> Vec<f64> {
    v.iter().map(|&v| v as f32 as f64).collect()
}

fn close(a: f64, b: f64, tol: f64) -> bool {
    (a - b).abs() <= tol * (1.0 + b.abs())
}

#[test]
fn mean_difference_equals_the_closed_form_computed_naively() -> Result<()> {
    let (n, f) = (30, 5);
    let (x, y) = blobs(n, f, 0.7, 7);
    let xr = rounded(&x);
    // Naive: the class means, their difference and half the difference of squared norms.
    let mean = |class: f64| -> Vec<f64> {
        let rows: Vec<usize> = (0..n).filter(|&i| y[i] == class).collect();
        (0..f)
            .map(|j| rows.iter().map(|&i| xr[i * f + j]).sum::<f64>() / rows.len() as f64)
            .collect()
    };
    let (mp, mn) = (mean(1.0), mean(0.0));
    let coef: Vec<f64> = (0..f).map(|j| mp[j] - mn[j]).collect();
    let sq = |v: &[f64]| v.iter().map(|a| a * a).sum::<f64>();
    let intercept = -0.5 * (sq(&mp) - sq(&mn));
    let norm = sq(&coef).sqrt();

    let mut raw = MeanDifferenceClassifier::new().normalize(false);
    raw.fit(&tx(&x, n, f), &ty(&y))?;
    let m = raw.fitted().unwrap();
    for j in 0..f {
        assert!(
            close(m.coef[j], coef[j], 1e-12),
            "coef[{j}] {} vs {}",
            m.coef[j],
            coef[j]
        );
    }
    assert!(close(m.intercept, intercept, 1e-12));

    let mut normed = MeanDifferenceClassifier::new();
    normed.fit(&tx(&x, n, f), &ty(&y))?;
    let m = normed.fitted().unwrap();
    for j in 0..f {
        assert!(close(m.coef[j], coef[j] / norm, 1e-12));
    }
    assert!(close(m.intercept, intercept / norm, 1e-12));
    assert_eq!(normed.coef()?.dims(), &[1, f]);
    assert_eq!(normed.intercept()?.dims(), &[1]);

    // predict = decision > 0; predict_proba = [1 − σ, σ].
    let xt = tx(&x, n, f);
    let pred = normed.predict(&xt)?.to_vec1::<u8>()?;
    let proba = normed.predict_proba(&xt)?.to_vec2::<f32>()?;
    for i in 0..n {
        let d: f64 = (0..f).map(|j| xr[i * f + j] * m.coef[j]).sum::<f64>() + m.intercept;
        assert_eq!(pred[i], u8::from(d > 0.0));
        assert!((proba[i][0] + proba[i][1] - 1.0).abs() < 1e-6);
        assert!((proba[i][1] as f64 - 1.0 / (1.0 + (-d).exp())).abs() < 1e-6);
    }
    Ok(())
}

#[test]
fn one_class_only_is_a_typed_error_naming_the_estimator() {
    let x = tx(&[1.0, 2.0, 3.0, 4.0], 2, 2);
    let y = ty(&[1.0, 1.0]);
    for est in [
        &mut MeanDifferenceClassifier::new() as &mut dyn Estimator,
        &mut LogisticRegression::new(),
    ] {
        let err = est.fit(&x, &y).unwrap_err();
        assert!(
            matches!(
                err,
                Error::Estimator(EstimatorError::OneClass { class: 1, n: 2, .. })
            ),
            "{err:?}"
        );
        let msg = err.to_string();
        assert!(
            msg.contains("Both classes must be present") && msg.contains(est.name()),
            "{msg}"
        );
    }
}

#[test]
fn labels_other_than_0_1_and_bad_shapes_are_typed_errors() {
    let x = tx(&[1.0, 2.0, 3.0, 4.0], 2, 2);
    let err = MeanDifferenceClassifier::new()
        .fit(&x, &ty(&[0.0, 2.0]))
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::Estimator(EstimatorError::BadLabel { value: 2.0, .. })
        ),
        "{err:?}"
    );

    // y of the wrong length names both shapes.
    let err = LogisticRegression::new()
        .fit(&x, &ty(&[0.0, 1.0, 1.0]))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("[2, 2]") && err.contains("[3]") && err.contains("LogisticRegression"),
        "{err}"
    );
    // x not 2-D.
    let x1 = ty(&[1.0, 2.0]);
    let err = Ridge::new()
        .fit(&x1, &ty(&[0.0, 1.0]))
        .unwrap_err()
        .to_string();
    assert!(err.contains("[N, F]") && err.contains("[2]"), "{err}");
    // Multiclass y.
    let err = MeanDifferenceClassifier::new()
        .fit(&x, &x)
        .unwrap_err()
        .to_string();
    assert!(err.contains("Multiclass"), "{err}");
    // Predict before fit, and with the wrong feature count.
    let err = Ridge::new().predict(&x).unwrap_err();
    assert!(matches!(
        err,
        Error::Estimator(EstimatorError::NotFitted { estimator: "Ridge" })
    ));
    let mut mdc = MeanDifferenceClassifier::new();
    mdc.fit(&x, &ty(&[0.0, 1.0])).unwrap();
    let err = mdc
        .predict(&tx(&[1.0, 2.0, 3.0], 1, 3))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("[1, 3]") && err.contains("2 features"),
        "{err}"
    );
    // Non-finite data.
    let err = Ridge::new()
        .fit(&tx(&[f64::NAN, 1.0], 2, 1), &ty(&[0.0, 1.0]))
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::Estimator(EstimatorError::NotFinite { what: "x", .. })
        ),
        "{err:?}"
    );
    // Bad hyper-parameters.
    let err = LogisticRegression::new()
        .c(0.0)
        .fit(&x, &ty(&[0.0, 1.0]))
        .unwrap_err();
    assert!(matches!(
        err,
        Error::Estimator(EstimatorError::BadParam { param: "C", .. })
    ));
}

/// The gradient of sklearn's objective `C Σ log-loss + ½‖w‖²`, computed naively.
fn sklearn_grad(x: &[f64], y: &[f64], n: usize, f: usize, c: f64, w: &[f64], b: f64) -> Vec<f64> {
    let mut g: Vec<f64> = w.to_vec();
    let mut gb = 0.0;
    for i in 0..n {
        let z: f64 = (0..f).map(|j| x[i * f + j] * w[j]).sum::<f64>() + b;
        let p = 1.0 / (1.0 + (-z).exp());
        for j in 0..f {
            g[j] += c * (p - y[i]) * x[i * f + j];
        }
        gb += c * (p - y[i]);
    }
    g.push(gb);
    g
}

#[test]
fn logistic_regression_satisfies_kkt_with_both_solvers() -> Result<()> {
    let (n, f) = (60, 8);
    let (x, y) = blobs(n, f, 0.4, 11);
    let xr = rounded(&x);
    let mut fits = vec![];
    for solver in [LogisticSolver::NewtonCholesky, LogisticSolver::NewtonCg] {
        for c in [0.1, 1.0, 50.0] {
            let mut lr = LogisticRegression::new().c(c).solver(solver);
            lr.fit(&tx(&x, n, f), &ty(&y))?;
            assert!(lr.converged(), "{solver:?} C={c}: {} steps", lr.n_iter());
            let m = lr.fitted().unwrap();
            let g = sklearn_grad(&xr, &y, n, f, c, &m.coef, m.intercept);
            let scale = c * n as f64;
            let gmax = g.iter().fold(0.0f64, |a, v| a.max(v.abs()));
            assert!(gmax <= 1e-7 * scale, "{solver:?} C={c}: |∇| = {gmax:e}");
            fits.push((c, m.clone()));
        }
    }
    // Both solvers land on one optimum.
    for k in 0..3 {
        let (a, b) = (&fits[k].1, &fits[k + 3].1);
        for j in 0..f {
            assert!(
                close(a.coef[j], b.coef[j], 1e-6),
                "C={}: {} vs {}",
                fits[k].0,
                a.coef[j],
                b.coef[j]
            );
        }
        assert!(close(a.intercept, b.intercept, 1e-6));
    }
    Ok(())
}

#[test]
fn logistic_regression_equals_gradient_descent_run_to_convergence() -> Result<()> {
    let (n, f) = (40, 3);
    let (x, y) = blobs(n, f, 0.5, 3);
    let xr = rounded(&x);
    let c = 2.0;
    // Plain full-batch gradient descent on C Σ ℓ + ½‖w‖², step 1 / L.
    let l = 1.0
        + c * 0.25
            * (0..n)
                .map(|i| 1.0 + (0..f).map(|j| xr[i * f + j].powi(2)).sum::<f64>())
                .sum::<f64>();
    let (mut w, mut b) = (vec![0.0; f], 0.0);
    for _ in 0..200_000 {
        let g = sklearn_grad(&xr, &y, n, f, c, &w, b);
        for j in 0..f {
            w[j] -= g[j] / l;
        }
        b -= g[f] / l;
    }
    let mut lr = LogisticRegression::new().c(c);
    lr.fit(&tx(&x, n, f), &ty(&y))?;
    let m = lr.fitted().unwrap();
    for j in 0..f {
        assert!(
            close(m.coef[j], w[j], 1e-6),
            "coef[{j}]: {} vs GD {}",
            m.coef[j],
            w[j]
        );
    }
    assert!(
        close(m.intercept, b, 1e-6),
        "intercept {} vs GD {b}",
        m.intercept
    );

    // Without an intercept the intercept stays 0 and KKT holds on w alone.
    let mut lr = LogisticRegression::new().c(c).fit_intercept(false);
    lr.fit(&tx(&x, n, f), &ty(&y))?;
    let m = lr.fitted().unwrap();
    assert_eq!(m.intercept, 0.0);
    let g = sklearn_grad(&xr, &y, n, f, c, &m.coef, 0.0);
    assert!(
        g[..f].iter().all(|v| v.abs() < 1e-6 * c * n as f64),
        "{g:?}"
    );
    Ok(())
}

#[test]
fn logistic_regression_separates_a_separable_set() -> Result<()> {
    let (n, f) = (50, 4);
    let (x, y) = blobs(n, f, 5.0, 5);
    let mut lr = LogisticRegression::new();
    lr.fit(&tx(&x, n, f), &ty(&y))?;
    let pred = lr.predict(&tx(&x, n, f))?.to_vec1::<u8>()?;
    let correct = pred
        .iter()
        .zip(&y)
        .filter(|(p, y)| **p as f64 == **y)
        .count();
    assert_eq!(correct, n);
    let proba = lr.predict_proba(&tx(&x, n, f))?.to_vec2::<f32>()?;
    assert!(
        proba
            .iter()
            .zip(&pred)
            .all(|(p, &c)| (p[1] > 0.5) == (c == 1))
    );
    assert_eq!(lr.coef()?.dims(), &[1, f]);
    assert_eq!(lr.intercept()?.dims(), &[1]);
    Ok(())
}

/// Solve `a x = b` by Gaussian elimination with partial pivoting.
fn gauss(mut a: Vec<f64>, mut b: Vec<f64>, n: usize) -> Vec<f64> {
    for col in 0..n {
        let piv = (col..n)
            .max_by(|&i, &j| a[i * n + col].abs().total_cmp(&a[j * n + col].abs()))
            .unwrap();
        for k in 0..n {
            a.swap(col * n + k, piv * n + k);
        }
        b.swap(col, piv);
        for r in col + 1..n {
            let m = a[r * n + col] / a[col * n + col];
            for k in col..n {
                a[r * n + k] -= m * a[col * n + k];
            }
            b[r] -= m * b[col];
        }
    }
    let mut x = vec![0.0; n];
    for r in (0..n).rev() {
        let s: f64 = (r + 1..n).map(|k| a[r * n + k] * x[k]).sum();
        x[r] = (b[r] - s) / a[r * n + r];
    }
    x
}

/// Ridge with an unpenalised intercept from the normal equations of `[w, b]`.
fn ridge_naive(x: &[f64], y: &[f64], n: usize, f: usize, alpha: f64) -> (Vec<f64>, f64) {
    let d = f + 1;
    let row = |i: usize| (0..d).map(move |j| if j < f { x[i * f + j] } else { 1.0 });
    let mut a = vec![0.0; d * d];
    let mut rhs = vec![0.0; d];
    for i in 0..n {
        let r: Vec<f64> = row(i).collect();
        for j in 0..d {
            for k in 0..d {
                a[j * d + k] += r[j] * r[k];
            }
            rhs[j] += r[j] * y[i];
        }
    }
    for j in 0..f {
        a[j * d + j] += alpha;
    }
    let mut sol = gauss(a, rhs, d);
    let b = sol.pop().unwrap();
    (sol, b)
}

#[test]
fn ridge_equals_the_normal_equations_in_primal_and_kernel_form() -> Result<()> {
    for (n, f) in [(30, 4), (6, 10)] {
        let (x, _) = blobs(n, f, 0.0, 13);
        let mut rng = Rng(99);
        let y: Vec<f64> = (0..n)
            .map(|i| x[i * f] * 2.0 - x[i * f + 1] + 0.5 + 0.1 * rng.next())
            .collect();
        let (xr, yr) = (rounded(&x), rounded(&y));
        for alpha in [0.5, 3.0] {
            let mut ridge = Ridge::new().alpha(alpha);
            ridge.fit(&tx(&x, n, f), &ty(&y))?;
            let m = ridge.fitted().unwrap();
            let (w, b) = ridge_naive(&xr, &yr, n, f, alpha);
            for j in 0..f {
                assert!(
                    close(m.coef[j], w[j], 1e-9),
                    "n={n} f={f} α={alpha}: {} vs {}",
                    m.coef[j],
                    w[j]
                );
            }
            assert!(close(m.intercept, b, 1e-9));
            // predict = x · coef + intercept.
            let pred = ridge.predict(&tx(&x, n, f))?.to_vec1::<f32>()?;
            let want: f64 = (0..f).map(|j| xr[j] * w[j]).sum::<f64>() + b;
            assert!((pred[0] as f64 - want).abs() < 1e-4);
        }
    }
    // No intercept: (XᵀX + αI) w = Xᵀy, KKT: Xᵀ(Xw − y) + αw = 0.
    let (n, f) = (20, 3);
    let (x, _) = blobs(n, f, 0.0, 17);
    let y: Vec<f64> = (0..n).map(|i| x[i * f] - x[i * f + 2] + 1.0).collect();
    let mut ridge = Ridge::new().alpha(0.7).fit_intercept(false);
    ridge.fit(&tx(&x, n, f), &ty(&y))?;
    let m = ridge.fitted().unwrap();
    let (xr, yr) = (rounded(&x), rounded(&y));
    for j in 0..f {
        let g: f64 = (0..n)
            .map(|i| {
                xr[i * f + j] * ((0..f).map(|k| xr[i * f + k] * m.coef[k]).sum::<f64>() - yr[i])
            })
            .sum::<f64>()
            + 0.7 * m.coef[j];
        assert!(g.abs() < 1e-9, "KKT[{j}] = {g:e}");
    }
    assert_eq!(m.intercept, 0.0);
    assert_eq!(ridge.coef()?.dims(), &[f]);
    assert_eq!(ridge.intercept()?.dims(), &[] as &[usize]);
    Ok(())
}

#[test]
fn ridge_without_penalty_on_too_few_samples_is_singular() {
    let (x, y) = blobs(4, 6, 0.0, 1);
    let err = Ridge::new()
        .alpha(0.0)
        .fit(&tx(&x, 4, 6), &ty(&y))
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::Estimator(EstimatorError::Singular { n: 4, f: 6, .. })
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("alpha > 0"));
}

#[test]
fn fits_are_deterministic() -> Result<()> {
    let (x, y) = blobs(40, 6, 0.3, 21);
    let fit = || -> Result<LinearModel> {
        let mut lr = LogisticRegression::new().solver(LogisticSolver::NewtonCg);
        lr.fit(&tx(&x, 40, 6), &ty(&y))?;
        Ok(lr.fitted().unwrap().clone())
    };
    assert_eq!(fit()?, fit()?);
    Ok(())
}
