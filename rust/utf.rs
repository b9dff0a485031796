//! UTF-8 from the fixed-width code units that Python keeps a `str` in (one, two or four bytes a
//! character: Latin-1, UCS-2, UCS-4).
//!
//! CPython converts a `str` to UTF-8 one character at a time, with a branch per character
//! (about 2 ns a character on the development machine: 40 ms for a 20 MB text, more than a
//! tenth of a first BPE encode of it). Text is mostly ASCII, even most multilingual text, so
//! these take sixteen characters at a time where all of them are ASCII, and one at a time
//! otherwise. A surrogate code point (which a `str` may hold, and UTF-8 cannot) gives `None`:
//! the caller lets Python raise its own error.

/// Characters per block of the ASCII fast path.
const BLOCK: usize = 16;

/// A width of code unit.
trait Unit: Copy + Into<u32> {
    /// [`wide`]'s loop for this width: the bytes written, `None` for a refused code point.
    ///
    /// # Safety
    /// The CPU has AVX-512 ([`wide::available`]); `dst` has room for `units.len() * 4 + 64`
    /// bytes.
    #[cfg(target_arch = "x86_64")]
    unsafe fn wide_loop(units: &[Self], dst: *mut u8) -> Option<usize>;

    /// The UTF-8 of `units` at `dst`, with AVX-512 ([`wide`]), where the CPU has it: the bytes
    /// written, or `Some(None)` for a refused code point; `None` without AVX-512.
    ///
    /// # Safety
    /// `dst` has room for `units.len() * 4 + 64` bytes.
    unsafe fn wide(units: &[Self], dst: *mut u8) -> Option<Option<usize>> {
        #[cfg(target_arch = "x86_64")]
        if wide::available() {
            return Some(Self::wide_loop(units, dst));
        }
        let _ = (units, dst);
        None
    }

    /// Writes `block`'s 16 units as 16 bytes at `dst` if they are all ASCII; else false.
    ///
    /// # Safety
    /// `block` holds [`BLOCK`] units and `dst` has room for [`BLOCK`] bytes.
    #[inline(always)]
    unsafe fn ascii_block(block: &[Self], dst: *mut u8) -> bool {
        if block.iter().fold(0u32, |a, &c| a | c.into()) >= 0x80 {
            return false;
        }
        for (i, &c) in block.iter().enumerate() {
            dst.add(i).write(c.into() as u8);
        }
        true
    }
}

impl Unit for u8 {
    #[cfg(target_arch = "x86_64")]
    unsafe fn wide_loop(units: &[u8], dst: *mut u8) -> Option<usize> {
        wide::wide_u8(units, dst)
    }

    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn ascii_block(block: &[u8], dst: *mut u8) -> bool {
        use std::arch::x86_64::*;
        let v = _mm_loadu_si128(block.as_ptr().cast());
        if _mm_movemask_epi8(v) != 0 {
            return false;
        }
        _mm_storeu_si128(dst.cast(), v);
        true
    }
}

impl Unit for u16 {
    #[cfg(target_arch = "x86_64")]
    unsafe fn wide_loop(units: &[u16], dst: *mut u8) -> Option<usize> {
        wide::wide_u16(units, dst)
    }

    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn ascii_block(block: &[u16], dst: *mut u8) -> bool {
        use std::arch::x86_64::*;
        let p = block.as_ptr().cast::<__m128i>();
        let (a, b) = (_mm_loadu_si128(p), _mm_loadu_si128(p.add(1)));
        let high = _mm_and_si128(_mm_or_si128(a, b), _mm_set1_epi16(!0x7F));
        if _mm_movemask_epi8(_mm_cmpeq_epi8(high, _mm_setzero_si128())) != 0xFFFF {
            return false;
        }
        _mm_storeu_si128(dst.cast(), _mm_packus_epi16(a, b));
        true
    }
}

impl Unit for u32 {
    #[cfg(target_arch = "x86_64")]
    unsafe fn wide_loop(units: &[u32], dst: *mut u8) -> Option<usize> {
        wide::wide_u32(units, dst)
    }

    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn ascii_block(block: &[u32], dst: *mut u8) -> bool {
        use std::arch::x86_64::*;
        let p = block.as_ptr().cast::<__m128i>();
        let (a, b) = (_mm_loadu_si128(p), _mm_loadu_si128(p.add(1)));
        let (c, d) = (_mm_loadu_si128(p.add(2)), _mm_loadu_si128(p.add(3)));
        let any = _mm_or_si128(_mm_or_si128(a, b), _mm_or_si128(c, d));
        let high = _mm_and_si128(any, _mm_set1_epi32(!0x7F));
        if _mm_movemask_epi8(_mm_cmpeq_epi8(high, _mm_setzero_si128())) != 0xFFFF {
            return false;
        }
        // (All below 0x80: the signed packs keep them.)
        let low = _mm_packs_epi32(a, b);
        let high = _mm_packs_epi32(c, d);
        _mm_storeu_si128(dst.cast(), _mm_packus_epi16(low, high));
        true
    }
}

/// Writes the UTF-8 of `units` (code points) to `out` after its contents, where each unit
/// takes at most `most` bytes; `false` (and `out` unchanged) where one is a surrogate or
/// above U+10FFFF.
fn extend_utf8<T: Unit>(units: &[T], out: &mut Vec<u8>, most: usize) -> bool {
    extend_utf8_with(units, out, most, true)
}

/// [`extend_utf8`], with AVX-512 where the CPU has it and `wide` is true.
fn extend_utf8_with<T: Unit>(units: &[T], out: &mut Vec<u8>, most: usize, wide: bool) -> bool {
    let start = out.len();
    // (Every character is written as four bytes, of which its own are kept: room for three
    // more after the last.)
    out.reserve(units.len() * most.max(4) + 64);
    // SAFETY: every write below is inside the room reserved: a block of ASCII writes 16
    // bytes for 16 units, any other unit at most 4 bytes at `at`, which never passes
    // `most` bytes a unit before it (so at most `units.len() * most + 3` in all; `wide`
    // needs `units.len() * 4 + 64`); the length is set to the bytes written, all
    // initialized.
    unsafe {
        let dst = out.as_mut_ptr().add(start);
        if let Some(wide) = wide.then(|| T::wide(units, dst)).flatten() {
            let Some(at) = wide else { return false };
            out.set_len(start + at);
            return true;
        }
        let mut at = 0;
        let mut bad = false;
        let mut blocks = units.chunks_exact(BLOCK);
        for block in blocks.by_ref() {
            if T::ascii_block(block, dst.add(at)) {
                at += BLOCK;
                continue;
            }
            for &c in block {
                let (bytes, n, refused) = encode_char(c.into());
                dst.add(at).cast::<u32>().write_unaligned(bytes);
                at += n;
                bad |= refused;
            }
            if bad {
                return false;
            }
        }
        for &c in blocks.remainder() {
            let (bytes, n, refused) = encode_char(c.into());
            dst.add(at).cast::<u32>().write_unaligned(bytes);
            at += n;
            bad |= refused;
        }
        if bad {
            return false;
        }
        out.set_len(start + at);
    }
    true
}

/// Code point `c`'s UTF-8 (little-endian, in the low bytes), its length, and whether it is
/// refused (a surrogate, or above U+10FFFF): computed for every length and picked without a
/// branch on it, since the lengths of mixed text are hard to predict.
#[inline(always)]
fn encode_char(c: u32) -> (u32, usize, bool) {
    let cont = |shift: u32| 0x80 | ((c >> shift) & 0x3F);
    let two = (0xC0 | (c >> 6)) | cont(0) << 8;
    let three = (0xE0 | (c >> 12)) | cont(6) << 8 | cont(0) << 16;
    let four = (0xF0 | (c >> 18)) | cont(12) << 8 | cont(6) << 16 | cont(0) << 24;
    let n = 1 + usize::from(c >= 0x80) + usize::from(c >= 0x800) + usize::from(c >= 0x1_0000);
    let small = if c >= 0x80 { two } else { c };
    let large = if c >= 0x1_0000 { four } else { three };
    let bytes = if c >= 0x800 { large } else { small };
    (bytes, n, (c & !0x7FF) == 0xD800 || c > 0x10_FFFF)
}

/// AVX-512 (with VBMI2's byte compression): sixteen code points at a time whatever their
/// lengths, each lane's four candidate bytes made and the unused ones squeezed out.
#[cfg(target_arch = "x86_64")]
mod wide {
    use std::arch::x86_64::*;

    /// Whether this CPU has the instructions used here (checked once).
    pub(super) fn available() -> bool {
        static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        *ON.get_or_init(|| {
            is_x86_feature_detected!("avx512f")
                && is_x86_feature_detected!("avx512bw")
                && is_x86_feature_detected!("avx512vbmi2")
        })
    }

    /// Writes the UTF-8 of the 16 code points in `c`'s lanes at `dst` (64 bytes of room);
    /// the bytes written and whether one of them is refused.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vbmi2")]
    unsafe fn block(c: __m512i, dst: *mut u8) -> (usize, bool) {
        let wide = _mm512_cmpge_epu32_mask(c, _mm512_set1_epi32(0x80));
        if wide == 0 {
            _mm_storeu_si128(dst.cast(), _mm512_cvtepi32_epi8(c));
            return (16, false);
        }
        let (x3f, x80) = (_mm512_set1_epi32(0x3F), _mm512_set1_epi32(0x80));
        let c0 = _mm512_or_si512(x80, _mm512_and_si512(c, x3f));
        let c6 = _mm512_or_si512(x80, _mm512_and_si512(_mm512_srli_epi32::<6>(c), x3f));
        let c12 = _mm512_or_si512(x80, _mm512_and_si512(_mm512_srli_epi32::<12>(c), x3f));
        let lead = |tag: i32, shift: __m512i| {
            _mm512_or_si512(_mm512_set1_epi32(tag), _mm512_srlv_epi32(c, shift))
        };
        let two = _mm512_or_si512(lead(0xC0, _mm512_set1_epi32(6)), _mm512_slli_epi32::<8>(c0));
        let three = _mm512_or_si512(
            lead(0xE0, _mm512_set1_epi32(12)),
            _mm512_or_si512(_mm512_slli_epi32::<8>(c6), _mm512_slli_epi32::<16>(c0)),
        );
        let four = _mm512_or_si512(
            _mm512_or_si512(
                lead(0xF0, _mm512_set1_epi32(18)),
                _mm512_slli_epi32::<8>(c12),
            ),
            _mm512_or_si512(_mm512_slli_epi32::<16>(c6), _mm512_slli_epi32::<24>(c0)),
        );
        let m800 = _mm512_cmpge_epu32_mask(c, _mm512_set1_epi32(0x800));
        let m10000 = _mm512_cmpge_epu32_mask(c, _mm512_set1_epi32(0x1_0000));
        let mut bytes = _mm512_mask_mov_epi32(c, wide, two);
        bytes = _mm512_mask_mov_epi32(bytes, m800, three);
        bytes = _mm512_mask_mov_epi32(bytes, m10000, four);
        // Each lane's length in each of its bytes, against the bytes' places in the lane.
        let one = _mm512_set1_epi32(0x0101_0101);
        let mut n = one;
        n = _mm512_mask_add_epi32(n, wide, n, one);
        n = _mm512_mask_add_epi32(n, m800, n, one);
        n = _mm512_mask_add_epi32(n, m10000, n, one);
        let keep = _mm512_cmplt_epu8_mask(_mm512_set1_epi32(0x0302_0100), n);
        _mm512_storeu_si512(dst.cast(), _mm512_maskz_compress_epi8(keep, bytes));
        let surrogate = _mm512_cmpeq_epi32_mask(
            _mm512_and_si512(c, _mm512_set1_epi32(!0x7FF)),
            _mm512_set1_epi32(0xD800),
        );
        let beyond = _mm512_cmpgt_epu32_mask(c, _mm512_set1_epi32(0x10_FFFF));
        (keep.count_ones() as usize, surrogate | beyond != 0)
    }

    macro_rules! wide_loop {
        ($name:ident, $t:ty, $load:expr) => {
            /// The UTF-8 of `units` at `dst` (room for `units.len() * 4 + 64` bytes): the
            /// bytes written, `None` for a refused code point.
            #[target_feature(enable = "avx512f,avx512bw,avx512vbmi2")]
            pub(super) unsafe fn $name(units: &[$t], dst: *mut u8) -> Option<usize> {
                let (mut at, mut bad) = (0, false);
                let mut blocks = units.chunks_exact(16);
                for b in blocks.by_ref() {
                    let (n, refused) = block($load(b.as_ptr()), dst.add(at));
                    at += n;
                    bad |= refused;
                }
                let rest = blocks.remainder();
                if !rest.is_empty() {
                    let mut last = [0 as $t; 16];
                    last[..rest.len()].copy_from_slice(rest);
                    let (n, refused) = block($load(last.as_ptr()), dst.add(at));
                    // (The padding's zeros are one byte each, at the end.)
                    at += n - (16 - rest.len());
                    bad |= refused;
                }
                (!bad).then_some(at)
            }
        };
    }

    wide_loop!(wide_u8, u8, |p: *const u8| _mm512_cvtepu8_epi32(
        _mm_loadu_si128(p.cast())
    ));
    wide_loop!(wide_u16, u16, |p: *const u16| _mm512_cvtepu16_epi32(
        _mm256_loadu_si256(p.cast())
    ));
    wide_loop!(wide_u32, u32, |p: *const u32| _mm512_loadu_si512(p.cast()));
}

/// Appends the UTF-8 of Latin-1 text to `out`.
pub fn push_latin1(units: &[u8], out: &mut String) {
    // SAFETY: `extend_utf8` appends only whole UTF-8 sequences of scalar values, or nothing.
    let ok = extend_utf8(units, unsafe { out.as_mut_vec() }, 2);
    debug_assert!(ok);
}

/// Appends the UTF-8 of UCS-2 text to `out`; false (and `out` unchanged) for a surrogate.
pub fn push_ucs2(units: &[u16], out: &mut String) -> bool {
    // SAFETY: as in `push_latin1`.
    extend_utf8(units, unsafe { out.as_mut_vec() }, 3)
}

/// Appends the UTF-8 of UCS-4 text to `out`; false (and `out` unchanged) for a surrogate or a
/// value above U+10FFFF.
pub fn push_ucs4(units: &[u32], out: &mut String) -> bool {
    // SAFETY: as in `push_latin1`.
    extend_utf8(units, unsafe { out.as_mut_vec() }, 4)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Code points of every UTF-8 length, around the blocks' edges and the surrogates.
    fn sample(seed: u64, n: usize, top: u32) -> Vec<u32> {
        let mut rng = crate::testing::Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
        let picks = [
            0x41, 0x7F, 0x80, 0xE9, 0xFF, 0x100, 0x7FF, 0x800, 0x20AC, 0xD7FF, 0xE000,
        ];
        let picks_far = [0xFFFF, 0x1_0000, 0x1F600, 0x10_FFFF];
        (0..n)
            .map(|_| match rng.below(4) {
                0 | 1 => 0x20 + rng.below(0x5F) as u32, // ASCII runs, so blocks take the fast path
                2 => picks[rng.below(picks.len())].min(top),
                _ if top > 0xFFFF => picks_far[rng.below(picks_far.len())],
                _ => rng.below(top as usize + 1) as u32,
            })
            .filter(|c| !(0xD800..=0xDFFF).contains(c))
            .collect()
    }

    fn expected(cps: &[u32]) -> String {
        cps.iter()
            .map(|&c| char::from_u32(c).expect("a scalar"))
            .collect()
    }

    /// Units of at most `most` UTF-8 bytes each to UTF-8, with the AVX-512 path (where the CPU
    /// has it) or without.
    fn convert<T: Unit>(u: &[T], most: usize, wide: bool) -> Option<String> {
        let mut out = Vec::new();
        extend_utf8_with(u, &mut out, most, wide).then(|| String::from_utf8(out).expect("UTF-8"))
    }

    fn ucs4(u: &[u32], wide: bool) -> Option<String> {
        convert(u, 4, wide)
    }

    fn ucs2(u: &[u16], wide: bool) -> Option<String> {
        convert(u, 3, wide)
    }

    fn latin1(u: &[u8], wide: bool) -> Option<String> {
        convert(u, 2, wide)
    }

    #[test]
    fn both_paths_match_std() {
        for wide in [false, true] {
            for seed in 0..40 {
                for n in [0, 1, 15, 16, 17, 33, 200] {
                    let cps = sample(seed, n, 0x10_FFFF);
                    assert_eq!(ucs4(&cps, wide).as_deref(), Some(&*expected(&cps)));
                    let bmp: Vec<u32> = sample(seed, n, 0xFFFF);
                    let units: Vec<u16> = bmp.iter().map(|&c| c as u16).collect();
                    assert_eq!(ucs2(&units, wide).as_deref(), Some(&*expected(&bmp)));
                    let latin: Vec<u32> = sample(seed, n, 0xFF);
                    let bytes: Vec<u8> = latin.iter().map(|&c| c as u8).collect();
                    assert_eq!(latin1(&bytes, wide).as_deref(), Some(&*expected(&latin)));
                }
            }
            for bad in [0xD800u32, 0xDBFF, 0xDC00, 0xDFFF] {
                for at in [0, 5, 16, 20] {
                    let mut cps = vec![0x61u32; 24];
                    cps[at] = bad;
                    assert_eq!(ucs4(&cps, wide), None);
                    let units: Vec<u16> = cps.iter().map(|&c| c as u16).collect();
                    assert_eq!(ucs2(&units, wide), None);
                }
            }
            assert_eq!(ucs4(&[0x61, 0x11_0000], wide), None);
            assert_eq!(
                ucs4(
                    &[0x61; 17]
                        .iter()
                        .copied()
                        .chain([u32::MAX])
                        .collect::<Vec<_>>(),
                    wide
                ),
                None
            );
        }
    }
}

#[cfg(test)]
mod bench {
    /// `TOKLAB_BENCH_DIR=/tmp/perfdata cargo test --release --lib utf::bench -- --ignored
    /// --nocapture`: converting multi.txt's characters (as UCS-4), in a fresh buffer and in a
    /// reused one, and the same number of ASCII characters.
    #[test]
    #[ignore]
    fn speed() {
        let dir = std::env::var("TOKLAB_BENCH_DIR").unwrap_or_else(|_| "/tmp/perfdata".into());
        let path = std::path::Path::new(&dir).join("multi.txt");
        let text = std::fs::read_to_string(&path).expect("multi.txt (benchmarks/run.py builds it)");
        let cps: Vec<u32> = text.chars().map(|c| c as u32).collect();
        for _ in 0..5 {
            let t = std::time::Instant::now();
            let mut s = String::new();
            assert!(super::push_ucs4(&cps, &mut s), "no surrogates");
            eprintln!(
                "ucs4 {} chars: {:.1} ms",
                cps.len(),
                t.elapsed().as_secs_f64() * 1e3
            );
            assert_eq!(s.len(), text.len());
        }
        let mut out = Vec::with_capacity(cps.len() * 4);
        for _ in 0..5 {
            out.clear();
            let t = std::time::Instant::now();
            super::extend_utf8(&cps, &mut out, 4);
            eprintln!(
                "ucs4 reused buffer: {:.1} ms",
                t.elapsed().as_secs_f64() * 1e3
            );
        }
        let ascii_only: Vec<u32> = cps.iter().map(|&c| c.min(0x7F)).collect();
        for _ in 0..3 {
            out.clear();
            let t = std::time::Instant::now();
            super::extend_utf8(&ascii_only, &mut out, 4);
            eprintln!(
                "ascii-only reused buffer: {:.1} ms",
                t.elapsed().as_secs_f64() * 1e3
            );
        }
        let ascii = cps.iter().filter(|&&c| c < 0x80).count();
        let blocks = cps
            .chunks_exact(16)
            .filter(|b| b.iter().all(|&c| c < 0x80))
            .count();
        eprintln!(
            "ascii chars {ascii}, all-ascii blocks {blocks} of {}",
            cps.len() / 16
        );
    }
}
