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
    fn macs() {
        assert_eq!(parse_mac("ff:ff:ff:ff:ff:ff"), Ok([0xff; 6]));
        assert!(parse_mac("ff:ff:ff:ff:ff").is_err());
        assert!(parse_mac("fff:ff:ff:ff:ff:f").is_err());
    }
}
