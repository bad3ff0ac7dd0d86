//! SPIFFE IDs (`spiffe://<trust-domain>/<path>`), validated by the SPIFFE-ID specification:
//! lower-case trust domain of `[a-z0-9.-_]`, path segments of `[a-zA-Z0-9.-_]` with no empty,
//! `.` or `..` segment and no trailing `/`, no query, fragment, userinfo, port or percent-encoding,
//! at most 2048 bytes.

use std::fmt;

/// Longest SPIFFE ID we accept (the spec's "MUST support" length).
const MAX_LEN: usize = 2048;
const MAX_TRUST_DOMAIN_LEN: usize = 255;

/// A syntactically valid SPIFFE ID.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SpiffeId {
    trust_domain: String,
    path: String,
}

/// Why a string is not a SPIFFE ID.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SpiffeIdError {
    /// Not of the form `spiffe://…`.
    #[error("SPIFFE ID must start with spiffe://")]
    Scheme,
    /// Longer than 2048 bytes.
    #[error("SPIFFE ID is longer than {MAX_LEN} bytes")]
    TooLong,
    /// Empty, too long or badly spelled trust domain.
    #[error("invalid SPIFFE trust domain {0:?}")]
    TrustDomain(String),
    /// A path segment that is empty, `.`, `..`, or has forbidden characters.
    #[error("invalid SPIFFE ID path {0:?}")]
    Path(String),
}

impl SpiffeId {
    /// Parses and validates `s`.
    pub fn parse(s: &str) -> Result<Self, SpiffeIdError> {
        if s.len() > MAX_LEN {
            return Err(SpiffeIdError::TooLong);
        }
        let rest = strip_prefix_ignore_case(s, "spiffe://").ok_or(SpiffeIdError::Scheme)?;
        let (td, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        let valid_td = !td.is_empty()
            && td.len() <= MAX_TRUST_DOMAIN_LEN
            && td
                .bytes()
                .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'.' | b'-' | b'_'));
        if !valid_td {
            return Err(SpiffeIdError::TrustDomain(td.to_owned()));
        }
        if !path.is_empty() {
            let segments = path[1..].split('/');
            for segment in segments {
                let ok = !segment.is_empty()
                    && segment != "."
                    && segment != ".."
                    && segment
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'));
                if !ok {
                    return Err(SpiffeIdError::Path(path.to_owned()));
                }
            }
        }
        Ok(Self {
            trust_domain: td.to_owned(),
            path: path.to_owned(),
        })
    }

    /// The Kubernetes convention `spiffe://<td>/ns/<namespace>/sa/<service-account>`.
    pub fn for_service_account(
        trust_domain: &str,
        namespace: &str,
        service_account: &str,
    ) -> Result<Self, SpiffeIdError> {
        Self::parse(&format!(
            "spiffe://{trust_domain}/ns/{namespace}/sa/{service_account}"
        ))
    }

    /// The trust domain (lower case).
    pub fn trust_domain(&self) -> &str {
        &self.trust_domain
    }

    /// The path, starting with `/`, or empty for the trust domain's own ID.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// True for `spiffe://td` with no path (allowed only for signing certificates).
    pub fn is_root(&self) -> bool {
        self.path.is_empty()
    }
}

impl fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "spiffe://{}{}", self.trust_domain, self.path)
    }
}

fn strip_prefix_ignore_case<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &s[prefix.len()..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_kubernetes_ids() {
        let id = SpiffeId::parse("spiffe://cluster.local/ns/default/sa/web").expect("valid");
        assert_eq!(id.trust_domain(), "cluster.local");
        assert_eq!(id.path(), "/ns/default/sa/web");
        assert_eq!(id.to_string(), "spiffe://cluster.local/ns/default/sa/web");
        assert!(!id.is_root());
        assert!(SpiffeId::parse("spiffe://td").expect("root id").is_root());
        assert_eq!(
            SpiffeId::for_service_account("td", "ns1", "sa-1").map(|i| i.to_string()),
            Ok("spiffe://td/ns/ns1/sa/sa-1".to_owned())
        );
    }

    #[test]
    fn rejects_what_the_spec_forbids() {
        for bad in [
            "https://cluster.local/ns/a",
            "spiffe://",
            "spiffe://Cluster.local/x",
            "spiffe://td:8080/x",
            "spiffe://user@td/x",
            "spiffe://td/a//b",
            "spiffe://td/a/./b",
            "spiffe://td/a/../b",
            "spiffe://td/a/",
            "spiffe://td/a%20b",
            "spiffe://td/a?q=1",
            "spiffe://td/a#frag",
        ] {
            assert!(SpiffeId::parse(bad).is_err(), "{bad} should be rejected");
        }
        let long = format!("spiffe://td/{}", "a".repeat(MAX_LEN));
        assert_eq!(SpiffeId::parse(&long), Err(SpiffeIdError::TooLong));
    }
}
