//! A bit-exact binary arithmetic coder (Witten, Neal and Cleary 1987) with integer CDFs, and the
//! deterministic quantisation of a model's logits into those CDFs.
//!
//! **Precision.** CDFs are integers summing to `2^cdf_bits`; every symbol keeps a count of at
//! least 1, so any symbol can be coded whatever the model says. The coder's interval lives in
//! `state_bits`-bit integers (`cdf_bits + 2 <= state_bits <= 62`); after each renormalisation its
//! width exceeds a quarter of the range, so every symbol gets a non-empty sub-interval.
//! Lester et al. (2024) use 14-bit CDFs in 16-bit integers (`state_bits = cdf_bits + 2`); wider
//! states lose less to rounding (a loss per symbol below `2^(cdf_bits + 2 - state_bits)` nats).
//!
//! **Exact bit accounting.** The interval's absolute position is the emitted bits, then the
//! pending (underflow) bits, then the state: [`Interval::shifts`] counts emitted plus pending
//! bits, which is what Equal-Info windows (`crate::equalinfo`) need to cut windows exactly.
//!
//! **Determinism.** [`quantize`] uses only IEEE additions, multiplications and divisions in a
//! fixed order, and its own `exp`, so the same logits give the same CDF on every machine; the
//! coder is integer arithmetic throughout.

use crate::error::{Error, Result};

/// Bits of the coder's state and of its CDFs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Precision {
    pub state_bits: u32,
    pub cdf_bits: u32,
}

impl Default for Precision {
    fn default() -> Self {
        Precision {
            state_bits: 32,
            cdf_bits: 14,
        }
    }
}

impl Precision {
    /// Checks the bounds, and that `2^cdf_bits` leaves room for `alphabet` symbols of count 1.
    pub fn check(&self, alphabet: usize) -> Result<()> {
        if !(2..=60).contains(&self.cdf_bits) || self.state_bits > 62 {
            return Err(Error::Config(format!(
                "arithmetic coder precision: cdf_bits must be in 2..=60 and state_bits at most \
                 62, got cdf_bits={} state_bits={}",
                self.cdf_bits, self.state_bits
            )));
        }
        if self.state_bits < self.cdf_bits + 2 {
            return Err(Error::Config(format!(
                "arithmetic coder precision: state_bits ({}) must be at least cdf_bits + 2 ({})",
                self.state_bits,
                self.cdf_bits + 2
            )));
        }
        if alphabet < 2 || (alphabet as u64) * 2 > (1u64 << self.cdf_bits) {
            return Err(Error::Config(format!(
                "arithmetic coder precision: {} CDF bits cannot give {} symbols a non-zero \
                 count each (need 2^cdf_bits >= 2 * alphabet)",
                self.cdf_bits, alphabet
            )));
        }
        Ok(())
    }

    #[inline]
    pub fn full(&self) -> u64 {
        (1u64 << self.state_bits) - 1
    }
    #[inline]
    fn half(&self) -> u64 {
        1u64 << (self.state_bits - 1)
    }
    #[inline]
    fn quarter(&self) -> u64 {
        1u64 << (self.state_bits - 2)
    }
}

/// `exp(x)` for `x <= 0`, from IEEE `+ - *` and bit operations only (no libm, no branches), so
/// that it gives the same bits on every machine and vectorises. Relative error below 1e-12 on
/// [-708, 0]; inputs below -708 give exp(-708).
#[inline]
pub fn det_exp(x: f64) -> f64 {
    const LN2_HI: f64 = 6.931_471_803_691_238e-1;
    const LN2_LO: f64 = 1.908_214_929_270_587_7e-10;
    const INV_LN2: f64 = std::f64::consts::LOG2_E;
    // 1.5 * 2^52: adding it rounds to an integer (ties to even) in the low mantissa bits.
    const MAGIC: f64 = 6_755_399_441_055_744.0;
    let x = x.max(-708.0);
    let t = x * INV_LN2 + MAGIC;
    let k = t - MAGIC;
    let r = (x - k * LN2_HI) - k * LN2_LO;
    // Taylor series to r^11 on |r| <= 0.35: relative error < 2e-13.
    let mut p = 1.0 / 39_916_800.0;
    for d in [
        3_628_800.0,
        362_880.0,
        40_320.0,
        5_040.0,
        720.0,
        120.0,
        24.0,
        6.0,
        2.0,
        1.0,
        1.0,
    ] {
        p = p * r + 1.0 / d;
    }
    // 2^k from k's bits in t (k >= -1022 here).
    let kbits = t.to_bits().wrapping_sub(MAGIC.to_bits());
    let scale = f64::from_bits(kbits.wrapping_add(1023) << 52);
    p * scale
}

/// Quantises one row of logits (any shift: log-probabilities or raw logits) into a CDF:
/// `cdf.len() == logits.len() + 1`, `cdf[0] = 0`, `cdf[n] = 2^cdf_bits`, every count >= 1.
///
/// Counts are `1 + floor(p_s * (2^cdf_bits - n))`; what the floors leave goes to the most likely
/// symbol (the first, on ties). `-inf` logits are allowed (count 1); NaN and `+inf` are errors.
pub fn quantize(logits: &[f32], cdf_bits: u32, cdf: &mut [u32]) -> Result<()> {
    if cdf_bits > 31 {
        return Err(Error::Config(format!(
            "cannot quantise to a {cdf_bits}-bit CDF (at most 31 bits)"
        )));
    }
    quantize_total(logits, 1u64 << cdf_bits, cdf)
}

/// [`quantize`] to any total (`cdf[n] = total`).
pub fn quantize_total(logits: &[f32], total: u64, cdf: &mut [u32]) -> Result<()> {
    let n = logits.len();
    debug_assert_eq!(cdf.len(), n + 1);
    if n < 2 || (n as u64) * 2 > total || total > u32::MAX as u64 {
        return Err(Error::Config(format!(
            "cannot quantise {n} symbols to a CDF of total {total}"
        )));
    }
    let mut best = 0usize;
    let mut m = f32::NEG_INFINITY;
    for (i, &l) in logits.iter().enumerate() {
        if l.is_nan() || l == f32::INFINITY {
            return Err(Error::Config(format!(
                "model output is not finite ({l} at symbol {i}): cannot build a CDF"
            )));
        }
        if l > m {
            m = l;
            best = i;
        }
    }
    if m == f32::NEG_INFINITY {
        return Err(Error::Config(
            "model gives every symbol probability zero (all logits -inf)".into(),
        ));
    }
    let m = m as f64;
    // exp once per symbol, kept in `cdf`'s slots as f32 bits would lose precision: use a stack
    // buffer for the common alphabet sizes, else the heap.
    let mut stack = [0f64; 512];
    let mut heap = Vec::new();
    let e: &mut [f64] = if n <= stack.len() {
        &mut stack[..n]
    } else {
        heap.resize(n, 0.0);
        &mut heap
    };
    for (ei, &l) in e.iter_mut().zip(logits) {
        *ei = det_exp(l as f64 - m);
    }
    // Four accumulators in a fixed order: the same sum everywhere, and no long dependency chain.
    let mut acc = [0f64; 4];
    let mut chunks = e.chunks_exact(4);
    for c in &mut chunks {
        for j in 0..4 {
            acc[j] += c[j];
        }
    }
    for (j, &v) in chunks.remainder().iter().enumerate() {
        acc[j] += v;
    }
    let sum = (acc[0] + acc[1]) + (acc[2] + acc[3]);
    let free = total - n as u64;
    let scale = free as f64 / sum;
    cdf[0] = 0;
    let mut used = 0u64;
    for (c, &ei) in cdf[1..].iter_mut().zip(e.iter()) {
        // Non-negative, so truncation is the floor; min() guards the (theoretical) overshoot.
        let f = ((ei * scale) as u64).min(free);
        *c = 1 + f as u32;
        used += 1 + f;
    }
    if used > total {
        return Err(Error::Config(
            "internal: quantised counts exceed the total".into(),
        ));
    }
    cdf[best + 1] += (total - used) as u32;
    for i in 1..=n {
        cdf[i] += cdf[i - 1];
    }
    debug_assert_eq!(cdf[n] as u64, total);
    Ok(())
}

/// The coder's interval: `[low, high]` inclusive in the current frame, plus how many bits were
/// shifted out so far (emitted or pending).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Interval {
    pub low: u64,
    pub high: u64,
    /// Underflow bits not yet emitted (their value is the opposite of the next emitted bit).
    pub pending: u32,
    /// Bits emitted so far.
    pub emitted: u64,
}

impl Interval {
    pub fn new(p: Precision) -> Self {
        Interval {
            low: 0,
            high: p.full(),
            pending: 0,
            emitted: 0,
        }
    }

    /// Emitted plus pending bits: the frame's scale is `2^-(state_bits + shifts)`.
    #[inline]
    pub fn shifts(&self) -> u64 {
        self.emitted + self.pending as u64
    }

    #[inline]
    pub fn range(&self) -> u64 {
        self.high - self.low + 1
    }

    /// The start of the sub-interval of cumulative count `c` (frame units).
    #[inline]
    pub fn boundary(&self, p: Precision, c: u32) -> u64 {
        let r = self.range();
        if p.state_bits + p.cdf_bits <= 64 {
            // range <= 2^state_bits and c <= 2^cdf_bits: the product fits a u64.
            self.low + ((r * c as u64) >> p.cdf_bits)
        } else {
            self.low + ((r as u128 * c as u128) >> p.cdf_bits) as u64
        }
    }

    /// Narrows to the symbol with cumulative counts `[c_lo, c_hi)` and renormalises, calling
    /// `emit(bits, n, pending)` for the `n` determined bits (most significant first; `pending`
    /// bits opposite to the first one follow the first) and `shift(n, sub)` for each shift of
    /// the frame (a decoder's register becomes `((reg - sub) << n) & mask | next n bits`).
    ///
    /// The leading bits that `low` and `high` share leave in one step (no branch per bit);
    /// then underflow steps, one at a time, until the interval straddles the middle widely.
    #[inline(always)]
    pub fn narrow(
        &mut self,
        p: Precision,
        c_lo: u32,
        c_hi: u32,
        mut emit: impl FnMut(u64, u32, u32),
        mut shift: impl FnMut(u32, u64),
    ) {
        debug_assert!(c_lo < c_hi);
        let hi = self.boundary(p, c_hi) - 1;
        let lo = self.boundary(p, c_lo);
        self.low = lo;
        self.high = hi;
        let s = p.state_bits;
        let mask = p.full();
        let x = (self.low ^ self.high) << (64 - s);
        let n = if x == 0 { s } else { x.leading_zeros() };
        if n > 0 {
            emit(self.low >> (s - n), n, self.pending);
            self.emitted += n as u64 + self.pending as u64;
            self.pending = 0;
            self.low = (self.low << n) & mask;
            self.high = ((self.high << n) & mask) | ((1u64 << n) - 1);
            shift(n, 0);
        }
        let (half, quarter) = (p.half(), p.quarter());
        while self.low >= quarter && self.high < half + quarter {
            self.pending += 1;
            self.low = (self.low - quarter) << 1;
            self.high = ((self.high - quarter) << 1) | 1;
            shift(1, quarter);
        }
    }

    /// The symbol whose sub-interval holds frame value `value`: the cumulative count that
    /// `value` stands for (one division), then a binary search of the CDF.
    #[inline(always)]
    pub fn find(&self, p: Precision, cdf: &[u32], value: u64) -> usize {
        let count = if p.state_bits + p.cdf_bits <= 64 {
            (((value - self.low + 1) << p.cdf_bits) - 1) / self.range()
        } else {
            let c = ((((value - self.low) as u128 + 1) << p.cdf_bits) - 1) / self.range() as u128;
            c.min(u64::MAX as u128) as u64
        };
        let count = count.min(u32::MAX as u64) as u32;
        // The last s with cdf[s] <= count, by counting rather than by binary search: first the
        // block of 16 (how many block starts are <= count), then within it. Every comparison
        // is independent of the others, so there is no chain of mispredicted branches.
        let n = cdf.len() - 1;
        let block: usize = cdf[..n]
            .iter()
            .skip(16)
            .step_by(16)
            .map(|&c| usize::from(c <= count))
            .sum();
        let start = block * 16;
        let end = (start + 16).min(n);
        let mut s = start;
        for &c in &cdf[start + 1..end] {
            s += usize::from(c <= count);
        }
        s
    }
}

/// A stream of bits, most significant first within each byte.
#[derive(Clone, Debug, Default)]
pub struct BitWriter {
    pub bytes: Vec<u8>,
    /// Bits written.
    pub len: u64,
    acc: u64,
    nacc: u32,
}

impl BitWriter {
    /// The low `k <= 56` bits of `v`, most significant first.
    #[inline]
    fn chunk(&mut self, v: u64, k: u32) {
        debug_assert!(k <= 56);
        self.acc = (self.acc << k) | (v & ((1u64 << k) - 1));
        self.nacc += k;
        self.len += k as u64;
        while self.nacc >= 8 {
            self.nacc -= 8;
            self.bytes.push((self.acc >> self.nacc) as u8);
        }
        self.acc &= (1u64 << self.nacc) - 1;
    }

    #[inline]
    pub fn push(&mut self, bit: bool) {
        self.chunk(bit as u64, 1);
    }

    /// `bit`, then `pending` copies of its opposite.
    #[inline]
    pub fn push_run(&mut self, bit: bool, pending: u32) {
        self.push(bit);
        let fill = if bit { 0 } else { u64::MAX };
        let mut left = pending;
        while left > 0 {
            let k = left.min(56);
            self.chunk(fill, k);
            left -= k;
        }
    }

    /// `n` bits of `bits` (most significant first), with `pending` bits opposite to the first
    /// one after it.
    #[inline]
    pub fn push_bits(&mut self, bits: u64, n: u32, pending: u32) {
        let first = (bits >> (n - 1)) & 1 == 1;
        self.push_run(first, pending);
        let rest = n - 1;
        if rest > 56 {
            self.chunk(bits >> 56, rest - 56);
            self.chunk(bits, 56);
        } else if rest > 0 {
            self.chunk(bits, rest);
        }
    }

    /// The bytes, the last one padded with zeros.
    pub fn into_bytes(mut self) -> Vec<u8> {
        if self.nacc > 0 {
            self.bytes.push((self.acc << (8 - self.nacc)) as u8);
        }
        self.bytes
    }
}

/// Bit `i` of a stream given as bytes (MSB first); zeros past the end.
#[inline]
pub fn bit_at(bytes: &[u8], i: u64) -> u64 {
    let byte = (i / 8) as usize;
    if byte < bytes.len() {
        ((bytes[byte] >> (7 - (i % 8))) & 1) as u64
    } else {
        0
    }
}

/// Bits `i..i + n` of a stream (MSB first; zeros past the end) as an integer, `n <= 57`.
#[inline(always)]
pub fn bits_at(bytes: &[u8], i: u64, n: u32) -> u64 {
    debug_assert!(n <= 57);
    if n == 0 {
        return 0;
    }
    let first = (i / 8) as usize;
    let w = match bytes.get(first..first + 8) {
        Some(b) => u64::from_be_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]),
        None => {
            let mut word = [0u8; 8];
            if first < bytes.len() {
                let take = bytes.len() - first;
                word[..take].copy_from_slice(&bytes[first..]);
            }
            u64::from_be_bytes(word)
        }
    };
    (w << (i % 8)) >> (64 - n)
}

/// A decoder register's update for `Interval::narrow`'s `shift(n, sub)`.
#[inline(always)]
pub fn shift_register(reg: &mut u64, pos: &mut u64, bytes: &[u8], n: u32, sub: u64, mask: u64) {
    let mut r = *reg - sub;
    let mut left = n;
    // A register of up to 62 bits shifts by at most 62: read in chunks of at most 57 bits.
    while left > 0 {
        let k = left.min(57);
        r = ((r << k) & mask) | bits_at(bytes, *pos, k);
        *pos += k as u64;
        left -= k;
    }
    *reg = r;
}

/// Streaming encoder: one symbol at a time, each with its own CDF.
pub struct Encoder {
    p: Precision,
    iv: Interval,
    out: BitWriter,
    symbols: u64,
}

impl Encoder {
    pub fn new(p: Precision) -> Self {
        Encoder {
            p,
            iv: Interval::new(p),
            out: BitWriter::default(),
            symbols: 0,
        }
    }

    /// Codes `symbol` under `cdf` (`cdf.len() == alphabet + 1`, counts summing to 2^cdf_bits).
    pub fn encode(&mut self, cdf: &[u32], symbol: usize) {
        let out = &mut self.out;
        self.iv.narrow(
            self.p,
            cdf[symbol],
            cdf[symbol + 1],
            |bits, n, pending| out.push_bits(bits, n, pending),
            |_, _| {},
        );
        self.symbols += 1;
    }

    /// Bits that the interval has fixed so far (emitted plus pending).
    pub fn bits_committed(&self) -> u64 {
        self.iv.shifts()
    }

    /// Bits that `finish` would return now: the committed bits plus two.
    pub fn bits_if_finished(&self) -> u64 {
        self.iv.shifts() + 2
    }

    /// Ends the stream: two more bits (plus pending ones) select a point inside the interval;
    /// a decoder reading zeros past the end decodes every symbol. Returns (bytes, bit length).
    pub fn finish(mut self) -> (Vec<u8>, u64) {
        self.iv.pending += 1;
        let bit = self.iv.low >= self.p.quarter();
        self.out.push_run(bit, self.iv.pending);
        let len = self.out.len;
        (self.out.into_bytes(), len)
    }
}

/// Streaming decoder over a bit stream (zeros past its end), borrowed or owned.
pub struct Decoder<B: AsRef<[u8]>> {
    p: Precision,
    iv: Interval,
    bits: B,
    value: u64,
    pos: u64,
}

impl<B: AsRef<[u8]>> Decoder<B> {
    pub fn new(p: Precision, bits: B) -> Self {
        let mut value = 0u64;
        for i in 0..p.state_bits as u64 {
            value = (value << 1) | bit_at(bits.as_ref(), i);
        }
        Decoder {
            p,
            iv: Interval::new(p),
            bits,
            value,
            pos: p.state_bits as u64,
        }
    }

    /// Decodes the next symbol under `cdf` (the same CDF the encoder used there).
    pub fn decode(&mut self, cdf: &[u32]) -> usize {
        let s = self.iv.find(self.p, cdf, self.value);
        let (bits, value, pos) = (self.bits.as_ref(), &mut self.value, &mut self.pos);
        let mask = self.p.full();
        self.iv.narrow(
            self.p,
            cdf[s],
            cdf[s + 1],
            |_, _, _| {},
            |n, sub| shift_register(value, pos, bits, n, sub, mask),
        );
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// xorshift64*: deterministic test randomness without a dependency.
    pub(crate) struct Rng(pub u64);
    impl Rng {
        pub fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }
        pub fn unit(&mut self) -> f64 {
            (self.next() >> 11) as f64 / (1u64 << 53) as f64
        }
    }

    #[test]
    fn det_exp_is_accurate() {
        let mut x = 0.0;
        while x > -700.0 {
            let (a, b) = (det_exp(x), x.exp());
            assert!((a - b).abs() <= 1e-12 * b, "{x}: {a} vs {b}");
            x -= 0.0137;
        }
        assert!(det_exp(-800.0) < 1e-300);
        assert_eq!(det_exp(0.0), 1.0);
    }

    #[test]
    fn quantize_keeps_every_symbol_and_the_total() {
        let mut rng = Rng(7);
        for bits in [9u32, 14, 16, 24] {
            for _ in 0..200 {
                let logits: Vec<f32> = (0..256)
                    .map(|_| (rng.unit() * 40.0 - 30.0) as f32)
                    .collect();
                let mut cdf = vec![0u32; 257];
                quantize(&logits, bits, &mut cdf).expect("test");
                assert_eq!(cdf[256], 1 << bits);
                assert!(cdf.windows(2).all(|w| w[1] > w[0]));
                let mut again = vec![0u32; 257];
                quantize(&logits, bits, &mut again).expect("test");
                assert_eq!(cdf, again);
            }
        }
        let mut cdf = vec![0u32; 4];
        let mut logits = [0.0f32, f32::NEG_INFINITY, 1.0];
        quantize(&logits, 9, &mut cdf).expect("test");
        assert_eq!(cdf[2] - cdf[1], 1);
        logits[0] = f32::NAN;
        assert!(quantize(&logits, 9, &mut cdf).is_err());
        assert!(quantize(&[f32::NEG_INFINITY; 3], 9, &mut cdf).is_err());
        assert!(quantize(&[0.0; 3], 2, &mut cdf).is_err());
    }

    fn cdf_from_counts(counts: &[u64], bits: u32) -> Vec<u32> {
        let logits: Vec<f32> = counts.iter().map(|&c| (c as f32).ln()).collect();
        let mut cdf = vec![0u32; counts.len() + 1];
        quantize(&logits, bits, &mut cdf).expect("test");
        cdf
    }

    /// Round trips under a model given as a function of the prefix; returns (bits, ideal bits).
    fn round_trip(
        p: Precision,
        data: &[usize],
        model: &dyn Fn(&[usize]) -> Vec<u32>,
    ) -> (u64, f64) {
        let mut enc = Encoder::new(p);
        let mut ideal = 0.0;
        for (i, &s) in data.iter().enumerate() {
            let cdf = model(&data[..i]);
            ideal -= ((cdf[s + 1] - cdf[s]) as f64 / (1u64 << p.cdf_bits) as f64).log2();
            enc.encode(&cdf, s);
        }
        let (bytes, len) = enc.finish();
        let mut dec = Decoder::new(p, &bytes);
        for (i, &s) in data.iter().enumerate() {
            let cdf = model(&data[..i]);
            assert_eq!(dec.decode(&cdf), s, "symbol {i} with {p:?}");
        }
        (len, ideal)
    }

    fn precisions() -> Vec<Precision> {
        vec![
            Precision {
                state_bits: 16,
                cdf_bits: 14,
            },
            Precision {
                state_bits: 32,
                cdf_bits: 14,
            },
            Precision {
                state_bits: 32,
                cdf_bits: 16,
            },
            Precision {
                state_bits: 62,
                cdf_bits: 24,
            },
        ]
    }

    #[test]
    fn static_model_round_trips_near_the_ideal_length() {
        let mut rng = Rng(11);
        let counts: Vec<u64> = (0..256).map(|i| 1 + (i % 7) * (i % 13) * 40).collect();
        let total: u64 = counts.iter().sum();
        let data: Vec<usize> = (0..20_000)
            .map(|_| {
                let mut r = rng.next() % total;
                let mut s = 0;
                while r >= counts[s] {
                    r -= counts[s];
                    s += 1;
                }
                s
            })
            .collect();
        for p in precisions() {
            let cdf = cdf_from_counts(&counts, p.cdf_bits);
            let (bits, ideal) = round_trip(p, &data, &|_| cdf.clone());
            // Rounding of the interval costs < 2^(cdf_bits + 2 - state_bits) nats per symbol.
            let slack = 2.0
                + data.len() as f64
                    * (2f64.powi(p.cdf_bits as i32 + 2 - p.state_bits as i32) * 1.5);
            assert!(
                bits as f64 <= ideal + slack,
                "{p:?}: {bits} bits vs ideal {ideal:.1}"
            );
            assert!(
                bits as f64 >= ideal - 1.0,
                "{p:?}: {bits} below the ideal {ideal:.1}"
            );
        }
    }

    #[test]
    fn adaptive_order2_model_round_trips() {
        // An adaptive order-2 count model over a small alphabet, on repetitive text.
        let text = b"the cat sat on the mat; the rat ate the cat's hat. ".repeat(60);
        let alphabet: Vec<u8> = {
            let mut a: Vec<u8> = text.clone();
            a.sort_unstable();
            a.dedup();
            a
        };
        let data: Vec<usize> = text
            .iter()
            .map(|b| alphabet.iter().position(|a| a == b).expect("test"))
            .collect();
        let n = alphabet.len();
        let model = |prefix: &[usize]| {
            let mut counts = vec![1u64; n];
            if prefix.len() >= 2 {
                let ctx = &prefix[prefix.len() - 2..];
                for w in prefix.windows(3) {
                    if w[..2] == *ctx {
                        counts[w[2]] += 50;
                    }
                }
            }
            counts
        };
        for p in precisions() {
            let model = |prefix: &[usize]| cdf_from_counts(&model(prefix), p.cdf_bits);
            let (bits, ideal) = round_trip(p, &data, &model);
            assert!(
                (bits as f64) < ideal + 2.0 + data.len() as f64 * 0.01,
                "{p:?}"
            );
            // Repetitive text compresses far below 8 bits per symbol.
            assert!((bits as f64) < data.len() as f64 * 1.0, "{p:?}: {bits}");
        }
    }

    #[test]
    fn random_models_round_trip() {
        let mut rng = Rng(3);
        for p in precisions() {
            for _ in 0..20 {
                let n = 2 + (rng.next() % 300) as usize;
                if (n as u64) * 2 > 1 << p.cdf_bits {
                    continue;
                }
                let len = (rng.next() % 2000) as usize;
                let seed = rng.next();
                // A model that depends on the prefix through a hash: fresh, skewed CDF per step.
                let model = |prefix: &[usize]| {
                    let mut r = Rng(seed
                        ^ (prefix.len() as u64 * 0x9E37_79B9)
                        ^ prefix.last().map_or(0, |&s| s as u64));
                    let logits: Vec<f32> =
                        (0..n).map(|_| (r.unit() * 25.0 - 20.0) as f32).collect();
                    let mut cdf = vec![0u32; n + 1];
                    quantize(&logits, p.cdf_bits, &mut cdf).expect("test");
                    cdf
                };
                let data: Vec<usize> = (0..len).map(|_| (rng.next() % n as u64) as usize).collect();
                round_trip(p, &data, &model);
            }
        }
    }

    /// The coder's speed given its CDFs (a bigram model: 256 CDFs in cache), and quantisation's.
    /// Not run by `cargo test`:
    /// `cargo test --release --lib arith::tests::bench_coder -- --ignored --nocapture`.
    #[test]
    #[ignore = "a benchmark"]
    fn bench_coder() {
        let mut rng = Rng(42);
        let p = Precision::default();
        let logits: Vec<Vec<f32>> = (0..256)
            .map(|_| {
                (0..256)
                    .map(|_| (rng.unit() * rng.unit() * 16.0) as f32)
                    .collect()
            })
            .collect();
        let cdfs: Vec<Vec<u32>> = logits
            .iter()
            .map(|l| {
                let mut c = vec![0u32; 257];
                quantize(l, p.cdf_bits, &mut c).expect("test");
                c
            })
            .collect();
        let n = 4_000_000usize;
        let mut data = Vec::with_capacity(n);
        let mut prev = 0usize;
        for _ in 0..n {
            let r = (rng.next() % (1 << p.cdf_bits)) as u32;
            let s = cdfs[prev].partition_point(|&c| c <= r) - 1;
            data.push(s as u8);
            prev = s;
        }
        // Best of five runs each: the machine is shared.
        let mut te = f64::MAX;
        let mut td = f64::MAX;
        let mut coded = (Vec::new(), 0u64);
        for _ in 0..5 {
            let t = std::time::Instant::now();
            let mut enc = Encoder::new(p);
            let mut prev = 0usize;
            for &b in &data {
                enc.encode(&cdfs[prev], b as usize);
                prev = b as usize;
            }
            coded = enc.finish();
            te = te.min(t.elapsed().as_secs_f64());
            let t = std::time::Instant::now();
            let mut dec = Decoder::new(p, &coded.0[..]);
            let mut prev = 0usize;
            for &b in &data {
                let s = dec.decode(&cdfs[prev]);
                assert_eq!(s, b as usize);
                prev = s;
            }
            td = td.min(t.elapsed().as_secs_f64());
        }
        let bits = coded.1;
        let rows = 200_000;
        let mut out = vec![0u32; 257];
        let t = std::time::Instant::now();
        for i in 0..rows {
            quantize(&logits[i % 256], p.cdf_bits, &mut out).expect("test");
        }
        let tq = t.elapsed().as_secs_f64();
        println!(
            "coder: encode {:.1} MB/s, decode {:.1} MB/s ({:.3} bits/byte); quantise {:.2} M rows/s",
            n as f64 / te / 1e6,
            n as f64 / td / 1e6,
            bits as f64 / n as f64,
            rows as f64 / tq / 1e6
        );
    }

    #[test]
    fn precision_is_checked() {
        assert!(Precision {
            state_bits: 15,
            cdf_bits: 14
        }
        .check(256)
        .is_err());
        assert!(Precision {
            state_bits: 63,
            cdf_bits: 14
        }
        .check(256)
        .is_err());
        assert!(Precision {
            state_bits: 16,
            cdf_bits: 8
        }
        .check(256)
        .is_err());
        assert!(Precision {
            state_bits: 16,
            cdf_bits: 14
        }
        .check(256)
        .is_ok());
    }
}
