//! ACME rules: which identifiers and profile an account may order, and what a finalize CSR may
//! ask for (RFC 8555 §7.4: exactly the order's identifiers; the key not the account's; URI SANs
//! only where the account's EAB binding allows them).

use std::collections::BTreeSet;
use std::net::IpAddr;

use time::OffsetDateTime;

use super::{Authority, EabBinding, IdentifierPolicy, NameKind, Rejection, invalid, not_allowed};
use crate::issuer::{CertificateRequest, Profile, Subject, VerifiedCsr};
use crate::names::normalize_dns_name;

/// Most identifiers in one order (the certificate's SAN limit applies again at signing).
pub const MAX_IDENTIFIERS: usize = 100;

/// An identifier the account may order, normalised.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderIdentifier {
    /// `dns` or `ip`.
    pub kind: &'static str,
    /// As it appears in the order: lower-case DNS name (with `*.` for wildcards) or canonical IP.
    pub value: String,
    /// What the authorization is for: the name without `*.`.
    pub authorization_value: String,
    /// Whether the order asked for `*.value`.
    pub wildcard: bool,
}

/// Checks requested `(type, value)` identifiers against the server policy and the account's
/// binding. Returns them normalised, sorted and without duplicates, or one rejection per refused
/// identifier (with its index), so the client sees every problem at once.
pub fn order_identifiers(
    server: &IdentifierPolicy,
    binding: &EabBinding,
    requested: &[(&str, &str)],
) -> Result<Vec<OrderIdentifier>, Vec<(usize, Rejection)>> {
    if requested.len() > MAX_IDENTIFIERS {
        return Err(vec![(
            MAX_IDENTIFIERS,
            Rejection::Malformed(format!(
                "an order may name at most {MAX_IDENTIFIERS} identifiers, not {}",
                requested.len()
            )),
        )]);
    }
    let mut out = Vec::with_capacity(requested.len());
    let mut refused = Vec::new();
    for (index, (kind, value)) in requested.iter().enumerate() {
        match order_identifier(server, binding, kind, value) {
            Ok(id) => out.push(id),
            Err(rejection) => refused.push((index, rejection)),
        }
    }
    if !refused.is_empty() {
        return Err(refused);
    }
    out.sort_by(|a, b| (a.kind, &a.value).cmp(&(b.kind, &b.value)));
    out.dedup();
    Ok(out)
}

fn order_identifier(
    server: &IdentifierPolicy,
    binding: &EabBinding,
    kind: &str,
    value: &str,
) -> Result<OrderIdentifier, Rejection> {
    match kind {
        "dns" => {
            let name = normalize_dns_name(value).ok_or_else(|| invalid(NameKind::Dns, value))?;
            if name.starts_with("*.") && !server.allow_wildcards {
                return Err(Rejection::KindNotAllowed {
                    kind: NameKind::Dns,
                    value: name,
                    by: Authority::Server,
                });
            }
            if !server.allows_domain(&name) {
                return Err(not_allowed(NameKind::Dns, &name, Authority::Server));
            }
            if !binding.allows_name(&name) {
                return Err(not_allowed(NameKind::Dns, &name, Authority::Account));
            }
            let (wildcard, base) = match name.strip_prefix("*.") {
                Some(base) => (true, base.to_owned()),
                None => (false, name.clone()),
            };
            Ok(OrderIdentifier {
                kind: "dns",
                value: name,
                authorization_value: base,
                wildcard,
            })
        }
        "ip" => {
            let ip: IpAddr = value.parse().map_err(|_| invalid(NameKind::Ip, value))?;
            if !server.allows_ip(ip) {
                return Err(not_allowed(
                    NameKind::Ip,
                    &ip.to_string(),
                    Authority::Server,
                ));
            }
            Ok(OrderIdentifier {
                kind: "ip",
                value: ip.to_string(),
                authorization_value: ip.to_string(),
                wildcard: false,
            })
        }
        other => Err(Rejection::UnsupportedIdentifier(super::shorten(other))),
    }
}

/// An order with no identifiers is only for URI-only certificates (cert-manager sends
/// `"identifiers": null` for a SPIFFE-only Certificate), which only pre-authorized accounts with
/// URI patterns may have.
pub fn allows_empty_order(binding: &EabBinding) -> Result<(), Rejection> {
    if binding.preauthorized && !binding.uris.is_empty() {
        Ok(())
    } else {
        Err(Rejection::NoNames("an order needs at least one identifier"))
    }
}

/// The profile of a new order: the one asked for (or the default), if offered and allowed.
pub fn order_profile(
    offered: &[Profile],
    default: Profile,
    binding: &EabBinding,
    requested: Option<&str>,
) -> Result<Profile, Rejection> {
    let name = requested.unwrap_or(default.name());
    offered
        .iter()
        .copied()
        .find(|p| p.name() == name && binding.allows_profile(name))
        .ok_or_else(|| {
            Rejection::Profile(format!(
                "profile {:?} is not offered to this account",
                super::shorten(name)
            ))
        })
}

/// What finalize is asked to sign.
#[derive(Debug)]
pub struct Finalize<'a> {
    /// The order's identifiers, `(type, value)` as stored.
    pub ordered: &'a [(String, String)],
    /// The order's profile.
    pub profile: Profile,
    /// The account's binding.
    pub binding: &'a EabBinding,
    /// The CSR, signature verified.
    pub csr: VerifiedCsr,
    /// Whether the CSR's key is the account key (the edge compares JWK thumbprints).
    pub csr_uses_account_key: bool,
    /// The order's notBefore.
    pub not_before: Option<OffsetDateTime>,
    /// The order's notAfter.
    pub not_after: Option<OffsetDateTime>,
}

/// The certificate a finalize may have: the CSR must name exactly the ordered identifiers (its
/// common name, if any, among them), must not reuse the account key, may carry URI SANs only as
/// the binding allows, and nothing else.
pub fn finalize(input: Finalize<'_>) -> Result<CertificateRequest, Rejection> {
    let Finalize {
        ordered,
        profile,
        binding,
        csr,
        csr_uses_account_key,
        not_before,
        not_after,
    } = input;
    if csr_uses_account_key {
        return Err(Rejection::AccountKey);
    }
    if let Some(other) = csr.unsupported_sans.first() {
        return Err(Rejection::KindNotAllowed {
            kind: NameKind::Other,
            value: super::shorten(other),
            by: Authority::Server,
        });
    }
    if let Some(email) = csr.emails.first() {
        return Err(Rejection::KindNotAllowed {
            kind: NameKind::Email,
            value: super::shorten(email),
            by: Authority::Server,
        });
    }
    let ordered: BTreeSet<String> = ordered
        .iter()
        .map(|(_, value)| value.to_ascii_lowercase())
        .collect();
    let mut requested = BTreeSet::new();
    for name in &csr.dns_names {
        requested.insert(normalize_dns_name(name).ok_or_else(|| invalid(NameKind::Dns, name))?);
    }
    for ip in &csr.ip_addresses {
        requested.insert(ip.to_string());
    }
    if let Some(cn) = &csr.common_name {
        let normalized = cn
            .parse::<IpAddr>()
            .map(|ip| ip.to_string())
            .ok()
            .or_else(|| normalize_dns_name(cn));
        match normalized {
            Some(n) if ordered.contains(&n) => {
                requested.insert(n);
            }
            _ => {
                return Err(Rejection::NamesDiffer {
                    extra: vec![super::shorten(cn)],
                    missing: vec![],
                });
            }
        }
    }
    if requested != ordered {
        let shorten_all =
            |set: std::collections::btree_set::Difference<'_, String>| -> Vec<String> {
                set.take(10).map(|s| super::shorten(s)).collect()
            };
        return Err(Rejection::NamesDiffer {
            extra: shorten_all(requested.difference(&ordered)),
            missing: shorten_all(ordered.difference(&requested)),
        });
    }
    for uri in &csr.uris {
        if binding.uris.is_empty() {
            return Err(Rejection::KindNotAllowed {
                kind: NameKind::Uri,
                value: super::shorten(uri),
                by: Authority::Account,
            });
        }
        if !binding.allows_uri(uri) {
            return Err(not_allowed(NameKind::Uri, uri, Authority::Account));
        }
    }
    let mut req = CertificateRequest::new(csr.public_key, profile);
    if profile != Profile::Spiffe {
        req.subject = Subject {
            common_name: csr.common_name,
            ..Subject::default()
        };
    }
    req.dns_names = csr.dns_names;
    req.ip_addresses = csr.ip_addresses;
    req.uris = csr.uris;
    req.not_before = not_before;
    req.not_after = not_after;
    Ok(req)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server() -> IdentifierPolicy {
        IdentifierPolicy {
            allowed_domains: vec![".example.test".into()],
            allowed_ip_ranges: vec!["127.0.0.0/8".into()],
            allow_wildcards: true,
        }
    }

    #[test]
    fn identifiers_are_normalised_and_every_refusal_reported() {
        let binding = EabBinding {
            names: vec![".team-a.example.test".into()],
            ..EabBinding::default()
        };
        let ok = order_identifiers(
            &server(),
            &binding,
            &[
                ("dns", "Web.Team-A.Example.Test."),
                ("dns", "*.x.team-a.example.test"),
                ("ip", "127.0.0.1"),
                ("dns", "web.team-a.example.test"),
            ],
        )
        .expect("allowed");
        assert_eq!(ok.len(), 3, "duplicates collapse: {ok:?}");
        assert!(
            ok.iter()
                .any(|i| i.wildcard && i.authorization_value == "x.team-a.example.test")
        );

        let refused = order_identifiers(
            &server(),
            &binding,
            &[
                ("dns", "web.team-b.example.test"),
                ("dns", "evil.test"),
                ("dns", "bad_name.example.test"),
                ("ip", "10.0.0.1"),
                ("email", "a@b"),
                ("dns", "ok.team-a.example.test"),
            ],
        )
        .expect_err("refused");
        let indexes: Vec<usize> = refused.iter().map(|(i, _)| *i).collect();
        assert_eq!(indexes, vec![0, 1, 2, 3, 4]);
        assert!(matches!(
            refused[0].1,
            Rejection::NotAllowed {
                by: Authority::Account,
                ..
            }
        ));
        assert!(matches!(
            refused[1].1,
            Rejection::NotAllowed {
                by: Authority::Server,
                ..
            }
        ));
        assert!(matches!(refused[2].1, Rejection::Invalid { .. }));
        assert!(matches!(refused[4].1, Rejection::UnsupportedIdentifier(_)));
    }

    #[test]
    fn profiles_must_be_offered_and_bound() {
        let offered = [Profile::TlsServer, Profile::Spiffe];
        let open = EabBinding::default();
        assert_eq!(
            order_profile(&offered, Profile::TlsServer, &open, None),
            Ok(Profile::TlsServer)
        );
        assert!(order_profile(&offered, Profile::TlsServer, &open, Some("ca")).is_err());
        let spiffe_only = EabBinding {
            profiles: vec!["spiffe".into()],
            ..EabBinding::default()
        };
        assert!(order_profile(&offered, Profile::TlsServer, &spiffe_only, None).is_err());
        assert_eq!(
            order_profile(&offered, Profile::TlsServer, &spiffe_only, Some("spiffe")),
            Ok(Profile::Spiffe)
        );
    }
}
