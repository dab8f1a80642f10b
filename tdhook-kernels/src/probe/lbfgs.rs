//! L-BFGS with Armijo backtracking for `K` probes, driven by an [`Evaluator`] that computes every
//! active probe's loss and gradient in one pass.

use super::logistic::{Evaluator, LogisticConfig};
use candle_core::Result;

pub(crate) struct LbfgsResult {
    pub theta: Vec<f64>,
    pub f: Vec<f64>,
    pub gnorm: Vec<f64>,
    pub iters: Vec<usize>,
    pub converged: Vec<bool>,
    pub passes: usize,
}

impl LbfgsResult {
    /// Results of probes trained separately, in order; `passes` is the largest count.
    pub(super) fn concat(parts: Vec<LbfgsResult>) -> Self {
        let mut all = LbfgsResult {
            theta: vec![],
            f: vec![],
            gnorm: vec![],
            iters: vec![],
            converged: vec![],
            passes: 0,
        };
        for p in parts {
            all.theta.extend(p.theta);
            all.f.extend(p.f);
            all.gnorm.extend(p.gnorm);
            all.iters.extend(p.iters);
            all.converged.extend(p.converged);
            all.passes = all.passes.max(p.passes);
        }
        all
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Phase {
    /// Waiting for the evaluation at the starting point.
    Start,
    /// Waiting for the evaluation at `theta + step·dir`.
    Search,
    Done,
}

struct Probe {
    theta: Vec<f64>,
    f: f64,
    g: Vec<f64>,
    dir: Vec<f64>,
    step: f64,
    gtd: f64,
    s: Vec<Vec<f64>>,
    yv: Vec<Vec<f64>>,
    rho: Vec<f64>,
    phase: Phase,
    iters: usize,
    converged: bool,
}

fn dot64(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn inf_norm(g: &[f64]) -> f64 {
    g.iter().fold(0.0, |m, v| m.max(v.abs()))
}

impl Probe {
    /// L-BFGS two-loop direction `−H g` (H₀ = γI with γ = sᵀy/yᵀy of the newest pair).
    fn direction(&mut self) {
        let m = self.s.len();
        let mut q: Vec<f64> = self.g.clone();
        let mut al = vec![0f64; m];
        for i in (0..m).rev() {
            al[i] = self.rho[i] * dot64(&self.s[i], &q);
            for (qj, yj) in q.iter_mut().zip(&self.yv[i]) {
                *qj -= al[i] * yj;
            }
        }
        let gamma = if m > 0 {
            dot64(&self.s[m - 1], &self.yv[m - 1]) / dot64(&self.yv[m - 1], &self.yv[m - 1])
        } else {
            1.0
        };
        q.iter_mut().for_each(|v| *v *= gamma);
        for (i, &a) in al.iter().enumerate() {
            let be = self.rho[i] * dot64(&self.yv[i], &q);
            for (qj, sj) in q.iter_mut().zip(&self.s[i]) {
                *qj += (a - be) * sj;
            }
        }
        q.iter_mut().for_each(|v| *v = -*v);
        self.dir = q;
        self.gtd = dot64(&self.g, &self.dir);
        if self.gtd >= 0.0 || !self.gtd.is_finite() {
            // Not a descent direction (numerical trouble): restart from steepest descent.
            self.s.clear();
            self.yv.clear();
            self.rho.clear();
            self.dir = self.g.iter().map(|v| -v).collect();
            self.gtd = -dot64(&self.g, &self.g);
        }
        self.step = if m == 0 {
            1.0 / self.g.iter().map(|v| v * v).sum::<f64>().sqrt().max(1.0)
        } else {
            1.0
        };
    }

    fn trial(&self) -> Vec<f64> {
        self.theta
            .iter()
            .zip(&self.dir)
            .map(|(t, p)| t + self.step * p)
            .collect()
    }
}

/// Adds the mean scaling and the L2 term to the data sums of probe `k`.
pub(super) fn finish(
    loss: f64,
    grad: &[f64],
    theta: &[f64],
    n: usize,
    d: usize,
    l2: f64,
    fit_b: bool,
) -> (f64, Vec<f64>) {
    let inv_n = 1.0 / n as f64;
    let w = &theta[..d];
    let f = loss * inv_n + 0.5 * l2 * dot64(w, w);
    let mut g: Vec<f64> = grad.iter().map(|v| v * inv_n).collect();
    for j in 0..d {
        g[j] += l2 * w[j];
    }
    if !fit_b {
        g[d] = 0.0;
    }
    (f, g)
}

pub(crate) fn lbfgs(
    ev: &mut dyn Evaluator,
    k: usize,
    n: usize,
    d: usize,
    cfg: &LogisticConfig,
) -> Result<LbfgsResult> {
    let dp = d + 1;
    const C1: f64 = 1e-4;
    let mut probes: Vec<Probe> = (0..k)
        .map(|_| Probe {
            theta: vec![0.0; dp],
            f: 0.0,
            g: vec![0.0; dp],
            dir: vec![0.0; dp],
            step: 0.0,
            gtd: 0.0,
            s: Vec::new(),
            yv: Vec::new(),
            rho: Vec::new(),
            phase: Phase::Start,
            iters: 0,
            converged: false,
        })
        .collect();
    let mut theta32 = vec![0f32; k * dp];
    let mut loss = vec![0f64; k];
    let mut grad = vec![0f64; k * dp];
    let mut passes = 0usize;
    let mut trials: Vec<Vec<f64>> = vec![Vec::new(); k];
    loop {
        let active: Vec<usize> = (0..k).filter(|&i| probes[i].phase != Phase::Done).collect();
        if active.is_empty() {
            break;
        }
        for &i in &active {
            let p = &probes[i];
            trials[i] = if p.phase == Phase::Start {
                p.theta.clone()
            } else {
                p.trial()
            };
            for (dst, &v) in theta32[i * dp..(i + 1) * dp].iter_mut().zip(&trials[i]) {
                *dst = v as f32;
            }
        }
        ev.eval(&active, &theta32, &mut loss, &mut grad)?;
        passes += 1;
        for &i in &active {
            let p = &mut probes[i];
            let (f_new, g_new) = finish(
                loss[i],
                &grad[i * dp..(i + 1) * dp],
                &trials[i],
                n,
                d,
                cfg.l2,
                cfg.fit_intercept,
            );
            match p.phase {
                Phase::Start => {
                    p.f = f_new;
                    p.g = g_new;
                    if inf_norm(&p.g) <= cfg.tol {
                        p.converged = true;
                        p.phase = Phase::Done;
                    } else if cfg.max_iter == 0 {
                        p.phase = Phase::Done;
                    } else {
                        p.direction();
                        p.phase = Phase::Search;
                    }
                }
                Phase::Search => {
                    // Armijo, or Hager–Zhang's approximate Wolfe condition: near the optimum
                    // the loss (from f32 logits) is noisier than its decrease, while the
                    // gradient stays accurate.
                    let gtd_new = dot64(&g_new, &p.dir);
                    let armijo = f_new <= p.f + C1 * p.step * p.gtd;
                    let approx_wolfe = f_new <= p.f + 1e-6 * p.f.abs()
                        && gtd_new <= (2.0 * 0.1 - 1.0) * p.gtd
                        && gtd_new >= 0.9 * p.gtd;
                    if f_new.is_finite() && (armijo || approx_wolfe) {
                        let trial = std::mem::take(&mut trials[i]);
                        let s: Vec<f64> = trial.iter().zip(&p.theta).map(|(a, b)| a - b).collect();
                        let yv: Vec<f64> = g_new.iter().zip(&p.g).map(|(a, b)| a - b).collect();
                        let sy = dot64(&s, &yv);
                        if sy > 1e-12 * dot64(&yv, &yv).sqrt() * dot64(&s, &s).sqrt() && sy > 0.0 {
                            if p.s.len() == cfg.history.max(1) {
                                p.s.remove(0);
                                p.yv.remove(0);
                                p.rho.remove(0);
                            }
                            p.s.push(s);
                            p.yv.push(yv);
                            p.rho.push(1.0 / sy);
                        }
                        p.theta = trial;
                        p.f = f_new;
                        p.g = g_new;
                        p.iters += 1;
                        if inf_norm(&p.g) <= cfg.tol {
                            p.converged = true;
                            p.phase = Phase::Done;
                        } else if p.iters >= cfg.max_iter {
                            p.phase = Phase::Done;
                        } else {
                            p.direction();
                        }
                    } else {
                        // Backtrack: minimiser of the quadratic through f(0), f'(0), f(step),
                        // kept within [0.1, 0.5]·step.
                        let t = p.step;
                        let denom = 2.0 * (f_new - p.f - p.gtd * t);
                        let tq = if f_new.is_finite() && denom > 0.0 {
                            -p.gtd * t * t / denom
                        } else {
                            0.1 * t
                        };
                        p.step = tq.clamp(0.1 * t, 0.5 * t);
                        if p.step < 1e-20 {
                            p.phase = Phase::Done; // line search failed: keep the last point
                        }
                    }
                }
                Phase::Done => {}
            }
        }
    }
    Ok(LbfgsResult {
        gnorm: probes.iter().map(|p| inf_norm(&p.g)).collect(),
        f: probes.iter().map(|p| p.f).collect(),
        iters: probes.iter().map(|p| p.iters).collect(),
        converged: probes.iter().map(|p| p.converged).collect(),
        theta: probes.into_iter().flat_map(|p| p.theta).collect(),
        passes,
    })
}
