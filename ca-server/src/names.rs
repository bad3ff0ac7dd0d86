//! Syntax of the names we put in certificates (RFC 1035/5280 host names, wildcards).

/// Lower-cases and checks a DNS name: labels of 1–63 letters, digits or hyphens (not at either
/// end), at most 253 characters, an optional leading `*.` wildcard label. Returns the normalised
/// name.
pub fn normalize_dns_name(name: &str) -> Option<String> {
    let name = name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase();
    let (wildcard, base) = match name.strip_prefix("*.") {
        Some(rest) => (true, rest),
        None => (false, name.as_str()),
    };
    if base.is_empty() || base.len() > 253 - if wildcard { 2 } else { 0 } {
        return None;
    }
    let valid = base.split('.').all(|label| {
        !label.is_empty()
            && label.len() <= 63
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
    });
    valid.then_some(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_names() {
        assert_eq!(
            normalize_dns_name("Web.Default.SVC."),
            Some("web.default.svc".into())
        );
        assert_eq!(
            normalize_dns_name("*.example.com"),
            Some("*.example.com".into())
        );
        assert_eq!(normalize_dns_name("localhost"), Some("localhost".into()));
        for bad in [
            "",
            "*.",
            "a..b",
            "-a.b",
            "a-.b",
            "a_b.c",
            "*.*.a",
            "a.*.b",
            "exa mple.com",
        ] {
            assert_eq!(normalize_dns_name(bad), None, "{bad:?}");
        }
        assert_eq!(normalize_dns_name(&format!("{}.com", "a".repeat(64))), None);
    }
}
