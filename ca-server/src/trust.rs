//! Trust distribution: the roots clients should trust now, in the forms consumers read — a PEM
//! bundle (`/ca/bundle.pem`, `ca-server bundle`, trust-manager sources), a SPIFFE bundle (a JWK
//! set with `x509-svid` keys, for SPIRE federation and Istio's `spiffe_bundle_url`), and the
//! Kubernetes objects the server publishes itself when configured ([`publish_forever`]): a
//! ConfigMap and a `ClusterTrustBundle`, written by server-side apply whenever the roots change.
//! Every replica publishes the same content, so no leader is needed.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use rustls::pki_types::CertificateDer;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::issuer::SubjectPublicKey;
use crate::issuer::set::Issuers;
use crate::jose::Jwk;
use crate::kube::{ApiServer, KubeError};

/// Seconds a SPIFFE bundle consumer should wait before fetching again (the issuers are re-read
/// every few seconds; a new root is published long before it signs anything).
pub const SPIFFE_REFRESH_HINT: u64 = 300;

/// The SPIFFE bundle of `roots` (SPIFFE Trust Domain and Bundle §4): one JWK per root with
/// `use: x509-svid` and the certificate in `x5c`. RSA and EC roots are listed; others (Ed25519)
/// have no JWK form here and are left out.
pub fn spiffe_bundle(roots: &[CertificateDer<'static>], sequence: u64) -> Value {
    let keys: Vec<Value> = roots
        .iter()
        .filter_map(|der| {
            let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
            let spki = SubjectPublicKey::from_spki_der(cert.public_key().raw).ok()?;
            let jwk = Jwk::from_spki(&spki)?;
            let mut key = serde_json::to_value(jwk).ok()?;
            let object = key.as_object_mut()?;
            object.retain(|_, v| !v.is_null());
            object.insert("use".into(), json!("x509-svid"));
            object.insert(
                "x5c".into(),
                json!([base64::engine::general_purpose::STANDARD.encode(der)]),
            );
            Some(key)
        })
        .collect();
    json!({
        "keys": keys,
        "spiffe_sequence": sequence,
        "spiffe_refresh_hint": SPIFFE_REFRESH_HINT,
    })
}

/// Name of the ConfigMap and the `ClusterTrustBundle` the server publishes.
pub const BUNDLE_NAME: &str = "ca-server-trust-bundle";
/// The ConfigMap key holding the PEM bundle (what trust-manager `Bundle` sources name).
pub const BUNDLE_KEY: &str = "bundle.pem";

/// The ConfigMap `ca-server-trust-bundle` in `namespace`, `bundle.pem` = `pem`.
pub fn config_map(namespace: &str, pem: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": BUNDLE_NAME,
            "namespace": namespace,
            "labels": {"app.kubernetes.io/name": "ca-server", "app.kubernetes.io/component": "trust-bundle"},
        },
        "data": {BUNDLE_KEY: pem},
    })
}

/// The cluster-scoped `ClusterTrustBundle` `ca-server-trust-bundle` (certificates.k8s.io/v1beta1,
/// Kubernetes 1.33+), without a signer name, so pods can mount it by name (`clusterTrustBundle`
/// projected volumes).
pub fn cluster_trust_bundle(pem: &str) -> Value {
    json!({
        "apiVersion": "certificates.k8s.io/v1beta1",
        "kind": "ClusterTrustBundle",
        "metadata": {
            "name": BUNDLE_NAME,
            "labels": {"app.kubernetes.io/name": "ca-server"},
        },
        "spec": {"trustBundle": pem},
    })
}

/// `[trust]`: publishing the bundle into the cluster.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrustConfig {
    /// Write the ConfigMap `ca-server-trust-bundle` (key `bundle.pem`) in this namespace;
    /// `"pod"` is the server's own namespace. Unset: not published.
    pub configmap_namespace: Option<String>,
    /// Write the cluster-scoped `ClusterTrustBundle` `ca-server-trust-bundle`.
    pub cluster_trust_bundle: bool,
    /// Its API version: `v1beta1` (Kubernetes 1.33+) or `v1alpha1` (1.27–1.32).
    pub cluster_trust_bundle_version: String,
    /// The API server; unset: the pod's (`KUBERNETES_SERVICE_HOST`).
    pub kubernetes_api: Option<String>,
    /// CA bundle for the API server; unset: the pod's service-account `ca.crt`.
    pub kubernetes_ca_file: Option<PathBuf>,
    /// Bearer token (re-read at every write: projected tokens rotate); unset: the pod's.
    pub kubernetes_token_file: Option<PathBuf>,
}

impl Default for TrustConfig {
    fn default() -> Self {
        Self {
            configmap_namespace: None,
            cluster_trust_bundle: false,
            cluster_trust_bundle_version: "v1beta1".into(),
            kubernetes_api: None,
            kubernetes_ca_file: None,
            kubernetes_token_file: None,
        }
    }
}

impl TrustConfig {
    /// Whether anything is to be published.
    pub fn enabled(&self) -> bool {
        self.configmap_namespace.is_some() || self.cluster_trust_bundle
    }
}

/// How often an unchanged bundle is written again (someone may have deleted or edited it).
const REFRESH: Duration = Duration::from_secs(600);

/// One object to apply: its API path and body.
fn objects(config: &TrustConfig, namespace: Option<&str>, pem: &str) -> Vec<(String, Value)> {
    let mut out = Vec::new();
    if let Some(ns) = namespace {
        out.push((
            format!("/api/v1/namespaces/{ns}/configmaps/{BUNDLE_NAME}"),
            config_map(ns, pem),
        ));
    }
    if config.cluster_trust_bundle {
        let mut ctb = cluster_trust_bundle(pem);
        let version = &config.cluster_trust_bundle_version;
        ctb["apiVersion"] = json!(format!("certificates.k8s.io/{version}"));
        out.push((
            format!("/apis/certificates.k8s.io/{version}/clustertrustbundles/{BUNDLE_NAME}"),
            ctb,
        ));
    }
    out
}

/// Server-side apply of one object (field manager `ca-server`, forced: the server owns it).
async fn apply(api: &ApiServer, token: &str, path: &str, body: &Value) -> Result<(), KubeError> {
    let (status, answer) = api
        .call(
            hyper::Method::PATCH,
            &format!("{path}?fieldManager=ca-server&force=true"),
            token,
            "application/apply-patch+yaml",
            body.to_string().into_bytes(),
            Duration::from_secs(10),
        )
        .await?;
    if status.is_success() {
        return Ok(());
    }
    let reason = serde_json::from_slice::<Value>(&answer)
        .ok()
        .and_then(|v| v["message"].as_str().map(str::to_owned))
        .unwrap_or_default();
    Err(KubeError::Unavailable(format!(
        "{path}: the API server answered {status} {}",
        crate::policy::shorten(&reason)
    )))
}

/// Publishes the bundle whenever the roots change (checked every few seconds) and every
/// [`REFRESH`], until dropped. Failures are logged (at most once a minute) and retried.
pub async fn publish_forever(issuers: Arc<Issuers>, config: TrustConfig) {
    let mut published: Option<(String, Instant)> = None;
    let mut last_warning: Option<Instant> = None;
    let mut warn = |e: String| {
        if last_warning.is_none_or(|t| t.elapsed() > Duration::from_secs(60)) {
            tracing::warn!(error = %e, "publishing the trust bundle failed; retrying");
            last_warning = Some(Instant::now());
        }
    };
    loop {
        let pem = crate::issuer::hierarchy::to_pem(
            &issuers.current().roots(time::OffsetDateTime::now_utc()),
        );
        let due = published
            .as_ref()
            .is_none_or(|(p, at)| *p != pem || at.elapsed() > REFRESH);
        if due {
            match publish_once(&config, &pem).await {
                Ok(n) => {
                    if published.as_ref().is_none_or(|(p, _)| *p != pem) {
                        tracing::info!(
                            objects = n,
                            roots = pem.matches("BEGIN CERTIFICATE").count(),
                            "published the trust bundle"
                        );
                    }
                    published = Some((pem, Instant::now()));
                }
                Err(e) => warn(e.to_string()),
            }
        }
        tokio::time::sleep(crate::issuer::set::POLL).await;
    }
}

/// Writes every configured object once; returns how many.
pub async fn publish_once(config: &TrustConfig, pem: &str) -> Result<usize, KubeError> {
    let ca_file = config
        .kubernetes_ca_file
        .as_ref()
        .map(|p| p.display().to_string());
    let api = ApiServer::in_cluster(config.kubernetes_api.as_deref(), ca_file.as_deref())?;
    let token_file = config
        .kubernetes_token_file
        .clone()
        .unwrap_or_else(|| PathBuf::from(crate::kube::POD_TOKEN));
    let token = std::fs::read_to_string(&token_file)
        .map_err(|e| KubeError::Invalid(format!("{}: {e}", token_file.display())))?;
    let namespace = match config.configmap_namespace.as_deref() {
        Some("pod") => Some(
            std::fs::read_to_string(crate::kube::POD_NAMESPACE)
                .map_err(|e| KubeError::Invalid(format!("{}: {e}", crate::kube::POD_NAMESPACE)))?
                .trim()
                .to_owned(),
        ),
        other => other.map(str::to_owned),
    };
    if let Some(ns) = &namespace {
        let label = !ns.is_empty()
            && ns.len() <= 63
            && ns
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !ns.starts_with('-')
            && !ns.ends_with('-');
        if !label {
            return Err(KubeError::Invalid(format!(
                "[trust] configmap_namespace {ns:?} is not a namespace name"
            )));
        }
    }
    let objects = objects(config, namespace.as_deref(), pem);
    for (path, body) in &objects {
        apply(&api, token.trim(), path, body).await?;
    }
    Ok(objects.len())
}
