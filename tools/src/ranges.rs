//! Field ranges for `zcnic pktgen`, as pktgen-dpdk's range mode has them: a MAC address,
//! IP address (v4 or v6) or port runs from a first to a last value by a step
//! (`--dst-ip 10.0.0.1-10.0.3.255`, `--src-port 1000-2000:10`), and a generator walks
//! every combination of the ranges given, once per period.
//!
//! **Order.** Sequentially, the combinations go like an odometer: the last field of
//! [`FIELDS`] given varies fastest (source port before destination IP, say), each wrapping
//! to its start as the next one steps. With `random` (a seed), each period is a
//! pseudo-random permutation of the same combinations: an affine map modulo the next power
//! of two, which visits every value of that range once (full period: multiplier ≡ 1 mod 4,
//! odd increment), with the values past the count skipped. Nothing is stored per
//! combination, so a range of millions costs nothing.

use std::net::IpAddr;

/// The fields a range can cover, slowest-varying first.
pub const FIELDS: [&str; 6] = [
    "src-mac", "dst-mac", "src-ip", "dst-ip", "src-port", "dst-port",
];

/// One field's values: `first`, `first + step`, … , `count` of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Range {
    pub first: u128,
    pub step: u128,
    pub count: u64,
}

impl Range {
    /// The `i`-th value (`i < count`).
    pub fn at(&self, i: u64) -> u128 {
        self.first + self.step * u128::from(i)
    }
}

/// What kind of value a field holds, for parsing and writing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Mac,
    Ip,
    Port,
}

/// The kind of field `FIELDS[k]`.
pub fn kind_of(k: usize) -> Kind {
    match k {
        0 | 1 => Kind::Mac,
        2 | 3 => Kind::Ip,
        _ => Kind::Port,
    }
}

/// Parses `FIRST-LAST[:STEP]` (or a single value) of `kind`; IP ranges say whether they are
/// IPv6. A MAC address or an IPv6 address has colons of its own: their step follows a
/// `/` instead (`/STEP` is taken for every kind).
pub fn parse(kind: Kind, s: &str) -> Result<(Range, bool), String> {
    let colon_step = kind == Kind::Port
        || (kind == Kind::Ip && !s.contains("::") && s.matches(':').count() <= 1);
    let split = s
        .rsplit_once('/')
        .or_else(|| s.rsplit_once(':').filter(|_| colon_step));
    let (span, step) = match split {
        Some((span, step)) => {
            let step: u128 = step
                .trim()
                .parse()
                .map_err(|_| format!("`{s}`: step `{step}` is not a number"))?;
            (span, step)
        }
        None => (s, 1),
    };
    let (a, b) = match span.split_once('-') {
        Some((a, b)) => (a, b),
        None => (span, span),
    };
    let (first, v6a) = value(kind, a).map_err(|e| format!("`{s}`: {e}"))?;
    let (last, v6b) = value(kind, b).map_err(|e| format!("`{s}`: {e}"))?;
    if v6a != v6b {
        return Err(format!("`{s}`: one end IPv4, the other IPv6"));
    }
    if last < first {
        return Err(format!("`{s}`: the last value comes before the first"));
    }
    if step == 0 {
        return Err(format!("`{s}`: a step of 0 never gets anywhere"));
    }
    let count = (last - first) / step + 1;
    let count = u64::try_from(count)
        .ok()
        .filter(|&c| c <= 1 << 40)
        .ok_or_else(|| format!("`{s}`: more than 2^40 values; give a larger step"))?;
    Ok((Range { first, step, count }, v6a))
}

fn value(kind: Kind, s: &str) -> Result<(u128, bool), String> {
    let s = s.trim();
    match kind {
        Kind::Mac => crate::units::parse_mac(s).map(|m| {
            let mut b = [0u8; 16];
            b[10..].copy_from_slice(&m);
            (u128::from_be_bytes(b), false)
        }),
        Kind::Ip => match s.parse::<IpAddr>() {
            Ok(IpAddr::V4(a)) => Ok((u128::from(u32::from(a)), false)),
            Ok(IpAddr::V6(a)) => Ok((u128::from(a), true)),
            Err(_) => Err(format!("`{s}` is not an IP address")),
        },
        Kind::Port => s
            .parse::<u16>()
            .map(|p| (u128::from(p), false))
            .map_err(|_| format!("`{s}` is not a port (0-65535)")),
    }
}

/// The order combinations come in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    Sequential,
    /// A permutation per period, from this seed.
    Random(u64),
}

/// Every combination of the fields given, in order.
#[derive(Debug, Clone)]
pub struct Walk {
    /// Per field of [`FIELDS`], its range if given.
    pub ranges: [Option<Range>; 6],
    order: Order,
    /// Combinations in a period.
    total: u64,
    /// Random order: the affine map modulo 2^bits.
    bits: u32,
    mul: u64,
    add: u64,
    x: u64,
    /// Sequential order: the next index.
    next: u64,
}

impl Walk {
    /// A walk over `ranges` (a field with none keeps its template's value).
    pub fn new(ranges: [Option<Range>; 6], order: Order) -> Result<Self, String> {
        let total = ranges
            .iter()
            .flatten()
            .try_fold(1u64, |t, r| t.checked_mul(r.count))
            .filter(|&t| t <= 1 << 48)
            .ok_or("the ranges give more than 2^48 combinations: narrow them or add steps")?;
        let bits = 64 - (total - 1).leading_zeros().min(63);
        let (mul, add, x) = match order {
            Order::Sequential => (1, 1, 0),
            Order::Random(seed) => {
                let mut s = seed ^ 0x9e37_79b9_7f4a_7c15;
                let mut next = || {
                    s = s.wrapping_mul(6364136223846793005).wrapping_add(1);
                    s >> 16
                };
                (next() << 2 | 1, next() | 1, next())
            }
        };
        Ok(Self {
            ranges,
            order,
            total,
            bits,
            mul,
            add,
            x,
            next: 0,
        })
    }

    /// Combinations in one period.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// The next combination: per field, the index into its range (0 for a field without).
    pub fn next_index(&mut self) -> u64 {
        match self.order {
            Order::Sequential => {
                let i = self.next;
                self.next = (self.next + 1) % self.total;
                i
            }
            Order::Random(_) => {
                let mask = if self.bits >= 64 {
                    u64::MAX
                } else {
                    (1u64 << self.bits) - 1
                };
                // Full period modulo 2^bits; values past the total are skipped, fewer
                // than half of them.
                loop {
                    self.x = self.x.wrapping_mul(self.mul).wrapping_add(self.add) & mask;
                    if self.x < self.total {
                        return self.x;
                    }
                }
            }
        }
    }

    /// The values of combination `i`: per field, its value, or `None` without a range.
    pub fn values(&self, mut i: u64) -> [Option<u128>; 6] {
        let mut out = [None; 6];
        for k in (0..FIELDS.len()).rev() {
            if let Some(r) = self.ranges[k] {
                out[k] = Some(r.at(i % r.count));
                i /= r.count;
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_kind() {
        let (r, v6) = parse(Kind::Ip, "10.0.0.1-10.0.3.255").unwrap();
        assert_eq!((r.count, r.step, v6), (1023, 1, false));
        let (r, v6) = parse(Kind::Ip, "fd00::1-fd00::10/3").unwrap();
        assert_eq!((r.count, v6), (6, true));
        let (r, _) = parse(Kind::Port, "1000-2000:10").unwrap();
        assert_eq!((r.first, r.count), (1000, 101));
        let (r, _) = parse(Kind::Mac, "02:00:00:00:00:01-02:00:00:00:01:00").unwrap();
        assert_eq!(r.count, 256);
        let (r, _) = parse(Kind::Mac, "02:00:00:00:00:00-02:00:00:00:00:ff/16").unwrap();
        assert_eq!((r.count, r.step), (16, 16));
        let (r, _) = parse(Kind::Ip, "10.0.0.0-10.0.0.255:64").unwrap();
        assert_eq!(r.count, 4);
        let (r, _) = parse(Kind::Ip, "fd00::0-fd00::ff/16").unwrap();
        assert_eq!(r.count, 16);
        let (r, _) = parse(Kind::Port, "53").unwrap();
        assert_eq!(r.count, 1);
        for bad in ["2000-1000", "1-2:0", "1-70000", "x", "10.0.0.1-fd00::1", ""] {
            let kind = if bad.contains('.') {
                Kind::Ip
            } else {
                Kind::Port
            };
            assert!(parse(kind, bad).is_err(), "{bad}");
        }
        assert!(parse(Kind::Ip, "::-ffff::").is_err(), "too many values");
    }

    fn walk(order: Order) -> Walk {
        let mut ranges = [None; 6];
        ranges[3] = Some(parse(Kind::Ip, "10.0.0.1-10.0.0.3").unwrap().0);
        ranges[4] = Some(parse(Kind::Port, "1000-1040:20").unwrap().0);
        Walk::new(ranges, order).unwrap()
    }

    #[test]
    fn sequential_is_an_odometer_with_the_last_field_fastest() {
        let mut w = walk(Order::Sequential);
        assert_eq!(w.total(), 9);
        let got: Vec<(u128, u128)> = (0..10)
            .map(|_| {
                let i = w.next_index();
                let v = w.values(i);
                (v[3].unwrap() & 0xff, v[4].unwrap())
            })
            .collect();
        assert_eq!(
            got,
            [
                (1, 1000),
                (1, 1020),
                (1, 1040),
                (2, 1000),
                (2, 1020),
                (2, 1040),
                (3, 1000),
                (3, 1020),
                (3, 1040),
                (1, 1000)
            ]
        );
    }

    #[test]
    fn random_periods_are_permutations() {
        for seed in 0..20 {
            let mut w = walk(Order::Random(seed));
            for _ in 0..3 {
                let mut got: Vec<u64> = (0..9).map(|_| w.next_index()).collect();
                got.sort_unstable();
                assert_eq!(got, (0..9).collect::<Vec<_>>(), "seed {seed}");
            }
        }
        // Another seed, another order; the same seed, the same.
        let first = |s| {
            let mut w = walk(Order::Random(s));
            (0..9).map(|_| w.next_index()).collect::<Vec<_>>()
        };
        assert_eq!(first(1), first(1));
        assert!((2..6).any(|s| first(s) != first(1)));
        // A large range: still every value once.
        let mut ranges = [None; 6];
        ranges[4] = Some(parse(Kind::Port, "0-65535").unwrap().0);
        ranges[3] = Some(parse(Kind::Ip, "10.0.0.0-10.0.0.4").unwrap().0);
        let mut w = Walk::new(ranges, Order::Random(7)).unwrap();
        let mut seen = vec![false; w.total() as usize];
        for _ in 0..w.total() {
            let i = w.next_index() as usize;
            assert!(!seen[i]);
            seen[i] = true;
        }
    }
}
