//! Scoped worker threads without a global pool.
//!
//! Why not rayon: a global pool does not survive `fork`, and Python users fork (`datasets.map(
//! num_proc=...)`, DataLoader workers). Threads here live only for the duration of one call, so a
//! forked child starts clean. Results never depend on the thread count: work is split by content
//! and combined in input order (or by commutative sums).

use std::sync::atomic::{AtomicUsize, Ordering};

/// Threads per available core that a request may ask for: results never depend on the count,
/// and far more threads than cores would only cost memory (or fail to start).
const MAX_PER_CORE: usize = 4;

/// The thread count to use for `requested` (0 = all available cores), never more than `work`
/// or [`MAX_PER_CORE`] per core.
pub fn thread_count(requested: usize, work: usize) -> usize {
    let available = std::thread::available_parallelism().map_or(1, usize::from);
    let n = if requested == 0 {
        available
    } else {
        requested.min(available * MAX_PER_CORE)
    };
    n.clamp(1, work.max(1))
}

/// Applies `f` to every item on up to `threads` threads; results come back in input order.
pub fn map<T: Sync, R: Send>(items: &[T], threads: usize, f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    let threads = thread_count(threads, items.len());
    if threads <= 1 {
        return items.iter().map(f).collect();
    }
    let next = AtomicUsize::new(0);
    // The calling thread is one of the workers: one spawn fewer, and its thread-local state
    // (piece caches) stays warm across calls.
    let work = || {
        let mut done = Vec::new();
        loop {
            let i = next.fetch_add(1, Ordering::Relaxed);
            if i >= items.len() {
                break done;
            }
            done.push((i, f(&items[i])));
        }
    };
    let mut chunks: Vec<Vec<(usize, R)>> = std::thread::scope(|s| {
        let handles: Vec<_> = (1..threads).map(|_| s.spawn(work)).collect();
        let mut chunks = vec![work()];
        for h in handles {
            chunks.push(h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)));
        }
        chunks
    });
    let mut slots: Vec<Option<R>> = (0..items.len()).map(|_| None).collect();
    for chunk in chunks.iter_mut() {
        for (i, r) in chunk.drain(..) {
            slots[i] = Some(r);
        }
    }
    slots.into_iter().flatten().collect()
}

/// Folds every item into per-thread accumulators made by `init`, then returns them all; the
/// caller combines them with a commutative, associative merge.
pub fn fold<T: Sync, A: Send>(
    items: &[T],
    threads: usize,
    init: impl Fn() -> A + Sync,
    f: impl Fn(&mut A, &T) + Sync,
) -> Vec<A> {
    let threads = thread_count(threads, items.len());
    if threads <= 1 {
        let mut acc = init();
        for item in items {
            f(&mut acc, item);
        }
        return vec![acc];
    }
    let next = AtomicUsize::new(0);
    let work = || {
        let mut acc = init();
        loop {
            let i = next.fetch_add(1, Ordering::Relaxed);
            if i >= items.len() {
                break acc;
            }
            f(&mut acc, &items[i]);
        }
    };
    std::thread::scope(|s| {
        let handles: Vec<_> = (1..threads).map(|_| s.spawn(work)).collect();
        let mut accs = vec![work()];
        for h in handles {
            accs.push(h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)));
        }
        accs
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn map_keeps_order() {
        let items: Vec<u32> = (0..1000).collect();
        for threads in [1, 2, 7] {
            assert_eq!(
                super::map(&items, threads, |x| x * 2),
                items.iter().map(|x| x * 2).collect::<Vec<_>>()
            );
        }
    }

    #[test]
    fn thread_counts_are_capped_per_core() {
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        assert_eq!(super::thread_count(0, usize::MAX), cores);
        assert_eq!(super::thread_count(usize::MAX, usize::MAX), 4 * cores);
        assert_eq!(super::thread_count(3, 2), 2);
        assert_eq!(super::thread_count(5, 0), 1);
    }

    #[test]
    fn fold_sums() {
        let items: Vec<u64> = (0..1000).collect();
        for threads in [1, 3] {
            let parts = super::fold(&items, threads, || 0u64, |a, x| *a += x);
            assert_eq!(parts.iter().sum::<u64>(), 499_500);
        }
    }
}
