//! `zcnic dump --join MAC --allmulti`: the receive filters a capture sets before it starts,
//! so a port with promiscuity off receives the multicast groups it is told to (IPv6
//! neighbour discovery's solicited-node groups, mDNS, …).

use crate::{msg, units, ToolError};
use zcnic::{format_mac, Nic, Port};

/// Groups to join and whether to take every multicast frame.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Groups {
    /// Multicast addresses to join, in the order given.
    pub join: Vec<[u8; 6]>,
    /// All-multicast.
    pub allmulti: bool,
}

impl Groups {
    /// From the flags: each `--join` a multicast MAC; both only with `--no-promisc`
    /// (`promisc` false), since a promiscuous port receives every group already and the
    /// capture would not show the filter at work.
    pub fn parse(join: &[String], allmulti: bool, promisc: bool) -> Result<Self, ToolError> {
        let join = join
            .iter()
            .map(|s| {
                let mac = units::parse_mac(s).map_err(|e| msg(format!("--join: {e}")))?;
                if !zcnic::filter::is_multicast(mac) {
                    return Err(msg(format!(
                        "--join {s}: not a multicast address (bit 0 of the first byte is clear): give a group such as 33:33:ff:00:00:01 or 01:00:5e:00:00:fb"
                    )));
                }
                Ok(mac)
            })
            .collect::<Result<Vec<_>, _>>()?;
        let g = Self { join, allmulti };
        if promisc && g != Self::default() {
            let flag = if g.allmulti { "--allmulti" } else { "--join" };
            return Err(msg(format!(
                "{flag} needs --no-promisc: a promiscuous port receives every group already"
            )));
        }
        Ok(g)
    }

    /// ` joined 33:33:ff:00:00:01, all-multicast` for the listening line, or nothing.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if !self.join.is_empty() {
            let macs: Vec<String> = self.join.iter().map(|m| format_mac(*m)).collect();
            parts.push(format!("joined {}", macs.join(" ")));
        }
        if self.allmulti {
            parts.push("all-multicast".to_string());
        }
        if parts.is_empty() {
            return String::new();
        }
        format!(" ({})", parts.join(", "))
    }

    /// Sets them on a one-queue port.
    pub fn apply_nic(&self, nic: &mut dyn Nic) -> Result<(), ToolError> {
        for &m in &self.join {
            nic.add_multicast(m)?;
        }
        if self.allmulti {
            nic.set_allmulti(true)?;
        }
        Ok(())
    }

    /// Sets them on a multi-queue port.
    pub fn apply_port(&self, port: &mut dyn Port) -> Result<(), ToolError> {
        for &m in &self.join {
            port.add_multicast(m)?;
        }
        if self.allmulti {
            port.set_allmulti(true)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn joins_parse_and_describe_themselves() {
        let g = Groups::parse(&strings(&["33:33:ff:00:00:01"]), true, false).unwrap();
        assert_eq!(g.join, [[0x33, 0x33, 0xff, 0, 0, 1]]);
        assert_eq!(g.describe(), " (joined 33:33:ff:00:00:01, all-multicast)");
        assert_eq!(Groups::default().describe(), "");
    }

    #[test]
    fn bad_joins_are_one_line_errors() {
        let e = Groups::parse(&strings(&["33:33:ff:00:00"]), false, false).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("--join: `33:33:ff:00:00` is not a MAC"),
            "{e}"
        );
        let e = Groups::parse(&strings(&["52:54:00:00:00:01"]), false, false).unwrap_err();
        assert!(e.to_string().contains("not a multicast address"), "{e}");
        let e = Groups::parse(&strings(&["33:33:ff:00:00:01"]), false, true).unwrap_err();
        assert!(e.to_string().contains("needs --no-promisc"), "{e}");
        let e = Groups::parse(&[], true, true).unwrap_err();
        assert!(e.to_string().starts_with("--allmulti needs"), "{e}");
        assert!(Groups::parse(&[], false, true).is_ok());
    }
}
