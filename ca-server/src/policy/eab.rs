//! External Account Binding policies: which names and SPIFFE URIs the account bound to an EAB key
//! may obtain, with which profiles, and whether its authorizations are pre-authorized.

use serde::{Deserialize, Serialize};

use super::identifiers::{domain_matches, glob_matches};

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
