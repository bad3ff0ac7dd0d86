//! Kubernetes auth without local keys: the API server's TokenReview
//! (`POST /apis/authentication.k8s.io/v1/tokenreviews`), as Vault does when no `pem_keys` or JWKS
//! are configured. The reviewer's credential is `token_reviewer_jwt`, else the pod's own
//! service-account token, else the JWT being reviewed (Vault's fallback); the API server is trusted
//! through `kubernetes_ca_cert`, else the pod's `ca.crt`. Neither token is ever logged.

use std::time::Duration;

use serde_json::{Value, json};

use super::Error;
use crate::kube::{ApiServer, KubeError, POD_CA, POD_TOKEN};

/// What the API server said about a token.
#[derive(Debug, PartialEq, Eq)]
pub struct Reviewed {
    /// Service-account namespace.
    pub namespace: String,
    /// Service-account name.
    pub name: String,
    /// Service-account UID.
    pub uid: String,
}

/// The API server could not be asked: a 503 for the client (try again), never a denial.
fn unavailable(why: impl std::fmt::Display) -> Error {
    tracing::warn!(error = %why, "TokenReview failed");
    Error::Unavailable("the Kubernetes API server could not review the token; retry later".into())
}

/// Asks the API server whether `jwt` is a valid token for `audience` (if set). `Ok(None)`: the
/// API server says it is not.
pub async fn review(
    host: &str,
    ca_pem: &str,
    reviewer_jwt: &str,
    jwt: &str,
    audience: &str,
) -> Result<Option<Reviewed>, Error> {
    let ca_pem = if ca_pem.trim().is_empty() {
        std::fs::read_to_string(POD_CA)
            .map_err(|_| Error::Invalid("kubernetes_ca_cert is required outside a pod".into()))?
    } else {
        ca_pem.to_owned()
    };
    let reviewer = if !reviewer_jwt.trim().is_empty() {
        reviewer_jwt.trim().to_owned()
    } else {
        std::fs::read_to_string(POD_TOKEN)
            .map(|t| t.trim().to_owned())
            .unwrap_or_else(|_| jwt.to_owned())
    };
    let api = ApiServer::new(host, &ca_pem).map_err(|e| match e {
        KubeError::Invalid(m) => Error::Invalid(m.replace("kubernetes host", "kubernetes_host")),
        e => unavailable(e),
    })?;
    let body = json!({
        "apiVersion": "authentication.k8s.io/v1",
        "kind": "TokenReview",
        "spec": {
            "token": jwt,
            "audiences": if audience.is_empty() { json!(null) } else { json!([audience]) },
        },
    })
    .to_string();
    let (status, bytes) = api
        .call(
            hyper::Method::POST,
            "/apis/authentication.k8s.io/v1/tokenreviews",
            &reviewer,
            "application/json",
            body.into_bytes(),
            Duration::from_secs(10),
        )
        .await
        .map_err(unavailable)?;
    if !status.is_success() {
        // 401/403: our reviewer credential is refused — a configuration problem, not the client's.
        return Err(unavailable(format!("API server answered {status}")));
    }
    let doc: Value = serde_json::from_slice(&bytes).map_err(unavailable)?;
    Ok(verdict(&doc["status"], audience))
}

/// What a TokenReview `status` means for a login: the service account, or `None` (denied).
/// The API server's word is taken for the signature, expiry and revocation; two things are
/// checked here because the API server does not refuse them: the audience asked for must be one
/// it confirmed (an older API server ignores `spec.audiences` and answers with none), and the
/// user must be a service account, `system:serviceaccount:<namespace>:<name>` with both parts
/// present (a node, a user or an impersonated name is authenticated too, but has no service
/// account to bind).
fn verdict(status: &Value, audience: &str) -> Option<Reviewed> {
    if status["authenticated"] != json!(true) {
        return None;
    }
    if !audience.is_empty()
        && !status["audiences"]
            .as_array()
            .is_some_and(|a| a.iter().any(|x| x.as_str() == Some(audience)))
    {
        return None;
    }
    let username = status["user"]["username"].as_str()?;
    let parts: Vec<&str> = username.split(':').collect();
    let ["system", "serviceaccount", namespace, name] = parts[..] else {
        return None;
    };
    if namespace.is_empty() || name.is_empty() {
        return None;
    }
    Some(Reviewed {
        namespace: namespace.to_owned(),
        name: name.to_owned(),
        uid: status["user"]["uid"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(username: &str, audiences: Value) -> Value {
        json!({"authenticated": true, "user": {"username": username, "uid": "u-1"}, "audiences": audiences})
    }

    #[test]
    fn a_service_account_confirmed_for_the_audience_logs_in() {
        let ok = verdict(
            &status("system:serviceaccount:payments:api", json!(["ca-server"])),
            "ca-server",
        );
        assert_eq!(
            ok,
            Some(Reviewed {
                namespace: "payments".into(),
                name: "api".into(),
                uid: "u-1".into()
            })
        );
        // A role without an audience takes the API server's default audiences.
        assert!(
            verdict(
                &status("system:serviceaccount:payments:api", json!(["https://k"])),
                ""
            )
            .is_some()
        );
    }

    #[test]
    fn the_api_servers_refusal_is_a_denial() {
        for s in [
            json!({"authenticated": false, "error": "token has expired"}),
            json!({"authenticated": "true", "user": {"username": "system:serviceaccount:a:b"}, "audiences": ["x"]}),
            json!({}),
        ] {
            assert_eq!(verdict(&s, "x"), None, "{s}");
        }
    }

    #[test]
    fn the_audience_asked_for_must_be_confirmed() {
        let user = "system:serviceaccount:payments:api";
        for audiences in [
            json!(["someone-else"]),
            json!([]),
            json!(null),
            json!("ca-server"),
        ] {
            assert_eq!(
                verdict(&status(user, audiences.clone()), "ca-server"),
                None,
                "{audiences}"
            );
        }
    }

    #[test]
    fn only_service_accounts_are_accepted() {
        for username in [
            "system:node:worker-1",
            "alice",
            "system:serviceaccount:payments",
            "system:serviceaccount::api",
            "system:serviceaccount:payments:",
            "system:serviceaccount:payments:api:extra",
            "system:serviceaccounts:payments:api",
            "",
        ] {
            assert_eq!(
                verdict(&status(username, json!(["x"])), "x"),
                None,
                "{username:?}"
            );
        }
    }
}
