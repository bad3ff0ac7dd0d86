//! Matching names against patterns: the server-wide ACME identifier policy (allowed domains and IP
//! ranges, wildcards), domain suffixes, CIDR ranges and `*` globs. Every rule in [`super`] that
//! compares a name with a pattern uses these.

use std::net::IpAddr;

use serde::Deserialize;

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
    /// Whether `name` (a normalised DNS name, possibly `*.`) is in a domain this CA issues for.
    pub fn allows_domain(&self, name: &str) -> bool {
        self.allowed_domains.is_empty()
            || self.allowed_domains.iter().any(|p| domain_matches(p, name))
    }

    /// Whether `ip` is in a range this CA issues for.
    pub fn allows_ip(&self, ip: IpAddr) -> bool {
        self.allowed_ip_ranges.iter().any(|r| ip_in_range(r, ip))
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
        assert!(p.allows_domain("a.example.test"));
        assert!(!p.allows_domain("a.other.test"));
        assert!(p.allows_ip("127.0.0.2".parse().expect("ip")));
        assert!(!p.allows_ip("10.0.0.1".parse().expect("ip")));
    }
}
