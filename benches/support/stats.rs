//! Interleaved-timing statistics shared by the benches: wall and process CPU time of a block of
//! calls, medians, percentiles and 95 % bootstrap intervals over paired rounds.

use super::Rng;
use std::hint::black_box;
use std::time::Instant;

/// Wall and process CPU seconds per call over `k` calls of `f`.
pub fn time_k_both<T, E>(k: usize, mut f: impl FnMut() -> Result<T, E>) -> Result<(f64, f64), E> {
    let cpu0 = process_cpu_seconds();
    let start = Instant::now();
    for _ in 0..k {
        black_box(f()?);
    }
    let wall = start.elapsed().as_secs_f64();
    let cpu = process_cpu_seconds() - cpu0;
    Ok((wall / k as f64, cpu / k as f64))
}

/// CPU time of the whole process (all threads), `CLOCK_PROCESS_CPUTIME_ID`: unlike wall time it
/// does not grow while other processes have the core, which on a shared machine is most of the
/// noise. It still counts rayon workers spinning while they wait for work, and it cannot remove
/// cache and memory-bus interference. NaN where unavailable.
#[cfg(target_os = "linux")]
pub fn process_cpu_seconds() -> f64 {
    #[repr(C)]
    struct Timespec {
        tv_sec: i64,
        tv_nsec: i64,
    }
    unsafe extern "C" {
        fn clock_gettime(clock: i32, tp: *mut Timespec) -> i32;
    }
    const CLOCK_PROCESS_CPUTIME_ID: i32 = 2;
    let mut ts = Timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: glibc's clock_gettime writes one timespec (64-bit fields on 64-bit Linux).
    let rc = unsafe { clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    if rc == 0 {
        ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
    } else {
        f64::NAN
    }
}

#[cfg(not(target_os = "linux"))]
pub fn process_cpu_seconds() -> f64 {
    f64::NAN
}

pub fn median(xs: &[f64]) -> f64 {
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        0.5 * (v[n / 2 - 1] + v[n / 2])
    }
}

pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i]
}

/// A statistic with its 95 % bootstrap interval.
#[derive(Clone, Copy)]
pub struct Est {
    pub value: f64,
    pub lo: f64,
    pub hi: f64,
}

impl std::fmt::Display for Est {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:.4} [{:.4}, {:.4}]", self.value, self.lo, self.hi)
    }
}

/// `stat` on the rounds and on 2000 bootstrap resamples of them (a round's plain and dsl times
/// stay together).
pub fn bootstrap(tp: &[f64], td: &[f64], stat: impl Fn(&[f64], &[f64]) -> f64) -> Est {
    let n = tp.len();
    let mut rng = Rng::new(0xB007);
    let mut boots: Vec<f64> = (0..2000)
        .map(|_| {
            let idx: Vec<usize> = (0..n).map(|_| rng.below(n)).collect();
            let p: Vec<f64> = idx.iter().map(|&i| tp[i]).collect();
            let d: Vec<f64> = idx.iter().map(|&i| td[i]).collect();
            stat(&p, &d)
        })
        .collect();
    boots.sort_by(f64::total_cmp);
    Est {
        value: stat(tp, td),
        lo: percentile(&boots, 0.025),
        hi: percentile(&boots, 0.975),
    }
}

pub fn p10(xs: &[f64]) -> f64 {
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    percentile(&v, 0.10)
}
