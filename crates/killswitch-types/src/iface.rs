//! Network interface names, validated the way the kernel validates them.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// The longest interface name the kernel accepts (IFNAMSIZ minus the terminating NUL).
pub const MAX_INTERFACE_NAME_LEN: usize = 15;

/// A Linux network interface name: 1 to 15 bytes, no `/`, no whitespace, not `.` or `..`.
///
/// The firewall matches the tunnel by name rather than by index because a tunnel that is torn down
/// and recreated gets a new index, and the rules must keep matching it without a rewrite.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct InterfaceName(String);

/// Why a string is not a valid interface name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InterfaceNameError {
    /// The name is empty.
    #[error("interface name is empty")]
    Empty,
    /// The name is longer than the kernel allows.
    #[error("interface name {0:?} is longer than {MAX_INTERFACE_NAME_LEN} bytes")]
    TooLong(String),
    /// The name contains a character the kernel rejects or treats specially.
    #[error("interface name {0:?} contains '/', ':', '%', whitespace or a control character")]
    BadCharacter(String),
    /// `.` and `..` are reserved, and so are `all` and `default` (sysctl directories per
    /// interface share their namespace with these).
    #[error("interface name {0:?} is reserved")]
    Reserved(String),
}

impl InterfaceName {
    /// Validates `name` as an interface name.
    pub fn new(name: impl Into<String>) -> Result<Self, InterfaceNameError> {
        let name = name.into();
        if name.is_empty() {
            return Err(InterfaceNameError::Empty);
        }
        if name.len() > MAX_INTERFACE_NAME_LEN {
            return Err(InterfaceNameError::TooLong(name));
        }
        // The kernel's dev_valid_name() rejects '/', ':' and whitespace; '%' makes it pick a
        // number (`wg%d` becomes `wg0`, not the name asked for); control characters would only
        // confuse logs and terminals.
        if name
            .chars()
            .any(|c| c == '/' || c == ':' || c == '%' || c.is_whitespace() || c.is_control())
        {
            return Err(InterfaceNameError::BadCharacter(name));
        }
        if matches!(name.as_str(), "." | ".." | "all" | "default") {
            return Err(InterfaceNameError::Reserved(name));
        }
        Ok(Self(name))
    }

    /// The loopback interface, which every state allows.
    pub fn loopback() -> Self {
        Self("lo".to_owned())
    }

    /// The name as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for InterfaceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for InterfaceName {
    type Err = InterfaceNameError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

impl TryFrom<String> for InterfaceName {
    type Error = InterfaceNameError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::new(s)
    }
}

impl From<InterfaceName> for String {
    fn from(name: InterfaceName) -> Self {
        name.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_usual_names() {
        for name in [
            "lo",
            "wg0",
            "tun0",
            "eth0.100",
            "enp0s31f6",
            "a234567890abcde",
        ] {
            assert_eq!(
                InterfaceName::new(name).map(|n| n.to_string()),
                Ok(name.to_owned())
            );
        }
    }

    #[test]
    fn rejects_what_the_kernel_rejects() {
        assert_eq!(InterfaceName::new(""), Err(InterfaceNameError::Empty));
        assert!(matches!(
            InterfaceName::new("a234567890abcdef"),
            Err(InterfaceNameError::TooLong(_))
        ));
        for bad in ["wg/0", "wg 0", "wg:0", "wg\n", "wg\t0", "wg%d"] {
            assert!(
                matches!(
                    InterfaceName::new(bad),
                    Err(InterfaceNameError::BadCharacter(_))
                ),
                "{bad:?}"
            );
        }
        for reserved in [".", "..", "all", "default"] {
            assert!(
                matches!(
                    InterfaceName::new(reserved),
                    Err(InterfaceNameError::Reserved(_))
                ),
                "{reserved}"
            );
        }
    }

    #[test]
    fn serde_validates() {
        let ok: Result<InterfaceName, _> = serde_json::from_str("\"wg0\"");
        assert!(ok.is_ok());
        let err = serde_json::from_str::<InterfaceName>("\"w/g\"")
            .map(|_| ())
            .unwrap_err();
        assert!(err.to_string().contains("interface name"), "{err}");
    }
}
