//! Certificate serial numbers: 17 octets, positive, with 128 random bits (RFC 5280 allows 20).
//!
//! Never rcgen's default, which hashes the public key and so repeats when a key is re-certified
//! (cert-manager's `rotationPolicy: Never`). Uniqueness is enforced by the ledger's UNIQUE
//! constraint; a collision (astronomically unlikely) is retried with a fresh serial.

use rcgen::SerialNumber;
use ring::rand::{SecureRandom, SystemRandom};

/// A fresh random serial. The first octet is in 1..=0x7f so the DER INTEGER is positive, minimally
/// encoded and always 17 octets long; the other 16 octets are random.
pub fn random() -> SerialNumber {
    let mut bytes = [0u8; 17];
    // SystemRandom only fails if the OS has no entropy source, which we cannot run without.
    SystemRandom::new()
        .fill(&mut bytes)
        .unwrap_or_else(|_| panic!("the operating system's random number generator failed"));
    bytes[0] &= 0x7f;
    if bytes[0] == 0 {
        bytes[0] = 1;
    }
    SerialNumber::from_slice(&bytes)
}

/// Colon-separated lower-case hex, as Vault shows serials (`1a:2b:…`).
pub fn to_colon_hex(serial: &[u8]) -> String {
    serial
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Parses a serial in hex, with or without colons (`1a:2b…`, `1A2B…`, `0x1a2b`), as the
/// magnitude the ledger stores (no leading zero bytes). None for anything else.
pub fn from_hex(s: &str) -> Option<Vec<u8>> {
    let hex: String = s
        .chars()
        .filter(|c| *c != ':' && *c != '-' && !c.is_whitespace())
        .collect();
    let hex = hex.strip_prefix("0x").unwrap_or(&hex);
    if hex.is_empty() || hex.len() % 2 == 1 || hex.len() > 42 {
        return None;
    }
    let mut out: Vec<u8> = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
        .collect::<Option<_>>()?;
    while out.len() > 1 && out[0] == 0 {
        out.remove(0);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serials_are_positive_17_octets_and_distinct() {
        let a = random().to_bytes();
        let b = random().to_bytes();
        assert_eq!(a.len(), 17);
        assert!(a[0] >= 1 && a[0] <= 0x7f);
        assert_ne!(a, b);
        assert_eq!(to_colon_hex(&[0x0a, 0xff]), "0a:ff");
    }
}
