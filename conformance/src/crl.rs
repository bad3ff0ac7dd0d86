//! The CRL a server publishes, read as a relying party reads it: fetched over plain HTTP from
//! `/crl`, its signature checked against the issuing CA (`/ca/chain.pem`, first certificate) by
//! `openssl crl -verify`, and its entries parsed from `openssl crl -text`. Tests use it to prove a
//! revocation reached the CRL and that nothing else did.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::openssl::{pem_blocks, serial_bytes, serial_hex};
use crate::process::{QUICK, output_within};

/// One fetched, signature-checked CRL.
#[derive(Debug, Clone)]
pub struct Crl {
    /// Serial (upper-case hex, no sign byte) → reason as openssl names it (`Key Compromise`,
    /// `Superseded`, …; empty when the entry carries no reason code).
    pub entries: BTreeMap<String, String>,
    /// `openssl crl -text`.
    pub text: String,
}

impl Crl {
    /// Whether `serial` (ledger bytes) is listed.
    pub fn lists(&self, serial: &[u8]) -> bool {
        self.entries.contains_key(&serial_hex(serial))
    }

    /// The reason the CRL gives for `serial`, if listed.
    pub fn reason_of(&self, serial: &[u8]) -> Option<&str> {
        self.entries.get(&serial_hex(serial)).map(String::as_str)
    }
}

/// `openssl crl -text` entries: serial → reason.
pub fn parse(text: &str) -> BTreeMap<String, String> {
    let mut entries = BTreeMap::new();
    let mut current: Option<String> = None;
    let mut reason_next = false;
    for line in text.lines().map(str::trim) {
        if let Some(serial) = line.strip_prefix("Serial Number:") {
            let key = serial_hex(&serial_bytes(serial));
            entries.insert(key.clone(), String::new());
            current = Some(key);
            reason_next = false;
        } else if line.starts_with("X509v3 CRL Reason Code") {
            reason_next = true;
        } else if reason_next {
            if let Some(key) = &current {
                entries.insert(key.clone(), line.to_owned());
            }
            reason_next = false;
        }
    }
    entries
}

/// Fetches `<http_url>/crl` (DER) into `dir`, checks its signature against the issuing CA the
/// server serves, and parses it.
pub fn fetch(http_url: &str, dir: &Path) -> Crl {
    fetch_path(http_url, "/crl", dir)
}

/// As [`fetch`], for another CRL path (`/crl/<shard>`).
pub fn fetch_path(http_url: &str, path: &str, dir: &Path) -> Crl {
    let (code, chain) = crate::openssl::curl_http(&format!("{http_url}/ca/chain.pem"));
    assert_eq!(code, 200, "GET /ca/chain.pem");
    let issuing = pem_blocks(&chain)
        .into_iter()
        .next()
        .unwrap_or_else(|| panic!("no certificate in /ca/chain.pem: {chain}"));
    let ca_file = dir.join("crl-issuer.pem");
    std::fs::write(&ca_file, issuing).unwrap_or_else(|e| panic!("{e}"));
    let file = dir.join("fetched.crl");
    let out = output_within(
        Command::new("curl")
            .args(["-sS", "-f", "--max-time", "10", "-o"])
            .arg(&file)
            .arg(format!("{http_url}{path}")),
        QUICK,
    );
    assert!(
        out.status.success(),
        "GET {path}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = output_within(
        Command::new("openssl")
            .args(["crl", "-inform", "DER", "-in"])
            .arg(&file)
            .args(["-noout", "-text", "-CAfile"])
            .arg(&ca_file),
        QUICK,
    );
    let said = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success() && said.contains("verify OK"),
        "the CRL at {path} is not signed by the issuing CA: {said}"
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    Crl {
        entries: parse(&text),
        text,
    }
}

/// Fetches the CRL until it lists `serial` (a revocation on another replica, or from the CLI,
/// shows within the server's 5 s cache); panics after `limit`.
pub fn wait_listed(http_url: &str, dir: &Path, serial: &[u8], limit: Duration) -> Crl {
    crate::wait::until(
        &format!("the CRL listing {}", serial_hex(serial)),
        limit,
        Duration::from_millis(250),
        || Some(fetch(http_url, dir)).filter(|crl| crl.lists(serial)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_and_reasons_are_read_from_openssl_text() {
        let text = "Certificate Revocation List (CRL):\n        Version 2 (0x1)\n\
            Revoked Certificates:\n    Serial Number: 00A1B2\n        Revocation Date: Jan  1 00:00:00 2030 GMT\n\
            \x20       CRL entry extensions:\n            X509v3 CRL Reason Code: \n                Key Compromise\n\
            \x20   Serial Number: 7F01\n        Revocation Date: Jan  1 00:00:00 2030 GMT\n\
            \x20   Signature Algorithm: ecdsa-with-SHA256\n";
        let entries = parse(text);
        assert_eq!(entries.len(), 2, "{entries:?}");
        assert_eq!(entries["A1B2"], "Key Compromise");
        assert_eq!(entries["7F01"], "");
    }
}
