//! Running candle's CPU ops on the calling thread.
//!
//! candle hands its parallel CPU ops (`gemm`'s matmul split, softmax, layer norm, …) to rayon's
//! global pool. Called from a thread outside that pool (your `main`), every such op is queued to
//! a worker and the caller sleeps until it is done: a few microseconds per op, which is most of
//! a small model's forward (BENCHMARKS.md, "Threads"). Making the calling thread a member of the pool removes the hand-off: the op runs
//! inline and the other workers steal halves of it.
//!
//! Call [`use_current_thread`] once, at the start of `main`, before anything uses rayon.
//!
//! candle 0.11 also asks for the thread count on every matmul: with `RAYON_NUM_THREADS` unset
//! it re-reads and parses `/proc/cpuinfo` each time (through `num_cpus::get_physical`), which
//! doubled the tiny GPT-2's forward (BENCHMARKS.md, "Threads"). Set the variable in your environment, or call [`pin_rayon_num_threads`] first thing
//! in `main`.

use crate::{Error, Result};

/// Sets `RAYON_NUM_THREADS` to `threads` (`None`: the number of CPUs this process may use)
/// unless the environment already sets it, and returns the value in effect.
///
/// candle reads the variable on every matmul and, when it is unset, parses `/proc/cpuinfo`
/// instead; a fixed value costs it one environment lookup.
///
/// # Safety
///
/// As [`std::env::set_var`]: no other thread may read or write the environment while this
/// runs. Call it at the very start of `main`, before spawning threads or using rayon or candle.
///
/// ```standalone_crate
/// // First thing in `main`:
/// // SAFETY: no other thread exists yet.
/// let n = unsafe { tdhook::threads::pin_rayon_num_threads(None) };
/// assert_eq!(std::env::var("RAYON_NUM_THREADS").unwrap(), n.to_string());
/// ```
pub unsafe fn pin_rayon_num_threads(threads: Option<usize>) -> usize {
    let set = std::env::var("RAYON_NUM_THREADS")
        .ok()
        .and_then(|v| v.trim().parse::<usize>().ok())
        .filter(|&n| n > 0);
    if let Some(n) = set {
        return n;
    }
    let n = threads.filter(|&n| n > 0).unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    });
    // SAFETY: the caller guarantees no concurrent environment access.
    unsafe { std::env::set_var("RAYON_NUM_THREADS", n.to_string()) };
    n
}

/// Builds rayon's global pool with the calling thread as worker 0 (and `threads − 1` more),
/// so candle's parallel CPU ops called from this thread run on it instead of being handed over.
///
/// `threads`: the pool's size, the calling thread included; `None` takes `RAYON_NUM_THREADS`,
/// else the number of CPUs. candle sizes its matmul split by `RAYON_NUM_THREADS` (or the CPU
/// count), so set that variable rather than passing a smaller `threads` when limiting threads.
///
/// Errors if the global pool already exists (something used rayon first: call this earlier)
/// or if this thread already belongs to a pool.
///
/// The calling thread only works for the pool while it is inside a parallel op of its own; a
/// pool of one thread therefore runs work queued from *other* threads only when this one next
/// does parallel work: with other threads using rayon, keep `threads >= 2`.
///
/// ```standalone_crate
/// // At the start of `main`, before any candle op:
/// match tdhook::threads::use_current_thread(None) {
///     Ok(()) => assert_eq!(rayon::current_thread_index(), Some(0)),
///     // A test harness or an earlier call may have built the pool already.
///     Err(e) => eprintln!("running ops through the default pool: {e}"),
/// }
/// ```
pub fn use_current_thread(threads: Option<usize>) -> Result<()> {
    let threads = threads.unwrap_or(0); // rayon: 0 = RAYON_NUM_THREADS or the CPU count
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .use_current_thread()
        .thread_name(|i| format!("tdhook-rayon-{i}"))
        .build_global()
        .map_err(|e| {
            Error::Invalid(format!(
                "could not make this thread part of rayon's global pool: {e}; call \
                 tdhook::threads::use_current_thread once, at the start of main, before any \
                 candle op or other rayon use"
            ))
        })
}
