//! Cert auth: a client certificate presented in the TLS handshake (the handshake proves the key),
//! trusted when a role pins it or names its issuing CA, within its validity, usable for client
//! authentication (its extended key usage, when present, includes clientAuth), not revoked in this
//! CA's ledger, with an allowed common name. Certificates of other CAs are checked for revocation
//! only by their expiry (no CRL fetching).

use serde::{Deserialize, Serialize};
use serde_json::{Map, json};

use super::token::TokenSpec;
use super::{Auth, Error};
use crate::policy::glob_matches;

/// Object kind of roles.
pub const ROLE_KIND: &str = "cert_role";

/// A cert auth role.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct CertRole {
    /// PEM: the trusted CA certificates, or the pinned client certificate.
    pub certificate: String,
    /// Common-name globs (empty: any).
    pub allowed_common_names: Vec<String>,
    /// Policies of the tokens it makes.
    pub token_policies: Vec<String>,
    /// TTL of its tokens, seconds (0: the default).
    pub token_ttl: u64,
    /// Longest any of its tokens may live, renewals included, seconds (0: 768h).
    #[serde(default)]
    pub token_max_ttl: u64,
}

impl super::AuthRole for CertRole {
    const KIND: &'static str = ROLE_KIND;

    /// A PEM certificate is required, and no role may hand out root.
    fn validate(&self) -> Result<(), Error> {
        let trusted = crate::issuer::hierarchy::parse_certs(&self.certificate).unwrap_or_default();
        if trusted.is_empty() {
            return Err(Error::Invalid(
                "certificate: a PEM CA certificate is required".into(),
            ));
        }
        super::kubernetes::refuse_root_policy(&self.token_policies)
    }
}

impl CertRole {
    /// Whether `leaf` is trusted: pinned, or signed by one of the role's certificates, within
    /// its validity, with an allowed common name. Returns the common name.
    fn matches(&self, leaf_der: &[u8]) -> Option<String> {
        use x509_parser::prelude::{FromDer, X509Certificate};
        let (_, leaf) = X509Certificate::from_der(leaf_der).ok()?;
        if !leaf.validity().is_valid() {
            return None;
        }
        if let Ok(Some(eku)) = leaf.extended_key_usage()
            && !(eku.value.client_auth || eku.value.any)
        {
            return None;
        }
        let trusted = crate::issuer::hierarchy::parse_certs(&self.certificate).ok()?;
        let chained = trusted.iter().any(|t| {
            t.as_ref() == leaf_der
                || X509Certificate::from_der(t).ok().is_some_and(|(_, ca)| {
                    leaf.issuer() == ca.subject()
                        && leaf.verify_signature(Some(ca.public_key())).is_ok()
                })
        });
        if !chained {
            return None;
        }
        let cn = leaf
            .subject()
            .iter_common_name()
            .next()
            .and_then(|c| c.as_str().ok())
            .unwrap_or_default()
            .to_owned();
        let cn_ok = self.allowed_common_names.is_empty()
            || self
                .allowed_common_names
                .iter()
                .any(|p| glob_matches(p, &cn));
        cn_ok.then_some(cn)
    }
}

impl Auth {
    /// Logs in with the certificate the client presented: the named role, or the first role
    /// (by name) that trusts it.
    pub async fn cert_login(
        &self,
        mount: &str,
        role_name: Option<&str>,
        leaf_der: &[u8],
    ) -> Result<TokenSpec, Error> {
        let names = match role_name {
            Some(name) => vec![name.to_owned()],
            None => self.store.object_names(ROLE_KIND, mount).await?,
        };
        for name in names {
            let Some(role) = self.json::<CertRole>(ROLE_KIND, mount, &name).await? else {
                continue;
            };
            if let Some(cn) = role.matches(leaf_der) {
                if self.revoked_here(leaf_der).await? {
                    tracing::info!(mount, role = %name, "cert login refused: the certificate is revoked");
                    return Err(Error::Denied);
                }
                let mut meta = Map::new();
                meta.insert("auth_method".into(), json!("cert"));
                meta.insert("mount".into(), json!(mount));
                meta.insert("cert_name".into(), json!(name));
                meta.insert("common_name".into(), json!(cn));
                return Ok(TokenSpec {
                    policies: role.token_policies,
                    display_name: format!("cert-{name}"),
                    meta,
                    ttl: (role.token_ttl > 0)
                        .then(|| std::time::Duration::from_secs(role.token_ttl)),
                    no_default_policy: false,
                    explicit_max_ttl: (role.token_max_ttl > 0)
                        .then(|| std::time::Duration::from_secs(role.token_max_ttl)),
                    renewable: true,
                });
            }
        }
        tracing::info!(
            mount,
            "cert login refused: no role trusts the presented certificate"
        );
        Err(Error::Denied)
    }

    /// Whether this CA issued `leaf_der` and has revoked it.
    async fn revoked_here(&self, leaf_der: &[u8]) -> Result<bool, Error> {
        use x509_parser::prelude::{FromDer, X509Certificate};
        let Ok((_, leaf)) = X509Certificate::from_der(leaf_der) else {
            return Ok(false);
        };
        let serial: Vec<u8> = leaf
            .raw_serial()
            .iter()
            .copied()
            .skip_while(|b| *b == 0)
            .collect();
        Ok(self
            .store
            .certificate_by_serial(&serial)
            .await?
            .is_some_and(|r| r.certificate.der == leaf_der && r.revoked_at.is_some()))
    }
}
