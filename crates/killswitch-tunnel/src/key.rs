//! WireGuard keys: 32 bytes, written in base64. Private and preshared keys are secrets: zeroed on
//! drop, redacted in `Debug`, never `Display`ed.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};
use std::fmt;
use zeroize::{Zeroize, ZeroizeOnDrop};

/// Why a string is not a key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a WireGuard key: expected 44 characters of base64 encoding 32 bytes")]
pub struct KeyError;

fn decode(text: &str) -> Result<[u8; 32], KeyError> {
    let mut bytes = STANDARD.decode(text.trim()).map_err(|_| KeyError)?;
    let key: Result<[u8; 32], _> = bytes.as_slice().try_into();
    bytes.zeroize();
    key.map_err(|_| KeyError)
}

/// A secret key (private or preshared).
#[derive(Clone, PartialEq, Eq, Zeroize, ZeroizeOnDrop, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct SecretKey([u8; 32]);

impl SecretKey {
    /// Parses base64.
    pub fn parse(text: &str) -> Result<Self, KeyError> {
        decode(text).map(SecretKey)
    }

    /// The raw bytes (for the backends, which hand them to the kernel or the device).
    pub fn bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The key in lowercase hex, as the UAPI protocol wants it.
    pub(crate) fn hex(&self) -> String {
        hex(&self.0)
    }
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretKey(redacted)")
    }
}

impl TryFrom<String> for SecretKey {
    type Error = KeyError;
    fn try_from(mut text: String) -> Result<Self, Self::Error> {
        let key = SecretKey::parse(&text);
        text.zeroize();
        key
    }
}

impl From<SecretKey> for String {
    /// Only for persisting the configuration in the daemon's root-only state directory.
    fn from(key: SecretKey) -> Self {
        STANDARD.encode(key.0)
    }
}

/// A public key: not a secret, shown in base64.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct PublicKey([u8; 32]);

impl PublicKey {
    /// Parses base64.
    pub fn parse(text: &str) -> Result<Self, KeyError> {
        decode(text).map(PublicKey)
    }

    /// The raw bytes.
    pub fn bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The key in lowercase hex, as the UAPI protocol wants it.
    pub(crate) fn hex(&self) -> String {
        hex(&self.0)
    }

    /// Parses the UAPI protocol's hex.
    pub(crate) fn from_hex(text: &str) -> Option<Self> {
        if text.len() != 64 {
            return None;
        }
        let mut bytes = [0u8; 32];
        for (i, byte) in bytes.iter_mut().enumerate() {
            *byte = u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok()?;
        }
        Some(PublicKey(bytes))
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&STANDARD.encode(self.0))
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({self})")
    }
}

impl TryFrom<String> for PublicKey {
    type Error = KeyError;
    fn try_from(text: String) -> Result<Self, Self::Error> {
        PublicKey::parse(&text)
    }
}

impl From<PublicKey> for String {
    fn from(key: PublicKey) -> Self {
        key.to_string()
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const PRIVATE: &str = "yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk=";

    #[test]
    fn parses_and_rejects() {
        assert!(SecretKey::parse(PRIVATE).is_ok());
        assert!(PublicKey::parse("HIgo9xNzJMWLKASShiTqIybxZ0U3wGLiUeJ1PKf8ykw=").is_ok());
        for bad in [
            "",
            "abc",
            "yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBm=",
            "!!!!yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3f",
        ] {
            assert_eq!(SecretKey::parse(bad).err(), Some(KeyError), "{bad:?}");
        }
    }

    #[test]
    fn secrets_do_not_show() {
        let key = SecretKey::parse(PRIVATE).expect("valid");
        assert_eq!(format!("{key:?}"), "SecretKey(redacted)");
        assert!(!format!("{:?}", Some(&key)).contains("yAnz"));
    }

    #[test]
    fn hex_round_trip() {
        let key = PublicKey::parse("HIgo9xNzJMWLKASShiTqIybxZ0U3wGLiUeJ1PKf8ykw=").expect("valid");
        assert_eq!(PublicKey::from_hex(&key.hex()), Some(key));
        assert_eq!(PublicKey::from_hex("zz"), None);
    }
}
