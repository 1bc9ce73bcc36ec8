//! Firewall marks (`SO_MARK` / fwmark), written in decimal or `0x` hex as `ip rule` and `wg` do.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// The fwmark that a tunnel sets on its own UDP/TCP socket.
///
/// The endpoint hole can require it, so that only the tunnel's own packets may reach the VPN server
/// outside the tunnel: any other program that sends to the server's address is rejected (the
/// "ServerIP" attack, where an attacker who controls DNS points a hostname at the VPN server's IP).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "u32", into = "u32")]
pub struct Fwmark(u32);

impl Fwmark {
    /// A mark with this value; `None` for 0, which means "no mark": requiring it would admit every
    /// unmarked packet.
    pub const fn new(value: u32) -> Option<Self> {
        if value == 0 {
            None
        } else {
            Some(Fwmark(value))
        }
    }

    /// The mark's value.
    pub const fn get(self) -> u32 {
        self.0
    }
}

impl TryFrom<u32> for Fwmark {
    type Error = FwmarkParseError;
    fn try_from(value: u32) -> Result<Self, Self::Error> {
        Fwmark::new(value).ok_or_else(|| FwmarkParseError {
            input: value.to_string(),
        })
    }
}

impl From<Fwmark> for u32 {
    fn from(mark: Fwmark) -> Self {
        mark.0
    }
}

/// Why a string is not a firewall mark.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid fwmark {input:?}: expected a number from 1 to 4294967295, decimal or 0x-hex")]
pub struct FwmarkParseError {
    input: String,
}

impl FromStr for Fwmark {
    type Err = FwmarkParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || FwmarkParseError {
            input: s.to_owned(),
        };
        let value = match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
            Some(hex) => u32::from_str_radix(hex, 16).map_err(|_| err())?,
            None => s.parse::<u32>().map_err(|_| err())?,
        };
        Fwmark::new(value).ok_or_else(err)
    }
}

impl fmt::Display for Fwmark {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#x}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_decimal_and_hex() {
        assert_eq!("51820".parse(), Ok(Fwmark(51820)));
        assert_eq!("0xca6c".parse(), Ok(Fwmark(0xca6c)));
        assert_eq!("0XCA6C".parse(), Ok(Fwmark(0xca6c)));
        assert_eq!("4294967295".parse(), Ok(Fwmark(u32::MAX)));
    }

    #[test]
    fn serde_rejects_zero() {
        assert!(serde_json::from_str::<Fwmark>("0").is_err());
        assert_eq!(serde_json::from_str::<Fwmark>("7").ok(), Fwmark::new(7));
    }

    #[test]
    fn rejects_zero_garbage_and_overflow() {
        for bad in [
            "0",
            "0x0",
            "",
            "0x",
            "-1",
            "4294967296",
            "12ab",
            "0xfffffffff",
            " 1",
        ] {
            assert!(bad.parse::<Fwmark>().is_err(), "{bad:?}");
        }
    }
}
