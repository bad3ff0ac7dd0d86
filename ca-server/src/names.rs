//! Syntax of the names we put in certificates: RFC 1035/5280 host names and wildcards, e-mail
//! addresses, URIs, and the characters no name may contain. Shared by policy (which names a caller
//! may have) and the issuer's pre-signing check (what any certificate may say).

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

/// The Kubernetes namespace a certificate's names point at: a SPIFFE ID's `/ns/<namespace>/`
/// segment, else the first DNS name of the form `<service>.<namespace>.svc[.<cluster domain>]`
/// (or a wildcard under `<namespace>.svc`). None when neither appears.
pub fn workload_namespace<'a>(
    spiffe_id: Option<&str>,
    dns_names: impl IntoIterator<Item = &'a String>,
) -> Option<String> {
    if let Some(ns) = spiffe_id.and_then(|id| {
        let path = id.strip_prefix("spiffe://")?.split_once('/')?.1;
        let mut segments = path.split('/');
        while let Some(segment) = segments.next() {
            if segment == "ns" {
                return segments.next().filter(|s| !s.is_empty());
            }
        }
        None
    }) {
        return Some(ns.to_owned());
    }
    dns_names.into_iter().find_map(|name| {
        let labels: Vec<&str> = name.split('.').collect();
        (labels.len() >= 3 && labels[2] == "svc" && !labels[1].is_empty())
            .then(|| labels[1].to_owned())
    })
}

/// True when `s` holds a control character: C0 (including NUL), DEL or C1. Such characters let a
/// name display as something else in logs, UIs and other parsers, so no certificate carries one.
pub fn has_control_character(s: &str) -> bool {
    s.chars().any(char::is_control)
}

/// Longest e-mail address accepted (RFC 5321's path limit minus the angle brackets).
pub const MAX_EMAIL_LEN: usize = 254;

/// Checks an RFC 5322 `addr-spec` of the plain kind certificates carry: a dot-atom local part of
/// printable ASCII (at most 64 octets), `@`, and a valid DNS domain (no wildcard). Returns the
/// address with its domain lower-cased.
pub fn normalize_email(address: &str) -> Option<String> {
    if address.len() > MAX_EMAIL_LEN {
        return None;
    }
    let (local, domain) = address.rsplit_once('@')?;
    let atext = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+/=?^_`{|}~-".contains(&b);
    let local_ok = !local.is_empty()
        && local.len() <= 64
        && local
            .split('.')
            .all(|atom| !atom.is_empty() && atom.bytes().all(atext));
    if !local_ok || domain.starts_with("*.") {
        return None;
    }
    let domain = normalize_dns_name(domain)?;
    Some(format!("{local}@{domain}"))
}

/// Checks a URI for a certificate: at most 2048 octets of printable ASCII (no spaces), with an
/// RFC 3986 scheme.
pub fn is_valid_uri(uri: &str) -> bool {
    let Some((scheme, rest)) = uri.split_once(':') else {
        return false;
    };
    let mut scheme_bytes = scheme.bytes();
    uri.len() <= 2048
        && !rest.is_empty()
        && scheme_bytes.next().is_some_and(|b| b.is_ascii_alphabetic())
        && scheme_bytes.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'))
        && uri.bytes().all(|b| b.is_ascii_graphic())
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

    #[test]
    fn workload_namespaces() {
        let names = |n: &[&str]| n.iter().map(|s| (*s).to_owned()).collect::<Vec<String>>();
        assert_eq!(
            workload_namespace(
                Some("spiffe://cluster.local/ns/payments/sa/api"),
                &names(&[])
            ),
            Some("payments".into())
        );
        assert_eq!(
            workload_namespace(
                None,
                &names(&["api.example.com", "web.team-a.svc.cluster.local"])
            ),
            Some("team-a".into())
        );
        assert_eq!(
            workload_namespace(None, &names(&["*.team-b.svc"])),
            Some("team-b".into())
        );
        assert_eq!(
            workload_namespace(None, &names(&["a.b.c.example", "svc.x"])),
            None
        );
        assert_eq!(
            workload_namespace(Some("spiffe://td/ns"), &names(&[])),
            None
        );
    }

    #[test]
    fn emails_and_uris() {
        assert_eq!(
            normalize_email("Ops.Team+x@Example.COM"),
            Some("Ops.Team+x@example.com".into())
        );
        for bad in [
            "",
            "@example.com",
            "a@",
            "a@b@c",
            "a b@example.com",
            ".a@example.com",
            "a..b@example.com",
            "a@*.example.com",
            "a@exa_mple.com",
            "a\u{0}@example.com",
        ] {
            assert_eq!(normalize_email(bad), None, "{bad:?}");
        }
        assert_eq!(
            normalize_email(&format!("{}@example.com", "a".repeat(65))),
            None
        );
        assert!(is_valid_uri("spiffe://cluster.local/ns/a/sa/b"));
        assert!(is_valid_uri("urn:uuid:1"));
        for bad in ["", "nocolon", "1abc:x", "a b:c", "https://x/\u{7f}", "x:"] {
            assert!(!is_valid_uri(bad), "{bad:?}");
        }
        assert!(has_control_character("a\u{0}b") && has_control_character("\u{9b}"));
        assert!(!has_control_character("Zürich"));
    }
}
