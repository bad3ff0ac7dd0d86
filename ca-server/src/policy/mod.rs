//! The RA: may this requester have these names? Identifier rules for ACME (allowed domains and IP
//! ranges, wildcards) and External Account Binding policies (which names and SPIFFE URIs an account
//! may obtain, and whether its authorizations are pre-authorized).

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::names::normalize_dns_name;

/// Server-wide identifier policy for ACME.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IdentifierPolicy {
    /// Allowed DNS names: exact names (`api.example.com`) or suffixes starting with a dot
    /// (`.svc.cluster.local`). Empty: any name.
    pub allowed_domains: Vec<String>,
    /// Allowed IP ranges in CIDR form. Empty: no IP identifiers.
    pub allowed_ip_ranges: Vec<String>,
    /// Whether `*.name` may be ordered.
    pub allow_wildcards: bool,
}

impl Default for IdentifierPolicy {
    fn default() -> Self {
        Self {
            allowed_domains: Vec::new(),
            allowed_ip_ranges: vec!["0.0.0.0/0".into(), "::/0".into()],
            allow_wildcards: true,
        }
    }
}

/// True when `name` equals `pattern`, or `pattern` is `.suffix` and `name` is below it.
pub fn domain_matches(pattern: &str, name: &str) -> bool {
    let pattern = pattern.to_ascii_lowercase();
    let name = name.to_ascii_lowercase();
    let name = name.strip_prefix("*.").unwrap_or(&name);
    match pattern.strip_prefix('.') {
        Some(suffix) => name.ends_with(&format!(".{suffix}")),
        None => name == pattern,
    }
}

/// True when `ip` lies in the CIDR range `range` (`10.0.0.0/8`, `::1/128`, or a bare address).
pub fn ip_in_range(range: &str, ip: IpAddr) -> bool {
    let (addr, prefix) = match range.split_once('/') {
        Some((a, p)) => (a, p.parse::<u32>().ok()),
        None => (range, None),
    };
    let Ok(net) = addr.parse::<IpAddr>() else {
        return false;
    };
    match (net, ip) {
        (IpAddr::V4(n), IpAddr::V4(i)) => {
            let p = prefix.unwrap_or(32).min(32);
            let mask = if p == 0 { 0 } else { u32::MAX << (32 - p) };
            u32::from(n) & mask == u32::from(i) & mask
        }
        (IpAddr::V6(n), IpAddr::V6(i)) => {
            let p = prefix.unwrap_or(128).min(128);
            let mask = if p == 0 { 0 } else { u128::MAX << (128 - p) };
            u128::from(n) & mask == u128::from(i) & mask
        }
        _ => false,
    }
}

/// Simple glob: `*` matches any run of characters (including `/`), everything else literally.
pub fn glob_matches(pattern: &str, value: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == value;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !value.starts_with(first) || !value[first.len()..].ends_with(last) {
        return false;
    }
    let mut rest = &value[first.len()..value.len() - last.len()];
    for part in &parts[1..parts.len() - 1] {
        match rest.find(part) {
            Some(i) => rest = &rest[i + part.len()..],
            None => return false,
        }
    }
    true
}

impl IdentifierPolicy {
    /// Why a DNS name may not be ordered, if it may not.
    pub fn check_dns(&self, name: &str) -> Result<(), String> {
        if normalize_dns_name(name).is_none() {
            return Err(format!("{name:?} is not a valid DNS name"));
        }
        if name.starts_with("*.") && !self.allow_wildcards {
            return Err("wildcard names are not allowed by this CA".into());
        }
        if !self.allowed_domains.is_empty()
            && !self.allowed_domains.iter().any(|p| domain_matches(p, name))
        {
            return Err(format!("{name} is not in a domain this CA issues for"));
        }
        Ok(())
    }

    /// Why an IP address may not be ordered, if it may not.
    pub fn check_ip(&self, ip: IpAddr) -> Result<(), String> {
        if self.allowed_ip_ranges.iter().any(|r| ip_in_range(r, ip)) {
            Ok(())
        } else {
            Err(format!("{ip} is not in an IP range this CA issues for"))
        }
    }
}

/// What an EAB key grants the account bound to it (stored as JSON with the key).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EabBinding {
    /// Names the account may order (exact or `.suffix`). Empty: the server-wide policy alone.
    pub names: Vec<String>,
    /// URI SAN patterns the account's CSRs may carry (`spiffe://cluster.local/ns/team-a/*`).
    /// URI SANs are refused without a matching pattern.
    pub uris: Vec<String>,
    /// Authorizations are created valid: no challenge, no solver.
    pub preauthorized: bool,
    /// Profiles the account may use. Empty: all offered profiles.
    pub profiles: Vec<String>,
}

impl EabBinding {
    /// Whether the binding allows ordering `name` (checked in addition to the server policy).
    pub fn allows_name(&self, name: &str) -> bool {
        self.names.is_empty() || self.names.iter().any(|p| domain_matches(p, name))
    }

    /// Whether a CSR may carry the URI SAN `uri`.
    pub fn allows_uri(&self, uri: &str) -> bool {
        self.uris.iter().any(|p| glob_matches(p, uri))
    }

    /// Whether the account may use `profile`.
    pub fn allows_profile(&self, profile: &str) -> bool {
        self.profiles.is_empty() || self.profiles.iter().any(|p| p == profile)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domains() {
        assert!(domain_matches(
            ".svc.cluster.local",
            "web.default.svc.cluster.local"
        ));
        assert!(domain_matches(
            ".svc.cluster.local",
            "*.default.svc.cluster.local"
        ));
        assert!(!domain_matches(".svc.cluster.local", "svc.cluster.local"));
        assert!(!domain_matches(".example.com", "evil-example.com"));
        assert!(domain_matches("api.example.com", "API.example.com"));
        assert!(!domain_matches("api.example.com", "x.api.example.com"));
    }

    #[test]
    fn ip_ranges() {
        assert!(ip_in_range("10.0.0.0/8", "10.1.2.3".parse().expect("ip")));
        assert!(!ip_in_range("10.0.0.0/8", "11.0.0.1".parse().expect("ip")));
        assert!(ip_in_range("::/0", "::1".parse().expect("ip")));
        assert!(!ip_in_range("0.0.0.0/0", "::1".parse().expect("ip")));
        assert!(ip_in_range("127.0.0.1", "127.0.0.1".parse().expect("ip")));
    }

    #[test]
    fn globs() {
        assert!(glob_matches(
            "spiffe://cluster.local/ns/team-a/*",
            "spiffe://cluster.local/ns/team-a/sa/web"
        ));
        assert!(!glob_matches(
            "spiffe://cluster.local/ns/team-a/*",
            "spiffe://cluster.local/ns/team-b/sa/web"
        ));
        assert!(glob_matches(
            "spiffe://td/ns/*/sa/default",
            "spiffe://td/ns/x/sa/default"
        ));
        assert!(!glob_matches(
            "spiffe://td/ns/*/sa/default",
            "spiffe://td/ns/x/sa/admin"
        ));
        assert!(glob_matches("exact", "exact"));
    }

    #[test]
    fn policy_checks() {
        let p = IdentifierPolicy {
            allowed_domains: vec![".example.test".into()],
            allowed_ip_ranges: vec!["127.0.0.0/8".into()],
            allow_wildcards: false,
        };
        assert!(p.check_dns("a.example.test").is_ok());
        assert!(p.check_dns("a.other.test").is_err());
        assert!(p.check_dns("*.example.test").is_err());
        assert!(p.check_ip("127.0.0.2".parse().expect("ip")).is_ok());
        assert!(p.check_ip("10.0.0.1".parse().expect("ip")).is_err());
    }
}
