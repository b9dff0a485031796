//! Memory advice: large buffers that are about to be written backed by huge pages, which on
//! Linux turns thousands of page faults (each a trip into the kernel) into a few.

/// Asks the kernel to back all of `v`'s capacity with huge pages where it can (before it is
/// first written: fewer page faults).
pub fn huge_capacity<T>(v: &mut Vec<T>) {
    advise_huge(v.as_mut_ptr(), v.capacity() * std::mem::size_of::<T>());
}

/// `Vec::with_capacity(n)`, advised onto huge pages (see [`huge_capacity`]).
pub fn huge_vec<T>(n: usize) -> Vec<T> {
    let mut v = Vec::with_capacity(n);
    huge_capacity(&mut v);
    v
}

/// `vec![T::default(); n]` for a `T` whose default is all zero bits, advised onto huge pages
/// before it is first written (a large zeroed allocation is fresh pages, not yet written).
pub fn huge_zeroed<T: Clone + Default>(n: usize) -> Vec<T> {
    let mut v = vec![T::default(); n];
    huge_capacity(&mut v);
    v
}

/// Asks the kernel to back the whole huge pages of the `bytes` bytes at `at` (memory this
/// process owns) with huge pages where it can.
fn advise_huge<T>(at: *mut T, bytes: usize) {
    #[cfg(target_os = "linux")]
    {
        extern "C" {
            fn madvise(addr: *mut std::ffi::c_void, len: usize, advice: i32) -> i32;
        }
        const MADV_HUGEPAGE: i32 = 14;
        const HUGE: usize = 1 << 21;
        let start = at as usize;
        let end = start + bytes;
        let from = start.next_multiple_of(HUGE);
        if from < end && end - from >= HUGE {
            let len = (end - from) / HUGE * HUGE;
            // SAFETY: advice on whole pages inside memory this process owns (the caller's
            // allocation); it changes no contents.
            unsafe {
                madvise(from as *mut std::ffi::c_void, len, MADV_HUGEPAGE);
            }
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (at, bytes);
}
