//! Kubernetes auth: a workload proves who it is with its service-account JWT, verified locally
//! against the cluster's signing keys (`pem_keys`, or the API server's JWKS) or, without local
//! keys, by the API server itself (TokenReview, [`super::token_review`]). The role then binds
//! service-account names and namespaces to policies. The verified namespace and name become the
//! token's metadata, from which the PKI's `spiffe_from_identity` roles derive the caller's SPIFFE
//! ID — nothing the caller sends can change it.
//!
//! `token_reviewer_jwt` is stored sealed ([`crate::seal`]) and never returned.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use time::OffsetDateTime;

use super::token::TokenSpec;
use super::{Auth, Error};
use crate::jose::{AccountKey, Jwk, b64url_decode};
use crate::policy::glob_matches;

/// Object kind of roles.
pub const ROLE_KIND: &str = "kubernetes_role";
const CONFIG_KIND: &str = "kubernetes_config";

/// A kubernetes auth role.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct KubernetesRole {
    /// Service-account names (or `*`, or globs).
    pub bound_service_account_names: Vec<String>,
    /// Namespaces (or `*`, or globs).
    pub bound_service_account_namespaces: Vec<String>,
    /// The audience tokens must carry (empty: any).
    pub audience: String,
    /// Policies of the tokens it makes.
    pub token_policies: Vec<String>,
    /// TTL of the tokens it makes, seconds (0: the default).
    pub token_ttl: u64,
    /// Longest any of its tokens may live, renewals included, seconds (0: 768h).
    #[serde(default)]
    pub token_max_ttl: u64,
}

impl super::AuthRole for KubernetesRole {
    const KIND: &'static str = ROLE_KIND;

    /// Both bindings are required, and no role may hand out root.
    fn validate(&self) -> Result<(), Error> {
        if self.bound_service_account_names.is_empty()
            || self.bound_service_account_namespaces.is_empty()
        {
            return Err(Error::Invalid(
                "bound_service_account_names and bound_service_account_namespaces are required"
                    .into(),
            ));
        }
        refuse_root_policy(&self.token_policies)
    }
}

/// Auth roles cannot grant root: the login would be refused anyway, so say so when it is written.
pub(crate) fn refuse_root_policy(policies: &[String]) -> Result<(), Error> {
    if policies
        .iter()
        .any(|p| p.trim().eq_ignore_ascii_case("root"))
    {
        return Err(Error::Invalid(
            "auth methods cannot create root tokens: remove \"root\" from token_policies".into(),
        ));
    }
    Ok(())
}

/// How tokens are verified.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct KubernetesConfig {
    /// The API server (`https://…`), for TokenReview.
    pub kubernetes_host: String,
    /// PEM public keys or certificates of the service-account signer.
    pub pem_keys: Vec<String>,
    /// A JWK Set (the API server's `/openid/v1/jwks`), as JSON text.
    pub jwks: String,
    /// The `iss` tokens must carry (empty: any).
    pub issuer: String,
    /// Without `pem_keys` or `jwks`: the API server's CA for TokenReview (PEM).
    pub kubernetes_ca_cert: String,
    /// Without `pem_keys` or `jwks`: the credential TokenReview calls use. Sealed at rest, never
    /// returned.
    pub token_reviewer_jwt: String,
}

impl KubernetesConfig {
    /// Local keys, or an https API server for TokenReview; keys that parse.
    pub fn validate(&self) -> Result<(), Error> {
        if self.pem_keys.is_empty()
            && self.jwks.is_empty()
            && !self.kubernetes_host.starts_with("https://")
        {
            return Err(Error::Invalid(
                "pem_keys or jwks (local verification), or an https:// kubernetes_host \
                 (TokenReview), is required"
                    .into(),
            ));
        }
        self.keys().map(|_| ())
    }

    /// The configuration as `auth/kubernetes/config` reads it: without the reviewer JWT.
    pub fn public_view(&self) -> Value {
        let mut v = serde_json::to_value(self).unwrap_or_default();
        if let Some(m) = v.as_object_mut() {
            m.remove("token_reviewer_jwt");
        }
        v
    }

    fn keys(&self) -> Result<Vec<(Option<String>, AccountKey)>, Error> {
        let bad = |m: String| Error::Invalid(m);
        let mut keys = Vec::new();
        for pem in &self.pem_keys {
            let der = pem_body(pem)
                .ok_or_else(|| bad("pem_keys: not a PEM public key or certificate".into()))?;
            // Vault accepts public keys and certificates (hvac insists on certificates).
            let spki_der = if pem.contains("BEGIN CERTIFICATE") {
                use x509_cert::der::{Decode, Encode};
                x509_cert::Certificate::from_der(&der)
                    .and_then(|c| c.tbs_certificate().subject_public_key_info().to_der())
                    .map_err(|_| bad("pem_keys: invalid certificate".into()))?
            } else {
                der
            };
            let spki = crate::issuer::SubjectPublicKey::from_spki_der(&spki_der)
                .map_err(|e| bad(format!("pem_keys: {e}")))?;
            let jwk = Jwk::from_spki(&spki)
                .ok_or_else(|| bad("pem_keys: RSA or ECDSA keys only".into()))?;
            keys.push((None, jwk.key().map_err(|e| bad(format!("pem_keys: {e}")))?));
        }
        if !self.jwks.is_empty() {
            let set: Value =
                serde_json::from_str(&self.jwks).map_err(|e| bad(format!("jwks: {e}")))?;
            for k in set["keys"].as_array().into_iter().flatten() {
                let kid = k["kid"].as_str().map(str::to_owned);
                let Ok(jwk) = serde_json::from_value::<Jwk>(k.clone()) else {
                    continue;
                };
                if let Ok(key) = jwk.key() {
                    keys.push((kid, key));
                }
            }
        }
        Ok(keys)
    }
}

fn pem_body(pem: &str) -> Option<Vec<u8>> {
    use base64::Engine as _;
    let start = pem.find("-----BEGIN")?;
    let body_start = pem[start..].find('\n')? + start + 1;
    let end = pem[body_start..].find("-----END")? + body_start;
    let b64: String = pem[body_start..end].split_whitespace().collect();
    base64::engine::general_purpose::STANDARD.decode(b64).ok()
}

/// Verifies a service-account JWT against the configured keys and returns its claims.
fn verify_jwt(jwt: &str, keys: &[(Option<String>, AccountKey)]) -> Option<Value> {
    let mut parts = jwt.split('.');
    let (h, p, s) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    let header: Value = serde_json::from_slice(&b64url_decode(h)?).ok()?;
    let alg = header["alg"].as_str()?;
    let kid = header["kid"].as_str();
    let sig = b64url_decode(s)?;
    let message = format!("{h}.{p}");
    let verified = keys
        .iter()
        .filter(|(k, _)| kid.is_none() || k.is_none() || k.as_deref() == kid)
        .any(|(_, key)| key.verify(alg, message.as_bytes(), &sig).is_ok());
    if !verified {
        return None;
    }
    serde_json::from_slice(&b64url_decode(p)?).ok()
}

/// A service account whose token verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceAccount {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// UID, when the token says.
    pub uid: Option<String>,
}

/// Checks a verified token's claims: expiry, not-before, issuer, audience, and the
/// service-account claims (both token formats), with `sub` agreeing.
#[allow(clippy::cast_precision_loss)] // Unix seconds fit an f64 exactly until the year 285 million.
fn service_account(
    claims: &Value,
    config: &KubernetesConfig,
    role: &KubernetesRole,
) -> Result<ServiceAccount, &'static str> {
    let t = OffsetDateTime::now_utc().unix_timestamp() as f64;
    // RFC 7519 NumericDate: a number, possibly fractional. Anything else is refused rather than
    // read as "no expiry". Tokens without `exp` are the legacy, secret-based kind.
    let date = |claim: &str| match &claims[claim] {
        Value::Null => Ok(None),
        Value::Number(n) => n.as_f64().map(Some).ok_or("malformed date claim"),
        _ => Err("malformed date claim"),
    };
    if date("exp")?.is_some_and(|e| e <= t) {
        return Err("expired");
    }
    if date("nbf")?.is_some_and(|n| n > t + 60.0) {
        return Err("not yet valid");
    }
    if !config.issuer.is_empty() && claims["iss"].as_str() != Some(config.issuer.as_str()) {
        return Err("issuer");
    }
    if !role.audience.is_empty() {
        let aud_ok = match &claims["aud"] {
            Value::String(a) => *a == role.audience,
            Value::Array(a) => a.iter().any(|x| x.as_str() == Some(role.audience.as_str())),
            _ => false,
        };
        if !aud_ok {
            return Err("audience");
        }
    }
    let k8s = &claims["kubernetes.io"];
    let (namespace, name, uid) = if k8s.is_object() {
        (
            k8s["namespace"].as_str(),
            k8s["serviceaccount"]["name"].as_str(),
            k8s["serviceaccount"]["uid"].as_str(),
        )
    } else {
        (
            claims["kubernetes.io/serviceaccount/namespace"].as_str(),
            claims["kubernetes.io/serviceaccount/service-account.name"].as_str(),
            claims["kubernetes.io/serviceaccount/service-account.uid"].as_str(),
        )
    };
    let (Some(namespace), Some(name)) = (namespace, name) else {
        return Err("no service account claims");
    };
    if claims["sub"]
        .as_str()
        .is_some_and(|s| s != format!("system:serviceaccount:{namespace}:{name}"))
    {
        return Err("subject does not match the service account");
    }
    Ok(ServiceAccount {
        namespace: namespace.to_owned(),
        name: name.to_owned(),
        uid: uid.map(str::to_owned),
    })
}

impl Auth {
    /// Stores the mount's configuration, the reviewer JWT sealed.
    pub async fn put_kubernetes_config(
        &self,
        mount: &str,
        mut config: KubernetesConfig,
    ) -> Result<(), Error> {
        config.validate()?;
        if !config.token_reviewer_jwt.is_empty() {
            config.token_reviewer_jwt = self
                .seal
                .seal_text(&reviewer_purpose(mount), &config.token_reviewer_jwt);
        }
        self.put_json(CONFIG_KIND, mount, "config", &config).await
    }

    /// The mount's configuration, the reviewer JWT opened.
    pub async fn kubernetes_config(&self, mount: &str) -> Result<Option<KubernetesConfig>, Error> {
        let Some(mut config) = self
            .json::<KubernetesConfig>(CONFIG_KIND, mount, "config")
            .await?
        else {
            return Ok(None);
        };
        config.token_reviewer_jwt = self
            .seal
            .open_text(&reviewer_purpose(mount), &config.token_reviewer_jwt)
            .map_err(|e| Error::Internal(e.to_string()))?;
        Ok(Some(config))
    }

    /// Verifies `jwt` for `role_name` on `mount` and returns the token the workload gets.
    pub async fn kubernetes_login(
        &self,
        mount: &str,
        role_name: &str,
        jwt: &str,
    ) -> Result<TokenSpec, Error> {
        let role: KubernetesRole =
            self.json(ROLE_KIND, mount, role_name)
                .await?
                .ok_or_else(|| {
                    Error::Invalid(format!(
                        "invalid role name \"{}\"",
                        crate::policy::shorten(role_name)
                    ))
                })?;
        let config = self
            .kubernetes_config(mount)
            .await?
            .ok_or_else(|| Error::Invalid("kubernetes auth is not configured".into()))?;
        let denied = |why: &str| {
            tracing::info!(mount, role = %role_name, reason = why, "kubernetes login refused");
            Error::Denied
        };
        let jwt = jwt.trim();
        let account = if config.pem_keys.is_empty() && config.jwks.is_empty() {
            // No local keys: ask the API server.
            let reviewed = super::token_review::review(
                &config.kubernetes_host,
                &config.kubernetes_ca_cert,
                &config.token_reviewer_jwt,
                jwt,
                &role.audience,
            )
            .await?
            .ok_or_else(|| denied("TokenReview: not authenticated"))?;
            ServiceAccount {
                namespace: reviewed.namespace,
                name: reviewed.name,
                uid: Some(reviewed.uid),
            }
        } else {
            let keys = config.keys()?;
            let claims = verify_jwt(jwt, &keys).ok_or_else(|| denied("signature"))?;
            service_account(&claims, &config, &role).map_err(denied)?
        };
        let bound = |patterns: &[String], value: &str| {
            patterns.iter().any(|p| p == "*" || glob_matches(p, value))
        };
        if !bound(&role.bound_service_account_names, &account.name)
            || !bound(&role.bound_service_account_namespaces, &account.namespace)
        {
            return Err(denied("service account not bound to the role"));
        }
        let mut meta = Map::new();
        meta.insert("auth_method".into(), json!("kubernetes"));
        meta.insert("mount".into(), json!(mount));
        meta.insert("role".into(), json!(role_name));
        meta.insert("service_account_name".into(), json!(account.name));
        meta.insert("service_account_namespace".into(), json!(account.namespace));
        meta.insert(
            "service_account_uid".into(),
            json!(account.uid.unwrap_or_default()),
        );
        Ok(TokenSpec {
            policies: role.token_policies,
            display_name: format!("{mount}-{}-{}", account.namespace, account.name),
            meta,
            ttl: (role.token_ttl > 0).then(|| std::time::Duration::from_secs(role.token_ttl)),
            no_default_policy: false,
            explicit_max_ttl: (role.token_max_ttl > 0)
                .then(|| std::time::Duration::from_secs(role.token_max_ttl)),
            renewable: true,
        })
    }
}

fn reviewer_purpose(mount: &str) -> String {
    format!("kubernetes-token-reviewer:{mount}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(extra: Value) -> Value {
        let mut c = json!({
            "sub": "system:serviceaccount:payments:api",
            "kubernetes.io": {"namespace": "payments", "serviceaccount": {"name": "api", "uid": "u"}},
        });
        for (k, v) in extra.as_object().cloned().unwrap_or_default() {
            c[k] = v;
        }
        c
    }

    #[test]
    fn date_claims_must_be_numbers_in_range() {
        let (config, role) = (KubernetesConfig::default(), KubernetesRole::default());
        let now = OffsetDateTime::now_utc().unix_timestamp();
        let ok = service_account(&claims(json!({"exp": now + 60})), &config, &role).expect("valid");
        assert_eq!(
            (ok.namespace.as_str(), ok.name.as_str()),
            ("payments", "api")
        );
        assert!(
            service_account(&claims(json!({"exp": now as f64 + 60.5})), &config, &role).is_ok()
        );
        assert!(
            service_account(&claims(json!({})), &config, &role).is_ok(),
            "legacy tokens"
        );
        for bad in [
            json!({"exp": now - 1}),
            json!({"exp": (now - 1) as f64 + 0.5}),
            json!({"exp": "2000000000"}),
            json!({"exp": "1"}),
            json!({"exp": true}),
            json!({"exp": now + 60, "nbf": now + 3600}),
            json!({"exp": now + 60, "nbf": "0"}),
        ] {
            assert!(
                service_account(&claims(bad.clone()), &config, &role).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn the_configured_issuer_is_required() {
        let config = KubernetesConfig {
            issuer: "https://k".into(),
            ..KubernetesConfig::default()
        };
        let role = KubernetesRole::default();
        assert!(service_account(&claims(json!({"iss": "https://k"})), &config, &role).is_ok());
        for iss in [
            json!("https://evil"),
            json!("https://k/"),
            json!(null),
            json!(7),
        ] {
            assert_eq!(
                service_account(&claims(json!({"iss": iss})), &config, &role),
                Err("issuer"),
                "{iss}"
            );
        }
    }

    #[test]
    fn the_roles_audience_is_required_in_either_claim_form() {
        let config = KubernetesConfig::default();
        let role = KubernetesRole {
            audience: "a".into(),
            ..KubernetesRole::default()
        };
        for aud in [json!("a"), json!(["a"]), json!(["b", "a"])] {
            assert!(
                service_account(&claims(json!({"aud": aud})), &config, &role).is_ok(),
                "{aud}"
            );
        }
        for aud in [
            json!("b"),
            json!(["b"]),
            json!([]),
            json!(7),
            json!(null),
            json!("ab"),
        ] {
            assert_eq!(
                service_account(&claims(json!({"aud": aud})), &config, &role),
                Err("audience"),
                "{aud}"
            );
        }
    }

    #[test]
    fn the_subject_must_name_the_same_service_account() {
        let (config, role) = (KubernetesConfig::default(), KubernetesRole::default());
        for sub in [
            "system:serviceaccount:x:y",
            "system:serviceaccount:payments:web",
            "system:serviceaccount:kube-system:api",
        ] {
            assert_eq!(
                service_account(&claims(json!({"sub": sub})), &config, &role),
                Err("subject does not match the service account"),
                "{sub}"
            );
        }
    }

    #[test]
    fn legacy_flat_claims_are_read() {
        let (config, role) = (KubernetesConfig::default(), KubernetesRole::default());
        let legacy = json!({
            "sub": "system:serviceaccount:ops:deployer",
            "kubernetes.io/serviceaccount/namespace": "ops",
            "kubernetes.io/serviceaccount/service-account.name": "deployer",
            "kubernetes.io/serviceaccount/service-account.uid": "u-9",
        });
        assert_eq!(
            service_account(&legacy, &config, &role),
            Ok(ServiceAccount {
                namespace: "ops".into(),
                name: "deployer".into(),
                uid: Some("u-9".into()),
            })
        );
        let mut no_name = legacy.clone();
        no_name["kubernetes.io/serviceaccount/service-account.name"] = Value::Null;
        assert_eq!(
            service_account(&no_name, &config, &role),
            Err("no service account claims")
        );
    }
}
