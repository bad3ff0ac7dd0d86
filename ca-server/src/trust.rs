//! Trust distribution: the roots clients should trust now, in the forms consumers read — a PEM
//! bundle (`/ca/bundle.pem`, `ca-server bundle`, trust-manager sources), a SPIFFE bundle (a JWK
//! set with `x509-svid` keys, for SPIRE federation and Istio's `spiffe_bundle_url`), and the
//! Kubernetes objects the server can publish itself (a ConfigMap and a `ClusterTrustBundle`).

use base64::Engine as _;
use rustls::pki_types::CertificateDer;
use serde_json::{Value, json};

use crate::issuer::SubjectPublicKey;
use crate::jose::Jwk;

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
