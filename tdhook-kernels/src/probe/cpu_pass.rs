//! The CPU pass of the logistic probes: loss and gradient of one probe over fixed chunks of
//! rows, with AVX-512, AVX2+FMA and generic bodies chosen at run time.

use super::logistic::Evaluator;
use candle_core::Result;
use rayon::prelude::*;

/// Rows per task of the CPU pass: fixed, so the reduction order never depends on threads.
const CHUNK: usize = 256;

/// Row `z`'s loss `softplus(z) − y·z` (f64) and residual `σ(z) − y` (f32), sharing one
/// `e^{−|z|}`.
#[inline(always)]
fn loss_and_residual(z: f32, y: f32) -> (f64, f32) {
    let zd = z as f64;
    let e = (-zd.abs()).exp();
    let softplus = zd.max(0.0) + e.ln_1p();
    let sigmoid = if zd >= 0.0 {
        1.0 / (1.0 + e)
    } else {
        e / (1.0 + e)
    };
    (softplus - (y as f64) * zd, (sigmoid - y as f64) as f32)
}

pub(crate) struct CpuEval<'a> {
    pub x: &'a [f32],
    pub y: &'a [f32],
    pub n: usize,
    pub d: usize,
}

impl Evaluator for CpuEval<'_> {
    fn eval(
        &mut self,
        active: &[usize],
        theta: &[f32],
        loss: &mut [f64],
        grad: &mut [f64],
    ) -> Result<()> {
        let (n, d) = (self.n, self.d);
        let dp = d + 1;
        let n_chunks = n.div_ceil(CHUNK);
        let tasks: Vec<(usize, usize)> = active
            .iter()
            .flat_map(|&k| (0..n_chunks).map(move |c| (k, c)))
            .collect();
        let simd = simd_level();
        let run = |&(k, c): &(usize, usize)| -> (f64, f64, Vec<f32>) {
            let w = &theta[k * dp..k * dp + d];
            let b = theta[k * dp + d];
            let xk = &self.x[k * n * d..(k + 1) * n * d];
            let rows = c * CHUNK..((c + 1) * CHUNK).min(n);
            let mut g = vec![0f32; d];
            let (l, gb) = chunk_pass_dispatch(simd, xk, self.y, w, b, d, rows, &mut g);
            (l, gb, g)
        };
        let parts: Vec<(f64, f64, Vec<f32>)> =
            if tasks.len() > 1 && rayon::current_num_threads() > 1 {
                tasks.par_iter().map(run).collect()
            } else {
                tasks.iter().map(run).collect()
            };
        for &k in active {
            loss[k] = 0.0;
            grad[k * dp..(k + 1) * dp].iter_mut().for_each(|v| *v = 0.0);
        }
        for (&(k, _), (l, gb, g)) in tasks.iter().zip(parts) {
            loss[k] += l;
            let gk = &mut grad[k * dp..(k + 1) * dp];
            for (a, &v) in gk[..d].iter_mut().zip(&g) {
                *a += v as f64;
            }
            gk[d] += gb;
        }
        Ok(())
    }
}

/// The widest vector unit the CPU pass can use here.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Simd {
    Generic,
    Avx2,
    Avx512,
}

/// The CPU's [`Simd`] level (detected once).
pub(crate) fn simd_level() -> Simd {
    #[cfg(target_arch = "x86_64")]
    {
        static LEVEL: std::sync::OnceLock<Simd> = std::sync::OnceLock::new();
        *LEVEL.get_or_init(|| {
            let avx2 = is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma");
            if avx2 && is_x86_feature_detected!("avx512f") {
                Simd::Avx512
            } else if avx2 {
                Simd::Avx2
            } else {
                Simd::Generic
            }
        })
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        Simd::Generic
    }
}

#[inline(always)]
fn madd<const FMA: bool>(a: f32, b: f32, c: f32) -> f32 {
    if FMA { a.mul_add(b, c) } else { a * b + c }
}

/// Rows processed together by the CPU pass: their logits share the loads of `w`, and their
/// gradient contributions share one read-modify-write sweep of the accumulator.
const BLOCK: usize = 4;

/// `acc[e] += x[e]·w[e]` on 8 lanes.
#[inline(always)]
fn lane_fma<const FMA: bool>(acc: &mut [f32; 8], x: &[f32; 8], w: &[f32; 8]) {
    for e in 0..8 {
        acc[e] = madd::<FMA>(x[e], w[e], acc[e]);
    }
}

/// `w·x` for one row (8 lanes, fixed reduction order).
#[inline(always)]
fn dot8<const FMA: bool>(x: &[f32], w: &[f32]) -> f32 {
    let (xc, xr) = x.as_chunks::<8>();
    let (wc, wr) = w.as_chunks::<8>();
    let mut a = [0f32; 8];
    for (xv, wv) in xc.iter().zip(wc) {
        for e in 0..8 {
            a[e] = madd::<FMA>(xv[e], wv[e], a[e]);
        }
    }
    let mut t = 0f32;
    for (&xv, &wv) in xr.iter().zip(wr) {
        t = madd::<FMA>(xv, wv, t);
    }
    ((a[0] + a[4]) + (a[1] + a[5])) + ((a[2] + a[6]) + (a[3] + a[7])) + t
}

/// Loss and gradient sums over `rows` of one probe; `g` accumulates `Σ r·x`. Returns
/// `(Σ loss, Σ r)`. Generic over fused multiply-add so the AVX2 build can use it.
#[inline(always)]
fn chunk_pass<const FMA: bool>(
    xk: &[f32],
    y: &[f32],
    w: &[f32],
    b: f32,
    d: usize,
    rows: std::ops::Range<usize>,
    g: &mut [f32],
) -> (f64, f64) {
    let (mut l, mut gb) = (0f64, 0f64);
    let w = &w[..d];
    let g = &mut g[..d];
    let mut i = rows.start;
    while i < rows.end {
        let nb = BLOCK.min(rows.end - i);
        if nb == BLOCK {
            let x0 = &xk[i * d..(i + 1) * d];
            let x1 = &xk[(i + 1) * d..(i + 2) * d];
            let x2 = &xk[(i + 2) * d..(i + 3) * d];
            let x3 = &xk[(i + 3) * d..(i + 4) * d];
            // four logits sharing the loads of w
            let (wc, wr) = w.as_chunks::<8>();
            let (c0, r0) = x0.as_chunks::<8>();
            let (c1, r1) = x1.as_chunks::<8>();
            let (c2, r2) = x2.as_chunks::<8>();
            let (c3, r3) = x3.as_chunks::<8>();
            // one 8-lane accumulator per row, each updated by its own lane loop (so the
            // compiler vectorises along the lanes, not across rows)
            let (mut a0, mut a1, mut a2, mut a3) = ([0f32; 8], [0f32; 8], [0f32; 8], [0f32; 8]);
            for ((((wv, v0), v1), v2), v3) in wc.iter().zip(c0).zip(c1).zip(c2).zip(c3) {
                lane_fma::<FMA>(&mut a0, v0, wv);
                lane_fma::<FMA>(&mut a1, v1, wv);
                lane_fma::<FMA>(&mut a2, v2, wv);
                lane_fma::<FMA>(&mut a3, v3, wv);
            }
            let acc = [a0, a1, a2, a3];
            let tails = [r0, r1, r2, r3];
            let mut r = [0f32; BLOCK];
            for q in 0..BLOCK {
                let a = &acc[q];
                let mut t = 0f32;
                for (&xv, &wv) in tails[q].iter().zip(wr) {
                    t = madd::<FMA>(xv, wv, t);
                }
                let z = b + (((a[0] + a[4]) + (a[1] + a[5])) + ((a[2] + a[6]) + (a[3] + a[7])) + t);
                let yi = y[i + q];
                let (lq, rq) = loss_and_residual(z, yi);
                l += lq;
                r[q] = rq;
                gb += r[q] as f64;
            }
            // one read-modify-write sweep of g for the four rows
            let (gc, gr) = g.as_chunks_mut::<8>();
            let (s0, s1, s2, s3) = ([r[0]; 8], [r[1]; 8], [r[2]; 8], [r[3]; 8]);
            for ((((gv, v0), v1), v2), v3) in gc.iter_mut().zip(c0).zip(c1).zip(c2).zip(c3) {
                lane_fma::<FMA>(gv, v0, &s0);
                lane_fma::<FMA>(gv, v1, &s1);
                lane_fma::<FMA>(gv, v2, &s2);
                lane_fma::<FMA>(gv, v3, &s3);
            }
            for (j, gj) in gr.iter_mut().enumerate() {
                let mut v = *gj;
                for q in 0..BLOCK {
                    v = madd::<FMA>(r[q], tails[q][j], v);
                }
                *gj = v;
            }
        } else {
            for q in 0..nb {
                let row = &xk[(i + q) * d..(i + q + 1) * d];
                let z = b + dot8::<FMA>(row, w);
                let yi = y[i + q];
                let (lq, rq) = loss_and_residual(z, yi);
                l += lq;
                gb += rq as f64;
                for (gj, &xj) in g.iter_mut().zip(row) {
                    *gj = madd::<FMA>(rq, xj, *gj);
                }
            }
        }
        i += nb;
    }
    (l, gb)
}

/// Defines `$name::<R>`: [`chunk_pass`] with explicit `$lanes`-wide intrinsics, `R` rows at a
/// time sharing the loads of `w` and one read-modify-write sweep of `g`, one accumulator
/// per row (left to itself, the compiler vectorises across the rows and spends its time
/// shuffling). Leftover rows go through the generic pass.
macro_rules! simd_chunk_pass {
    ($name:ident, $features:literal, $lanes:literal, $zero:ident, $load:ident, $store:ident,
     $fmadd:ident, $set1:ident, $hsum:expr) => {
        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = $features)]
        fn $name<const R: usize>(
            xk: &[f32],
            y: &[f32],
            w: &[f32],
            b: f32,
            d: usize,
            rows: std::ops::Range<usize>,
            g: &mut [f32],
        ) -> (f64, f64) {
            use std::arch::x86_64::*;
            assert!(
                xk.len() >= rows.end * d && w.len() >= d && g.len() >= d && y.len() >= rows.end
            );
            let lanes = d / $lanes * $lanes;
            let (mut l, mut gb) = (0f64, 0f64);
            let mut i = rows.start;
            while i + R <= rows.end {
                // SAFETY: rows i..i+R lie within `xk` (asserted above); j + $lanes <= lanes
                // <= d.
                unsafe {
                    let p: [*const f32; R] = std::array::from_fn(|q| xk.as_ptr().add((i + q) * d));
                    let (wp, gp) = (w.as_ptr(), g.as_mut_ptr());
                    let mut acc = [$zero(); R];
                    let mut j = 0;
                    while j < lanes {
                        let wv = $load(wp.add(j));
                        for q in 0..R {
                            acc[q] = $fmadd($load(p[q].add(j)), wv, acc[q]);
                        }
                        j += $lanes;
                    }
                    let mut r = [0f32; R];
                    let mut s = [$zero(); R];
                    for q in 0..R {
                        let mut t = 0f32;
                        for (jj, &wj) in w.iter().enumerate().take(d).skip(lanes) {
                            t = (*p[q].add(jj)).mul_add(wj, t);
                        }
                        let z = b + ($hsum(acc[q]) + t);
                        let (lq, rq) = loss_and_residual(z, y[i + q]);
                        l += lq;
                        r[q] = rq;
                        gb += rq as f64;
                        s[q] = $set1(rq);
                    }
                    let mut j = 0;
                    while j < lanes {
                        let mut gv = $load(gp.add(j));
                        for q in 0..R {
                            gv = $fmadd(s[q], $load(p[q].add(j)), gv);
                        }
                        $store(gp.add(j), gv);
                        j += $lanes;
                    }
                    for (jj, gj) in g.iter_mut().enumerate().take(d).skip(lanes) {
                        let mut v = *gj;
                        for q in 0..R {
                            v = r[q].mul_add(*p[q].add(jj), v);
                        }
                        *gj = v;
                    }
                }
                i += R;
            }
            let (l2, gb2) = chunk_pass::<true>(xk, y, w, b, d, i..rows.end, g);
            (l + l2, gb + gb2)
        }
    };
}

/// Horizontal sum of 8 lanes in the generic pass's order.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn hsum256(v: std::arch::x86_64::__m256) -> f32 {
    let mut a = [0f32; 8];
    // SAFETY: `a` has room for 8 floats.
    unsafe { std::arch::x86_64::_mm256_storeu_ps(a.as_mut_ptr(), v) };
    ((a[0] + a[4]) + (a[1] + a[5])) + ((a[2] + a[6]) + (a[3] + a[7]))
}

simd_chunk_pass!(
    chunk_pass_avx2,
    "avx2,fma",
    8,
    _mm256_setzero_ps,
    _mm256_loadu_ps,
    _mm256_storeu_ps,
    _mm256_fmadd_ps,
    _mm256_set1_ps,
    hsum256
);
simd_chunk_pass!(
    chunk_pass_avx512,
    "avx512f,avx2,fma",
    16,
    _mm512_setzero_ps,
    _mm512_loadu_ps,
    _mm512_storeu_ps,
    _mm512_fmadd_ps,
    _mm512_set1_ps,
    _mm512_reduce_add_ps
);

#[allow(clippy::too_many_arguments)]
fn chunk_pass_dispatch(
    simd: Simd,
    xk: &[f32],
    y: &[f32],
    w: &[f32],
    b: f32,
    d: usize,
    rows: std::ops::Range<usize>,
    g: &mut [f32],
) -> (f64, f64) {
    match simd {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `simd_level` found AVX-512F (and AVX2, FMA) on this CPU.
        Simd::Avx512 => unsafe { chunk_pass_avx512::<ROWS_512>(xk, y, w, b, d, rows, g) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `simd_level` found AVX2 and FMA on this CPU.
        Simd::Avx2 => unsafe { chunk_pass_avx2::<BLOCK>(xk, y, w, b, d, rows, g) },
        _ => chunk_pass::<false>(xk, y, w, b, d, rows, g),
    }
}

/// Rows per block of the AVX-512 pass.
const ROWS_512: usize = 8;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_simd_pass_agrees_with_the_generic_one() {
        // d = 45: the 16- and 8-lane bodies plus scalar tails; n = 37: full blocks of 4 and 8
        // rows plus leftover rows.
        let (n, d) = (37, 45);
        let mut s = 7u64;
        let mut next = || {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        };
        let x: Vec<f32> = (0..n * d).map(|_| next()).collect();
        let w: Vec<f32> = (0..d).map(|_| next()).collect();
        let y: Vec<f32> = (0..n).map(|i| (i % 3 == 0) as u8 as f32).collect();
        let mut g0 = vec![0f32; d];
        let (l0, b0) = chunk_pass::<false>(&x, &y, &w, 0.3, d, 0..n, &mut g0);
        let levels: &[Simd] = match simd_level() {
            Simd::Avx512 => &[Simd::Avx2, Simd::Avx512],
            Simd::Avx2 => &[Simd::Avx2],
            Simd::Generic => &[],
        };
        for &level in levels {
            let mut g1 = vec![0f32; d];
            let (l1, b1) = chunk_pass_dispatch(level, &x, &y, &w, 0.3, d, 0..n, &mut g1);
            assert!(
                (l0 - l1).abs() < 1e-4 && (b0 - b1).abs() < 1e-4,
                "{level:?}"
            );
            for (a, b) in g0.iter().zip(&g1) {
                assert!((a - b).abs() < 1e-4, "{level:?}: {a} {b}");
            }
        }
    }
}
