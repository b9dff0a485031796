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

/// Whether huge pages are asked for: yes unless the environment variable
/// `TOKLAB_NO_HUGE_PAGES` is set to anything but `0` or nothing (read once per process). Where
/// free huge pages are scarce, the kernel may compact memory on the first faults of advised
/// ranges (`defrag` set to `madvise`), which can make a first call slower than 4 KiB pages.
pub fn huge_pages() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| huge_pages_given(std::env::var_os("TOKLAB_NO_HUGE_PAGES").as_deref()))
}

/// [`huge_pages`] for this value of `TOKLAB_NO_HUGE_PAGES`.
fn huge_pages_given(off: Option<&std::ffi::OsStr>) -> bool {
    off.is_none_or(|v| v.is_empty() || v == "0")
}

/// Asks the kernel to back the whole huge pages of the `bytes` bytes at `at` (memory this
/// process owns) with huge pages where it can (see [`huge_pages`]).
fn advise_huge<T>(at: *mut T, bytes: usize) {
    #[cfg(target_os = "linux")]
    if huge_pages() {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn huge_pages_are_off_only_when_asked() {
        let off = |v: &str| huge_pages_given(Some(std::ffi::OsStr::new(v)));
        assert!(huge_pages_given(None));
        assert!(off("") && off("0"));
        assert!(!off("1") && !off("yes") && !off("true"));
    }

    #[test]
    fn advised_vectors_work_as_vectors() {
        let mut v: Vec<u64> = huge_zeroed(3 << 20);
        assert!(v.iter().all(|&x| x == 0));
        v[12345] = 7;
        let mut w: Vec<u32> = huge_vec(10);
        w.extend(0..(5u32 << 20));
        assert_eq!((v[12345], w.len(), w[1 << 20]), (7, 5 << 20, 1 << 20));
    }
}
