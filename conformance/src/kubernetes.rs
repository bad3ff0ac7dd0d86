//! Test double for the one Kubernetes piece the Vault API needs: the API server's
//! service-account token signer. No API server runs on these machines, so tests hold the signing
//! key and mint projected service-account JWTs with the claims a kubelet-requested token carries;
//! the server verifies them with its production code path against the public key it is given.

use serde_json::json;

use crate::acme::{AccountKey, b64};

/// The issuer these tokens carry (configure the server with the same).
pub const ISSUER: &str = "https://kubernetes.default.svc.cluster.local";

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or_default())
        .unwrap_or_default()
}

/// A projected service-account token for `namespace/name` with `audience`, expiring in
/// `exp_offset` seconds (negative: already expired), signed RS256 by `signer`.
pub fn service_account_token(
    signer: &AccountKey,
    namespace: &str,
    name: &str,
    audience: &str,
    exp_offset: i64,
) -> String {
    let header = b64(json!({"alg": "RS256", "kid": "sa-key-1"})
        .to_string()
        .as_bytes());
    let t = now();
    let claims = json!({
        "aud": [audience], "exp": t + exp_offset, "iat": t - 5, "nbf": t - 5, "iss": ISSUER,
        "sub": format!("system:serviceaccount:{namespace}:{name}"),
        "jti": format!("{namespace}-{name}-{t}"),
        "kubernetes.io": {"namespace": namespace, "serviceaccount": {"name": name, "uid": "0b7a1c2d-1111-2222-3333-444455556666"}},
    });
    let payload = b64(claims.to_string().as_bytes());
    let sig = signer.sign(format!("{header}.{payload}").as_bytes());
    format!("{header}.{payload}.{}", b64(&sig))
}
