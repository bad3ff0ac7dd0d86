//! Test doubles for the two Kubernetes pieces the Vault API needs: the API server's
//! service-account token signer and its TokenReview endpoint. No API server runs on these
//! machines, so tests hold the signing key and mint projected service-account JWTs with the claims
//! a kubelet-requested token carries; the server verifies them with its production code path
//! against the public key it is given, or asks [`TokenReviewServer`].

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

/// The UID the tokens' service accounts carry.
pub const UID: &str = "0b7a1c2d-1111-2222-3333-444455556666";

/// A projected service-account token for `namespace/name` with `audience`, expiring in
/// `exp_offset` seconds (negative: already expired), signed RS256 by `signer`.
pub fn service_account_token(
    signer: &AccountKey,
    namespace: &str,
    name: &str,
    audience: &str,
    exp_offset: i64,
) -> String {
    let t = now();
    let claims = json!({
        "aud": [audience], "exp": t + exp_offset, "iat": t - 5, "nbf": t - 5, "iss": ISSUER,
        "sub": format!("system:serviceaccount:{namespace}:{name}"),
        "jti": format!("{namespace}-{name}-{t}"),
        "kubernetes.io": {"namespace": namespace, "serviceaccount": {"name": name, "uid": UID}},
    });
    signed_token(signer, &claims)
}

/// A token for `payments/api` with audience `ca-server`, valid for 10 minutes, with `patch`
/// merged into its claims (a `null` value removes the claim): a forged `iss`, a `sub` that
/// disagrees, the legacy flat claims.
pub fn service_account_token_with(signer: &AccountKey, patch: serde_json::Value) -> String {
    let t = now();
    let mut claims = json!({
        "aud": ["ca-server"], "exp": t + 600, "iat": t - 5, "nbf": t - 5, "iss": ISSUER,
        "sub": "system:serviceaccount:payments:api",
        "kubernetes.io": {"namespace": "payments", "serviceaccount": {"name": "api", "uid": UID}},
    });
    if let (Some(c), Some(p)) = (claims.as_object_mut(), patch.as_object()) {
        for (k, v) in p {
            if v.is_null() {
                c.remove(k);
            } else {
                c.insert(k.clone(), v.clone());
            }
        }
    }
    signed_token(signer, &claims)
}

fn signed_token(signer: &AccountKey, claims: &serde_json::Value) -> String {
    let header = b64(json!({"alg": "RS256", "kid": "sa-key-1"})
        .to_string()
        .as_bytes());
    let payload = b64(claims.to_string().as_bytes());
    let sig = signer.sign(format!("{header}.{payload}").as_bytes());
    format!("{header}.{payload}.{}", b64(&sig))
}

/// The audiences the API server accepts when a review names none (`--api-audiences`, which
/// defaults to the service-account issuer).
pub const API_AUDIENCES: [&str; 1] = [ISSUER];

/// A request the double received: its `Authorization` header and the TokenReview `spec`.
pub type ReviewRequest = (Option<String>, serde_json::Value);

/// Test double for the API server's TokenReview endpoint (`POST
/// /apis/authentication.k8s.io/v1/tokenreviews` over HTTPS), for servers configured without local
/// keys. It answers what the API server answers for tokens its key signed: signature (RS256 is
/// deterministic, so re-signing the input must give the same bytes), expiry, and audiences
/// (the requested ones the token carries, or [`API_AUDIENCES`] when none are requested), in the
/// same `status` shape. These verdicts are the API server's, not ca-server's: to exercise
/// ca-server's own checks of the reply (the audience it asked for, the username's form) a test
/// scripts the `status` with [`TokenReviewServer::answer_with`]. Requests must carry
/// `Bearer <reviewer token>` (else 401, as the API server answers) and are recorded.
pub struct TokenReviewServer {
    /// Where it listens (127.0.0.1).
    pub addr: std::net::SocketAddr,
    /// Its self-signed certificate, PEM: configure it as `kubernetes_ca_cert`.
    pub ca_pem: String,
    /// Reviews answered so far.
    pub reviews: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    /// Every authorized review request, in order.
    pub requests: std::sync::Arc<std::sync::Mutex<Vec<ReviewRequest>>>,
    answer: std::sync::Arc<std::sync::Mutex<Option<serde_json::Value>>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Drop for TokenReviewServer {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// A TLS listener on 127.0.0.1 with a fresh self-signed certificate for `127.0.0.1`: the
/// acceptor, the listener, its address and the certificate (the CA a client trusts).
async fn tls_listener() -> (
    tokio_rustls::TlsAcceptor,
    tokio::net::TcpListener,
    std::net::SocketAddr,
    String,
) {
    let key = rcgen::KeyPair::generate().unwrap_or_else(|e| panic!("key: {e}"));
    let params = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()])
        .unwrap_or_else(|e| panic!("params: {e}"));
    let cert = params
        .self_signed(&key)
        .unwrap_or_else(|e| panic!("cert: {e}"));
    let tls = rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap_or_else(|e| panic!("tls: {e}"))
    .with_no_client_auth()
    .with_single_cert(
        vec![cert.der().clone()],
        rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
    )
    .unwrap_or_else(|e| panic!("tls cert: {e}"));
    let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(tls));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap_or_else(|e| panic!("bind: {e}"));
    let addr = listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
    (acceptor, listener, addr, cert.pem())
}

impl TokenReviewServer {
    /// From now on every review is answered with this `status`, whatever the token (`None`:
    /// back to judging tokens).
    pub fn answer_with(&self, status: Option<serde_json::Value>) {
        if let Ok(mut a) = self.answer.lock() {
            *a = status;
        }
    }

    /// The last review request received.
    pub fn last_request(&self) -> Option<ReviewRequest> {
        self.requests.lock().ok().and_then(|r| r.last().cloned())
    }

    /// Stops listening: the listener is closed when this returns (new connections are refused).
    pub async fn stop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
    }
}

fn review(signer: &AccountKey, spec: &serde_json::Value) -> serde_json::Value {
    let token = spec["token"].as_str().unwrap_or_default();
    let parts: Vec<&str> = token.split('.').collect();
    let unauthenticated = json!({"authenticated": false, "error": "invalid bearer token"});
    let [h, p, s] = parts[..] else {
        return unauthenticated;
    };
    if b64(&signer.sign(format!("{h}.{p}").as_bytes())) != s {
        return unauthenticated;
    }
    let Some(claims) = crate::acme::b64_decode(p)
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
    else {
        return unauthenticated;
    };
    if claims["exp"].as_i64().is_none_or(|e| e <= now()) {
        return json!({"authenticated": false, "error": "token has expired"});
    }
    let token_auds: Vec<&str> = claims["aud"]
        .as_array()
        .map(|a| a.iter().filter_map(|x| x.as_str()).collect())
        .unwrap_or_default();
    let wanted: Vec<&str> = spec["audiences"]
        .as_array()
        .map(|a| a.iter().filter_map(|x| x.as_str()).collect())
        .unwrap_or_default();
    let wanted = if wanted.is_empty() {
        API_AUDIENCES.to_vec()
    } else {
        wanted
    };
    let audiences: Vec<&str> = wanted
        .into_iter()
        .filter(|a| token_auds.contains(a))
        .collect();
    if audiences.is_empty() {
        return json!({"authenticated": false, "error": "token audiences are invalid"});
    }
    json!({
        "authenticated": true,
        "user": {
            "username": claims["sub"],
            "uid": claims["kubernetes.io"]["serviceaccount"]["uid"],
            "groups": ["system:serviceaccounts"],
        },
        "audiences": audiences,
    })
}

impl TokenReviewServer {
    /// Starts on 127.0.0.1 with a fresh self-signed certificate; tokens are checked against
    /// `signer`, callers must present `reviewer_token`.
    pub async fn start(signer: AccountKey, reviewer_token: &str) -> Self {
        use http_body_util::{BodyExt, Full};
        use hyper::body::Bytes;
        use hyper_util::rt::TokioIo;
        use std::sync::Arc;
        use std::sync::atomic::{AtomicUsize, Ordering};

        let (acceptor, listener, addr, ca_pem) = tls_listener().await;
        let reviews = Arc::new(AtomicUsize::new(0));
        let requests: Arc<std::sync::Mutex<Vec<ReviewRequest>>> = Arc::default();
        let answer: Arc<std::sync::Mutex<Option<serde_json::Value>>> = Arc::default();
        let (signer, bearer, counter, log, script) = (
            Arc::new(signer),
            Arc::new(format!("Bearer {reviewer_token}")),
            Arc::clone(&reviews),
            Arc::clone(&requests),
            Arc::clone(&answer),
        );
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let (acceptor, signer, bearer, counter, log, script) = (
                    acceptor.clone(),
                    Arc::clone(&signer),
                    Arc::clone(&bearer),
                    Arc::clone(&counter),
                    Arc::clone(&log),
                    Arc::clone(&script),
                );
                tokio::spawn(async move {
                    let Ok(stream) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let service = hyper::service::service_fn(
                        move |req: hyper::Request<hyper::body::Incoming>| {
                            let (signer, bearer, counter, log, script) = (
                                Arc::clone(&signer),
                                Arc::clone(&bearer),
                                Arc::clone(&counter),
                                Arc::clone(&log),
                                Arc::clone(&script),
                            );
                            async move {
                                let authorization = req
                                    .headers()
                                    .get(hyper::header::AUTHORIZATION)
                                    .and_then(|v| v.to_str().ok())
                                    .map(str::to_owned);
                                let authorized = authorization.as_deref() == Some(bearer.as_str());
                                let path_ok = req.method() == hyper::Method::POST
                                    && req.uri().path()
                                        == "/apis/authentication.k8s.io/v1/tokenreviews";
                                let body = req
                                    .into_body()
                                    .collect()
                                    .await
                                    .map(|b| b.to_bytes())
                                    .unwrap_or_default();
                                let (status, doc) = if !authorized {
                                    (401, json!({"kind": "Status", "code": 401}))
                                } else if !path_ok {
                                    (404, json!({"kind": "Status", "code": 404}))
                                } else {
                                    counter.fetch_add(1, Ordering::Relaxed);
                                    let request: serde_json::Value =
                                        serde_json::from_slice(&body).unwrap_or_default();
                                    if let Ok(mut l) = log.lock() {
                                        l.push((authorization, request["spec"].clone()));
                                    }
                                    let scripted = script.lock().ok().and_then(|a| a.clone());
                                    let status = scripted
                                        .unwrap_or_else(|| review(&signer, &request["spec"]));
                                    (
                                        201,
                                        json!({
                                            "apiVersion": "authentication.k8s.io/v1",
                                            "kind": "TokenReview",
                                            "spec": request["spec"],
                                            "status": status,
                                        }),
                                    )
                                };
                                Ok::<_, std::convert::Infallible>(
                                    hyper::Response::builder()
                                        .status(status)
                                        .header("content-type", "application/json")
                                        .body(Full::new(Bytes::from(doc.to_string())))
                                        .unwrap_or_default(),
                                )
                            }
                        },
                    );
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Self {
            addr,
            ca_pem,
            reviews,
            requests,
            answer,
            task: Some(task),
        }
    }
}

/// A request the API server double received: method, path with query, `Content-Type`,
/// `Authorization`, and the body as JSON.
#[derive(Debug, Clone)]
pub struct ApiRequest {
    /// HTTP method.
    pub method: String,
    /// Path and query.
    pub path: String,
    /// `Content-Type`.
    pub content_type: String,
    /// `Authorization`.
    pub authorization: String,
    /// The body (JSON; server-side apply bodies are JSON-as-YAML).
    pub body: serde_json::Value,
}

/// Test double for the API server's object writes (no API server runs on these machines):
/// accepts server-side apply `PATCH`es from callers presenting `Bearer <token>` (else 401, as the
/// API server answers), records them, and answers 200 with the object, as the API server does.
pub struct ApiServerDouble {
    /// Where it listens (127.0.0.1).
    pub addr: std::net::SocketAddr,
    /// Its self-signed certificate, PEM (the "cluster CA").
    pub ca_pem: String,
    /// Every request that presented the right token, in order.
    pub requests: std::sync::Arc<std::sync::Mutex<Vec<ApiRequest>>>,
    /// The token callers must present; change it to see a caller re-read its token file.
    pub token: std::sync::Arc<std::sync::Mutex<String>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Drop for ApiServerDouble {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

impl ApiServerDouble {
    /// Starts on 127.0.0.1 with a fresh self-signed certificate.
    pub async fn start(token: &str) -> Self {
        use http_body_util::{BodyExt, Full};
        use hyper::body::Bytes;
        use hyper_util::rt::TokioIo;
        use std::sync::{Arc, Mutex};

        let (acceptor, listener, addr, ca_pem) = tls_listener().await;
        let requests: Arc<Mutex<Vec<ApiRequest>>> = Arc::default();
        let expected = Arc::new(Mutex::new(token.to_owned()));
        let (log, want) = (Arc::clone(&requests), Arc::clone(&expected));
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let (acceptor, log, want) = (acceptor.clone(), Arc::clone(&log), Arc::clone(&want));
                tokio::spawn(async move {
                    let Ok(stream) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let service = hyper::service::service_fn(
                        move |req: hyper::Request<hyper::body::Incoming>| {
                            let (log, want) = (Arc::clone(&log), Arc::clone(&want));
                            async move {
                                let header = |name: hyper::header::HeaderName| {
                                    req.headers()
                                        .get(name)
                                        .and_then(|v| v.to_str().ok())
                                        .unwrap_or_default()
                                        .to_owned()
                                };
                                let authorization = header(hyper::header::AUTHORIZATION);
                                let content_type = header(hyper::header::CONTENT_TYPE);
                                let method = req.method().to_string();
                                let path = req
                                    .uri()
                                    .path_and_query()
                                    .map(|p| p.to_string())
                                    .unwrap_or_default();
                                let body = req
                                    .into_body()
                                    .collect()
                                    .await
                                    .map(|b| b.to_bytes())
                                    .unwrap_or_default();
                                let expected = want
                                    .lock()
                                    .map(|t| format!("Bearer {t}"))
                                    .unwrap_or_default();
                                let (status, doc) = if authorization != expected {
                                    (
                                        401,
                                        json!({"kind": "Status", "code": 401, "message": "Unauthorized"}),
                                    )
                                } else {
                                    let body: serde_json::Value =
                                        serde_json::from_slice(&body).unwrap_or_default();
                                    if let Ok(mut l) = log.lock() {
                                        l.push(ApiRequest {
                                            method,
                                            path,
                                            content_type,
                                            authorization,
                                            body: body.clone(),
                                        });
                                    }
                                    (200, body)
                                };
                                Ok::<_, std::convert::Infallible>(
                                    hyper::Response::builder()
                                        .status(status)
                                        .header("content-type", "application/json")
                                        .body(Full::new(Bytes::from(doc.to_string())))
                                        .unwrap_or_default(),
                                )
                            }
                        },
                    );
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Self {
            addr,
            ca_pem,
            requests,
            token: expected,
            task: Some(task),
        }
    }

    /// The requests received so far whose path starts with `prefix`.
    pub fn received(&self, prefix: &str) -> Vec<ApiRequest> {
        self.requests
            .lock()
            .map(|r| {
                r.iter()
                    .filter(|q| q.path.starts_with(prefix))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    }
}
