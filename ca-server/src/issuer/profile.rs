//! Issuance profiles: which extensions a certificate carries, decided here and never copied from
//! the CSR.
//!
//! | profile | KeyUsage (critical) | EKU | basicConstraints | names |
//! |---|---|---|---|---|
//! | `tls-server` | digitalSignature (+keyEncipherment for RSA) | serverAuth | cA=false | ≥1 DNS/IP SAN |
//! | `tls-client` | digitalSignature (+keyEncipherment for RSA) | clientAuth | cA=false | CN or a SAN |
//! | `tls-server-client` | as above | serverAuth, clientAuth | cA=false | ≥1 DNS/IP SAN |
//! | `spiffe` | digitalSignature (+keyEncipherment for RSA) | serverAuth, clientAuth | cA=false | exactly one URI SAN, a SPIFFE ID with a path |
//! | `ca` | keyCertSign, cRLSign, digitalSignature | — | cA=true, pathLen 0 | CN; optional `spiffe://td` URI; optional name constraints |

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// An issuance profile.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Profile {
    /// TLS server certificate.
    TlsServer,
    /// TLS client certificate.
    TlsClient,
    /// Both server and client authentication (e.g. etcd peers).
    TlsServerClient,
    /// SPIFFE X509-SVID for workloads and mesh proxies.
    Spiffe,
    /// Subordinate CA (Linkerd issuer, Istio `cacerts`, SPIRE upstream).
    Ca,
}

impl Profile {
    /// Every profile, in display order.
    pub const ALL: [Profile; 5] = [
        Profile::TlsServer,
        Profile::TlsClient,
        Profile::TlsServerClient,
        Profile::Spiffe,
        Profile::Ca,
    ];

    /// The profile's name as used in configuration, APIs and the ledger.
    pub fn name(self) -> &'static str {
        match self {
            Profile::TlsServer => "tls-server",
            Profile::TlsClient => "tls-client",
            Profile::TlsServerClient => "tls-server-client",
            Profile::Spiffe => "spiffe",
            Profile::Ca => "ca",
        }
    }

    pub(crate) fn server_auth(self) -> bool {
        matches!(
            self,
            Profile::TlsServer | Profile::TlsServerClient | Profile::Spiffe
        )
    }

    pub(crate) fn client_auth(self) -> bool {
        matches!(
            self,
            Profile::TlsClient | Profile::TlsServerClient | Profile::Spiffe
        )
    }
}

impl fmt::Display for Profile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// An unknown profile name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown profile {0:?} (known: tls-server, tls-client, tls-server-client, spiffe, ca)")]
pub struct UnknownProfile(pub String);

impl FromStr for Profile {
    type Err = UnknownProfile;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Profile::ALL
            .into_iter()
            .find(|p| p.name() == s)
            .ok_or_else(|| UnknownProfile(s.to_owned()))
    }
}
