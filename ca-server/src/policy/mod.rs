//! The RA (Boulder's "RA" and "PA"): may this caller have these names, this key, this lifetime,
//! this profile? One place decides, for both protocols:
//!
//! - [`acme`]: which identifiers an ACME account may order (server policy and its EAB binding),
//!   and whether a finalize CSR may be signed for an order (names equal to the order, key not the
//!   account key, URI SANs only if the binding allows them);
//! - [`role`]: Vault PKI roles (domains, globs, bare and sub-domains, wildcards, localhost, IPs,
//!   URIs, e-mail addresses, common-name rules, key types and sizes, TTLs) and the SPIFFE identity
//!   a workload logged in with its own service account may have;
//! - [`eab`] and [`identifiers`]: the bindings and pattern matching they share.
//!
//! Every rule is a pure function over typed inputs that returns either the
//! [`crate::issuer::CertificateRequest`] to sign or a [`Rejection`]. Nothing here speaks HTTP,
//! reads the database or holds a key: each protocol edge maps a `Rejection` to its own error form
//! in one place (`acme::problem`, `vault::errors`). The issuer then checks what the certificate
//! says ([`crate::issuer::lint`]) whatever policy decided.

pub mod acme;
pub mod eab;
pub mod identifiers;
pub mod role;

use std::fmt;

pub use eab::EabBinding;
pub use identifiers::{IdentifierPolicy, domain_matches, glob_matches, ip_in_range};

/// The kind of a name a request asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameKind {
    /// Subject common name.
    CommonName,
    /// DNS SAN or `dns` identifier.
    Dns,
    /// IP SAN or `ip` identifier.
    Ip,
    /// URI SAN (SPIFFE IDs among them).
    Uri,
    /// E-mail SAN (or a common name containing `@`).
    Email,
    /// otherName and the other SAN types this CA never issues.
    Other,
}

impl fmt::Display for NameKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            NameKind::CommonName => "common name",
            NameKind::Dns => "DNS name",
            NameKind::Ip => "IP address",
            NameKind::Uri => "URI",
            NameKind::Email => "e-mail address",
            NameKind::Other => "subject alternative name",
        })
    }
}

/// Whose rule refused a name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Authority {
    /// The server-wide ACME identifier policy.
    Server,
    /// The account's External Account Binding.
    Account,
    /// The Vault PKI role.
    Role,
}

impl fmt::Display for Authority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Authority::Server => "this CA's policy",
            Authority::Account => "this account's binding",
            Authority::Role => "this role",
        })
    }
}

/// Why policy refused a request. Messages are shown to clients; values are shortened so an
/// oversized request is not echoed back whole.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Rejection {
    /// A name of invalid syntax.
    #[error("{value:?} is not a valid {kind}")]
    Invalid {
        /// What it was meant to be.
        kind: NameKind,
        /// The value, shortened.
        value: String,
    },
    /// A valid name the rules do not grant.
    #[error("{}", not_allowed_message(*.kind, .value, *.by))]
    NotAllowed {
        /// What it is.
        kind: NameKind,
        /// The value, shortened.
        value: String,
        /// Whose rule refused it.
        by: Authority,
    },
    /// A kind of name the rules never grant here (IP SANs on a role without `allow_ip_sans`,
    /// URI SANs without a pattern, otherName…).
    #[error("{}", kind_not_allowed_message(*.kind, .value, *.by))]
    KindNotAllowed {
        /// What it is.
        kind: NameKind,
        /// The first such value, shortened.
        value: String,
        /// Whose rule refused it.
        by: Authority,
    },
    /// An ACME identifier type we do not issue for.
    #[error("identifier type {0:?} is not supported")]
    UnsupportedIdentifier(String),
    /// Nothing to certify.
    #[error("{0}")]
    NoNames(&'static str),
    /// The role requires a common name and none was given.
    #[error(
        "the common_name field is required, or must be provided in a CSR with \"use_csr_common_name\" set to true, unless \"require_cn\" is set to false"
    )]
    CommonNameRequired,
    /// The key's type is not the role's.
    #[error("role requires keys of type {required}")]
    KeyType {
        /// `rsa`, `ec` or `ed25519`.
        required: String,
    },
    /// The key is smaller than the role's minimum.
    #[error("role requires a minimum of a {min}-bit key, but {bits} was provided")]
    KeyTooSmall {
        /// Required bits.
        min: i64,
        /// Given bits.
        bits: i64,
    },
    /// The CSR reuses the ACME account key.
    #[error("the CSR must not use the account key")]
    AccountKey,
    /// The CSR's names are not the order's.
    #[error(
        "the CSR names must equal the order's identifiers (not ordered: {extra:?}; missing: {missing:?})"
    )]
    NamesDiffer {
        /// Requested but not ordered.
        extra: Vec<String>,
        /// Ordered but not requested.
        missing: Vec<String>,
    },
    /// A workload asked for a SPIFFE ID that is not its own.
    #[error("the requested SPIFFE ID {requested} is not the caller's own ({expected})")]
    NotOwnIdentity {
        /// What was asked for, shortened.
        requested: String,
        /// The caller's own ID.
        expected: String,
    },
    /// The role issues identities, and the caller did not log in as a workload.
    #[error("only a workload logged in with its own service-account token has an identity")]
    NoWorkloadIdentity,
    /// A profile the caller may not use, or a request the profile cannot express.
    #[error("{0}")]
    Profile(String),
    /// A request field of the wrong form.
    #[error("{0}")]
    Malformed(String),
}

impl Rejection {
    /// True for refusals about *who* is asking (a request for someone else's identity), which
    /// Vault answers with 403 rather than 400.
    pub fn is_identity(&self) -> bool {
        matches!(
            self,
            Rejection::NotOwnIdentity { .. } | Rejection::NoWorkloadIdentity
        )
    }
}

/// Vault's own wording for role refusals (clients and operators search logs for it).
fn not_allowed_message(kind: NameKind, value: &str, by: Authority) -> String {
    match (by, kind) {
        (Authority::Role, NameKind::CommonName) => {
            format!("common name {value} not allowed by this role")
        }
        (Authority::Role, NameKind::Dns | NameKind::Email) => {
            format!("subject alternate name {value} not allowed by this role")
        }
        (Authority::Role, NameKind::Uri) => {
            format!("URI Subject Alternative Name {value} not allowed by this role")
        }
        _ => format!("{kind} {value} is not allowed by {by}"),
    }
}

fn kind_not_allowed_message(kind: NameKind, value: &str, by: Authority) -> String {
    match (by, kind) {
        (Authority::Role, NameKind::Ip) => format!(
            "IP Subject Alternative Names are not allowed in this role, but was provided {value}"
        ),
        (Authority::Role, NameKind::Uri) => format!(
            "URI Subject Alternative Names are not allowed in this role, but were provided {value}"
        ),
        (Authority::Role, NameKind::Other) => {
            format!("requested other SANs are not supported by this CA: {value}")
        }
        _ => format!("{kind}s are not allowed by {by}, but {value} was requested"),
    }
}

/// A value for a message: at most 80 characters, control characters replaced.
pub(crate) fn shorten(s: &str) -> String {
    let mut out: String = s
        .chars()
        .take(80)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect();
    if s.chars().count() > 80 {
        out.push('…');
    }
    out
}

pub(crate) fn invalid(kind: NameKind, value: &str) -> Rejection {
    Rejection::Invalid {
        kind,
        value: shorten(value),
    }
}

pub(crate) fn not_allowed(kind: NameKind, value: &str, by: Authority) -> Rejection {
    Rejection::NotAllowed {
        kind,
        value: shorten(value),
        by,
    }
}
