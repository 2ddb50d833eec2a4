//! Parsing of the numbers users type: rates like `10k` or `1.5M`, MAC addresses.

/// Parses a count with an optional k/M/G suffix (`20000`, `10k`, `1.5M`).
pub fn parse_si(s: &str) -> Result<f64, String> {
    let t = s.trim();
    let (num, mul) = match t.char_indices().last() {
        Some((i, 'k' | 'K')) => (&t[..i], 1e3),
        Some((i, 'm' | 'M')) => (&t[..i], 1e6),
        Some((i, 'g' | 'G')) => (&t[..i], 1e9),
        _ => (t, 1.0),
    };
    let v: f64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not a number (examples: 20000, 10k, 1.5M)"))?;
    if !v.is_finite() {
        return Err(format!("`{s}` is not a finite number"));
    }
    Ok(v * mul)
}

/// Parses a packet rate: positive, at most 100 Mpps.
pub fn parse_rate(s: &str) -> Result<f64, String> {
    let v = parse_si(s)?;
    if v <= 0.0 {
        return Err(format!("rate `{s}` must be above 0 packets per second"));
    }
    if v > 100e6 {
        return Err(format!(
            "rate `{s}` is above 100 Mpps, more than any NIC zcnic drives can send"
        ));
    }
    Ok(v)
}

/// A rate as typed: packets per second, bits per second on the wire, or a share of the
/// link's speed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RateSpec {
    Pps(f64),
    /// Bits per second, each frame counting its bytes plus [`WIRE_OVERHEAD`].
    Bits(f64),
    /// Percent of the link speed (0 < p <= 100).
    Percent(f64),
}

/// What a bit rate counts on the wire besides a frame's bytes: FCS (4), preamble and
/// start of frame (8), inter-frame gap (12).
pub const WIRE_OVERHEAD: usize = 24;

/// Parses a rate: `20k` or `20kpps` (packets per second), `100Mbit`, `1Gbit/s` or
/// `100Mbps` (bits per second on the wire), `50%` (of the link speed).
pub fn parse_rate_spec(s: &str) -> Result<RateSpec, String> {
    let t = s.trim();
    if let Some(p) = t.strip_suffix('%') {
        let v: f64 = p
            .trim()
            .parse()
            .map_err(|_| format!("`{s}`: a percentage like 50%"))?;
        if !(v > 0.0 && v <= 100.0) {
            return Err(format!("`{s}`: a percentage above 0 and at most 100"));
        }
        return Ok(RateSpec::Percent(v));
    }
    for unit in ["bit/s", "bps", "bit"] {
        if let Some(n) = t.strip_suffix(unit) {
            let v = parse_si(n)?;
            if !(1.0..=1e12).contains(&v) {
                return Err(format!("rate `{s}`: give 1bit to 1000Gbit per second"));
            }
            return Ok(RateSpec::Bits(v));
        }
    }
    parse_rate(t.strip_suffix("pps").unwrap_or(t)).map(RateSpec::Pps)
}

impl RateSpec {
    /// Frames per second for frames of `mean_size` bytes on a link of `link_mbps` (0:
    /// unknown, which a percentage cannot do without).
    pub fn pps(self, mean_size: f64, link_mbps: u32) -> Result<f64, String> {
        let wire_bits = (mean_size + WIRE_OVERHEAD as f64) * 8.0;
        match self {
            RateSpec::Pps(r) => Ok(r),
            RateSpec::Bits(b) => Ok(b / wire_bits),
            RateSpec::Percent(_) if link_mbps == 0 => {
                Err("the link speed is unknown (link down?): give the rate in pps or bits".into())
            }
            RateSpec::Percent(p) => Ok(p / 100.0 * f64::from(link_mbps) * 1e6 / wire_bits),
        }
    }
}

/// Parses `52:54:00:12:34:56`.
pub fn parse_mac(s: &str) -> Result<[u8; 6], String> {
    let bad = || format!("`{s}` is not a MAC address (form: 52:54:00:12:34:56)");
    let parts: Vec<&str> = s.split(':').collect();
    if parts.len() != 6 {
        return Err(bad());
    }
    let mut mac = [0u8; 6];
    for (m, p) in mac.iter_mut().zip(parts) {
        if p.len() != 2 {
            return Err(bad());
        }
        *m = u8::from_str_radix(p, 16).map_err(|_| bad())?;
    }
    Ok(mac)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates() {
        assert_eq!(parse_rate("20000"), Ok(20000.0));
        assert_eq!(parse_rate("10k"), Ok(10000.0));
        assert_eq!(parse_rate("1.5M"), Ok(1.5e6));
        for bad in ["0", "-5", "abc", "1e12", "inf", "NaN", ""] {
            assert!(parse_rate(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn rate_specs() {
        assert_eq!(parse_rate_spec("20k"), Ok(RateSpec::Pps(20e3)));
        assert_eq!(parse_rate_spec("20kpps"), Ok(RateSpec::Pps(20e3)));
        assert_eq!(parse_rate_spec("100Mbit"), Ok(RateSpec::Bits(100e6)));
        assert_eq!(parse_rate_spec("1Gbit/s"), Ok(RateSpec::Bits(1e9)));
        assert_eq!(parse_rate_spec("50%"), Ok(RateSpec::Percent(50.0)));
        for bad in ["0%", "101%", "x%", "0bit", "abc", "-1k"] {
            assert!(parse_rate_spec(bad).is_err(), "{bad}");
        }
        // 1 Gbit/s of 60-byte frames: 84 bytes each on the wire.
        let pps = RateSpec::Bits(1e9).pps(60.0, 0).unwrap();
        assert!((pps - 1e9 / 672.0).abs() < 1e-6);
        assert_eq!(RateSpec::Percent(10.0).pps(60.0, 1000), Ok(1e8 / 672.0));
        assert!(RateSpec::Percent(10.0).pps(60.0, 0).is_err());
    }

    #[test]
    fn macs() {
        assert_eq!(parse_mac("ff:ff:ff:ff:ff:ff"), Ok([0xff; 6]));
        assert!(parse_mac("ff:ff:ff:ff:ff").is_err());
        assert!(parse_mac("fff:ff:ff:ff:ff:f").is_err());
    }
}
