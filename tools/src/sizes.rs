//! Frame sizes `zcnic pktgen` sends: one size, a range cycled, or a simple IMIX.

use crate::frame;

/// Frame sizes to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sizes {
    /// Every frame this size.
    Fixed(usize),
    /// Sizes from `min` to `max`, one after the other, then again.
    Range(usize, usize),
    /// Simple IMIX: 7 × 60, 4 × 590, 1 × 1514 bytes in every 12 frames (64/594/1518 on the
    /// wire with the FCS).
    Imix,
}

const IMIX: [usize; 12] = [60, 590, 60, 60, 590, 60, 60, 590, 60, 60, 590, 1514];

impl Sizes {
    /// Parses `--size`: `N` or `MIN-MAX`, each within the frame limits.
    pub fn parse(s: &str) -> Result<Self, String> {
        let num = |t: &str| -> Result<usize, String> {
            let n: usize = t
                .trim()
                .parse()
                .map_err(|_| format!("--size `{s}`: give N or MIN-MAX in bytes"))?;
            if !(frame::MIN_FRAME..=frame::MAX_FRAME).contains(&n) {
                return Err(format!(
                    "--size {n}: frames are {}..={} bytes (without FCS)",
                    frame::MIN_FRAME,
                    frame::MAX_FRAME
                ));
            }
            Ok(n)
        };
        match s.split_once('-') {
            None => Ok(Sizes::Fixed(num(s)?)),
            Some((a, b)) => {
                let (a, b) = (num(a)?, num(b)?);
                if a > b {
                    return Err(format!("--size {s}: MIN is above MAX"));
                }
                Ok(Sizes::Range(a, b))
            }
        }
    }

    /// The mean size sent (what a bit rate is spread over).
    pub fn mean(&self) -> f64 {
        match *self {
            Sizes::Fixed(n) => n as f64,
            Sizes::Range(a, b) => (a + b) as f64 / 2.0,
            Sizes::Imix => IMIX.iter().sum::<usize>() as f64 / IMIX.len() as f64,
        }
    }

    /// The largest size sent.
    pub fn max(&self) -> usize {
        match *self {
            Sizes::Fixed(n) | Sizes::Range(_, n) => n,
            Sizes::Imix => frame::STANDARD_FRAME,
        }
    }

    /// Size of frame `seq`.
    #[inline(always)]
    pub fn of(&self, seq: u64) -> usize {
        match *self {
            Sizes::Fixed(n) => n,
            Sizes::Range(a, b) => a + (seq % (b - a + 1) as u64) as usize,
            Sizes::Imix => IMIX[(seq % 12) as usize],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pktgen::check_mtu;

    #[test]
    fn sizes() {
        assert_eq!(Sizes::parse("60"), Ok(Sizes::Fixed(60)));
        assert_eq!(Sizes::parse("64-128"), Ok(Sizes::Range(64, 128)));
        assert!(Sizes::parse("59").unwrap_err().contains("60..=16124"));
        assert!(Sizes::parse("16125").is_err());
        assert_eq!(Sizes::parse("1515-9014").map(|s| s.max()), Ok(9014));
        assert_eq!(Sizes::Imix.max(), 1514);
        let port: zcnic::PciAddr = "0000:00:02.0".parse().unwrap();
        let e = check_mtu(1515, 1500, port).unwrap_err().to_string();
        assert!(e.contains("--mtu 1501") && e.contains("1514"), "{e}");
        assert!(check_mtu(9014, 9000, port).is_ok());
        assert!(Sizes::parse("128-64").is_err());
        assert!(Sizes::parse("big").is_err());
        let r = Sizes::Range(60, 62);
        assert_eq!(
            (0..4).map(|i| r.of(i)).collect::<Vec<_>>(),
            [60, 61, 62, 60]
        );
        let n: Vec<usize> = (0..12).map(|i| Sizes::Imix.of(i)).collect();
        assert_eq!(n.iter().filter(|&&s| s == 60).count(), 7);
        assert_eq!(n.iter().filter(|&&s| s == 590).count(), 4);
        assert_eq!(n.iter().filter(|&&s| s == 1514).count(), 1);
    }
}
