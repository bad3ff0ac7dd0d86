//! A small RFC 8555 client for tests that need exact control of each request (the cert-manager
//! replay, hostile input) and for the load generator: JWS signing with ring (RS256 like
//! cert-manager, ES256 like lego), nonce handling, HTTP/1.1 over rustls with keep-alive.

use std::net::SocketAddr;
use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use ring::rand::SystemRandom;
use ring::signature::{self, EcdsaKeyPair, KeyPair, RsaKeyPair};
use serde_json::{Value, json};
use tokio::sync::Mutex;

/// base64url without padding.
pub fn b64(data: &[u8]) -> String {
    B64.encode(data)
}

/// Decodes base64url without padding.
pub fn b64_decode(text: &str) -> Option<Vec<u8>> {
    B64.decode(text).ok()
}

/// An account key.
pub enum AccountKey {
    /// RSA (RS256), as cert-manager and certbot use.
    Rsa(RsaKeyPair),
    /// ECDSA P-256 (ES256), as lego and instant-acme use.
    P256(EcdsaKeyPair),
}

impl AccountKey {
    /// A fresh P-256 key.
    pub fn generate_p256() -> Self {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            .unwrap_or_else(|e| panic!("keygen: {e}"));
        Self::p256_from_pkcs8(pkcs8.as_ref())
    }

    /// A P-256 key from PKCS#8 DER.
    pub fn p256_from_pkcs8(der: &[u8]) -> Self {
        let rng = SystemRandom::new();
        AccountKey::P256(
            EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, der, &rng)
                .unwrap_or_else(|e| panic!("P-256 key: {e}")),
        )
    }

    /// An RSA key from PKCS#8 DER (ring cannot generate RSA keys; tests use openssl).
    pub fn rsa_from_pkcs8(der: &[u8]) -> Self {
        AccountKey::Rsa(RsaKeyPair::from_pkcs8(der).unwrap_or_else(|e| panic!("RSA key: {e}")))
    }

    /// JWS `alg`.
    pub fn alg(&self) -> &'static str {
        match self {
            AccountKey::Rsa(_) => "RS256",
            AccountKey::P256(_) => "ES256",
        }
    }

    /// The public JWK.
    pub fn jwk(&self) -> Value {
        match self {
            AccountKey::Rsa(k) => {
                let c = ring::rsa::PublicKeyComponents::<Vec<u8>>::from(k.public());
                let strip = |v: &[u8]| {
                    v.iter()
                        .skip_while(|b| **b == 0)
                        .copied()
                        .collect::<Vec<u8>>()
                };
                json!({"kty": "RSA", "n": b64(&strip(&c.n)), "e": b64(&strip(&c.e))})
            }
            AccountKey::P256(k) => {
                let p = k.public_key().as_ref();
                json!({"kty": "EC", "crv": "P-256", "x": b64(&p[1..33]), "y": b64(&p[33..])})
            }
        }
    }

    /// RFC 7638 thumbprint.
    pub fn thumbprint(&self) -> String {
        let jwk = self.jwk();
        let canonical = match self {
            AccountKey::Rsa(_) => format!(r#"{{"e":{},"kty":"RSA","n":{}}}"#, jwk["e"], jwk["n"]),
            AccountKey::P256(_) => format!(
                r#"{{"crv":"P-256","kty":"EC","x":{},"y":{}}}"#,
                jwk["x"], jwk["y"]
            ),
        };
        b64(ring::digest::digest(&ring::digest::SHA256, canonical.as_bytes()).as_ref())
    }

    /// Signs `message` with the key's JWS algorithm.
    pub fn sign(&self, message: &[u8]) -> Vec<u8> {
        let rng = SystemRandom::new();
        match self {
            AccountKey::Rsa(k) => {
                let mut sig = vec![0; k.public().modulus_len()];
                k.sign(&signature::RSA_PKCS1_SHA256, &rng, message, &mut sig)
                    .unwrap_or_else(|e| panic!("sign: {e}"));
                sig
            }
            AccountKey::P256(k) => k
                .sign(&rng, message)
                .unwrap_or_else(|e| panic!("sign: {e}"))
                .as_ref()
                .to_vec(),
        }
    }
}

/// Builds a flattened JWS with an explicit protected header.
pub fn jws(key: &AccountKey, protected: &Value, payload: &str) -> Value {
    let protected = b64(protected.to_string().as_bytes());
    let payload = if payload.is_empty() {
        String::new()
    } else {
        b64(payload.as_bytes())
    };
    let signature = key.sign(format!("{protected}.{payload}").as_bytes());
    json!({"protected": protected, "payload": payload, "signature": b64(&signature)})
}

/// An External Account Binding JWS (MAC over the account JWK).
pub fn eab(kid: &str, hmac_key_b64: &str, url: &str, account_jwk: &Value, alg: &str) -> Value {
    let key = B64
        .decode(hmac_key_b64)
        .unwrap_or_else(|e| panic!("hmac key: {e}"));
    let protected = b64(json!({"alg": alg, "kid": kid, "url": url})
        .to_string()
        .as_bytes());
    let payload = b64(account_jwk.to_string().as_bytes());
    let algorithm = match alg {
        "HS384" => ring::hmac::HMAC_SHA384,
        "HS512" => ring::hmac::HMAC_SHA512,
        _ => ring::hmac::HMAC_SHA256,
    };
    let tag = ring::hmac::sign(
        &ring::hmac::Key::new(algorithm, &key),
        format!("{protected}.{payload}").as_bytes(),
    );
    json!({"protected": protected, "payload": payload, "signature": b64(tag.as_ref())})
}

/// An HTTP response.
#[derive(Debug, Clone)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// Headers.
    pub headers: hyper::HeaderMap,
    /// Body bytes.
    pub body: Vec<u8>,
}

impl Response {
    /// The body as JSON (panics with the body if it is not).
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    /// A header's value.
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    }

    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// How long one request may take before [`Https::try_request_with`] gives up.
pub const REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// HTTPS to one server, trusting one root, reusing a keep-alive connection.
pub struct Https {
    addr: SocketAddr,
    authority: String,
    tls: tokio_rustls::TlsConnector,
    sender: Mutex<Option<SendRequest<Full<Bytes>>>>,
}

impl Https {
    /// `authority` is what goes in `Host` (e.g. `localhost:8443`); `root_pem` the trust anchor.
    pub fn new(addr: SocketAddr, authority: &str, root_pem: &str) -> Self {
        let mut roots = rustls::RootCertStore::empty();
        for cert in rustls::pki_types::pem::PemObject::pem_slice_iter(root_pem.as_bytes()) {
            let cert: rustls::pki_types::CertificateDer<'static> =
                cert.unwrap_or_else(|e| panic!("root: {e}"));
            roots.add(cert).unwrap_or_else(|e| panic!("root: {e}"));
        }
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap_or_else(|e| panic!("{e}"))
        .with_root_certificates(roots)
        .with_no_client_auth();
        Self {
            addr,
            authority: authority.to_owned(),
            tls: tokio_rustls::TlsConnector::from(Arc::new(config)),
            sender: Mutex::new(None),
        }
    }

    /// Another transport to the same server (its own connection).
    pub fn fresh(&self) -> Self {
        Self {
            addr: self.addr,
            authority: self.authority.clone(),
            tls: self.tls.clone(),
            sender: Mutex::new(None),
        }
    }

    async fn try_connect(&self) -> Result<SendRequest<Full<Bytes>>, String> {
        let tcp = tokio::net::TcpStream::connect(self.addr)
            .await
            .map_err(|e| format!("connect {}: {e}", self.addr))?;
        let _ = tcp.set_nodelay(true);
        let host = self
            .authority
            .split(':')
            .next()
            .unwrap_or("localhost")
            .to_owned();
        let name = rustls::pki_types::ServerName::try_from(host).map_err(|e| e.to_string())?;
        let tls = self
            .tls
            .connect(name, tcp)
            .await
            .map_err(|e| format!("TLS to {}: {e}", self.addr))?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(|e| format!("HTTP handshake: {e}"))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(sender)
    }

    /// Sends one request; `url` may be absolute (its path is used) or a path.
    pub async fn request(
        &self,
        method: &str,
        url: &str,
        content_type: Option<&str>,
        body: Vec<u8>,
    ) -> Response {
        self.request_with(method, url, &[], content_type, body)
            .await
    }

    /// As [`Https::request`], with extra headers.
    pub async fn request_with(
        &self,
        method: &str,
        url: &str,
        extra_headers: &[(&str, &str)],
        content_type: Option<&str>,
        body: Vec<u8>,
    ) -> Response {
        self.try_request_with(method, url, extra_headers, content_type, body)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// As [`Https::request_with`], reporting a connection failure instead of panicking (for
    /// load against a server that may be killed). A request unanswered after
    /// [`REQUEST_TIMEOUT`] is an error too (a stalled server fails the test, not the suite).
    pub async fn try_request_with(
        &self,
        method: &str,
        url: &str,
        extra_headers: &[(&str, &str)],
        content_type: Option<&str>,
        body: Vec<u8>,
    ) -> Result<Response, String> {
        tokio::time::timeout(
            REQUEST_TIMEOUT,
            self.exchange(method, url, extra_headers, content_type, body),
        )
        .await
        .unwrap_or_else(|_| {
            Err(format!(
                "{method} {url}: timed out after {REQUEST_TIMEOUT:?}"
            ))
        })
    }

    async fn exchange(
        &self,
        method: &str,
        url: &str,
        extra_headers: &[(&str, &str)],
        content_type: Option<&str>,
        body: Vec<u8>,
    ) -> Result<Response, String> {
        let path = match url.find("://") {
            Some(i) => url[i + 3..]
                .find('/')
                .map(|j| url[i + 3 + j..].to_owned())
                .unwrap_or_else(|| "/".into()),
            None => url.to_owned(),
        };
        let mut guard = self.sender.lock().await;
        let (mut sender, mut reused) = match guard.take() {
            Some(mut s) => match s.ready().await {
                Ok(()) => (s, true),
                Err(_) => (self.try_connect().await?, false),
            },
            None => (self.try_connect().await?, false),
        };
        let build = || {
            let mut builder = hyper::Request::builder()
                .method(method)
                .uri(&path)
                .header(hyper::header::HOST, &self.authority)
                .header(hyper::header::USER_AGENT, "ca-server-conformance");
            if let Some(ct) = content_type {
                builder = builder.header(hyper::header::CONTENT_TYPE, ct);
            }
            for (name, value) in extra_headers {
                builder = builder.header(*name, *value);
            }
            builder
                .body(Full::new(Bytes::from(body.clone())))
                .unwrap_or_else(|e| panic!("{e}"))
        };
        // Like ordinary HTTP clients, retry once on a fresh connection when a pooled keep-alive
        // connection turns out to be closed.
        let response = loop {
            match sender.send_request(build()).await {
                Ok(r) => break r,
                Err(_) if reused => {
                    sender = self.try_connect().await?;
                    reused = false;
                }
                Err(e) => return Err(format!("{method} {path}: {e}")),
            }
        };
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| format!("{method} {path}: body: {e}"))?
            .to_bytes()
            .to_vec();
        *guard = Some(sender);
        Ok(Response {
            status,
            headers,
            body,
        })
    }
}

/// An ACME client session.
pub struct AcmeClient {
    /// Transport.
    pub http: Https,
    /// The directory object.
    pub directory: Value,
    /// Account key.
    pub key: AccountKey,
    /// Account URL once registered.
    pub kid: Option<String>,
    /// How often a `badNonce` answer was retried (see [`AcmeClient::post`]).
    pub bad_nonce_retries: u64,
    nonce: Option<String>,
}

/// True for a `badNonce` problem: RFC 8555 §6.5 has clients retry those with the nonce the error
/// carried.
fn is_bad_nonce(r: &Response) -> bool {
    r.status == 400
        && serde_json::from_slice::<Value>(&r.body)
            .is_ok_and(|v| v["type"] == "urn:ietf:params:acme:error:badNonce")
}

impl AcmeClient {
    /// Fetches the directory at `/acme/directory`.
    pub async fn connect(http: Https, key: AccountKey) -> Self {
        Self::connect_at(http, key, "/acme/directory").await
    }

    /// Fetches the directory at `path` (Pebble serves it at `/dir`).
    pub async fn connect_at(http: Https, key: AccountKey, path: &str) -> Self {
        let r = http.request("GET", path, None, Vec::new()).await;
        assert_eq!(r.status, 200, "directory: {}", r.text());
        let directory = r.json();
        Self {
            http,
            directory,
            key,
            kid: None,
            bad_nonce_retries: 0,
            nonce: r.header("replay-nonce"),
        }
    }

    /// A directory URL by name (`newOrder`, …).
    pub fn url(&self, name: &str) -> String {
        self.directory[name]
            .as_str()
            .unwrap_or_else(|| panic!("directory lacks {name}"))
            .to_owned()
    }

    /// A nonce: the last one received, else `HEAD newNonce`.
    pub async fn nonce(&mut self) -> String {
        if let Some(n) = self.nonce.take() {
            return n;
        }
        let url = self.url("newNonce");
        let r = self.http.request("HEAD", &url, None, Vec::new()).await;
        assert_eq!(r.status, 200);
        r.header("replay-nonce")
            .unwrap_or_else(|| panic!("newNonce without Replay-Nonce"))
    }

    /// Signs `payload` (None = POST-as-GET) for `url` with kid (once registered) or jwk.
    pub async fn signed(&mut self, url: &str, payload: Option<&Value>) -> Value {
        let nonce = self.nonce().await;
        let mut protected = json!({"alg": self.key.alg(), "nonce": nonce, "url": url});
        match &self.kid {
            Some(kid) => protected["kid"] = json!(kid),
            None => protected["jwk"] = self.key.jwk(),
        }
        let payload = payload.map(Value::to_string).unwrap_or_default();
        jws(&self.key, &protected, &payload)
    }

    /// POSTs a raw body with `application/jose+json`, keeping the returned nonce.
    pub async fn post_raw(&mut self, url: &str, body: Vec<u8>) -> Response {
        let r = self
            .http
            .request("POST", url, Some("application/jose+json"), body)
            .await;
        assert!(
            r.header("replay-nonce").is_some(),
            "every response carries Replay-Nonce ({url} {})",
            r.status
        );
        self.nonce = r.header("replay-nonce");
        r
    }

    /// Signs and POSTs, reporting a connection failure instead of panicking; a `badNonce` answer
    /// is retried once, as in [`AcmeClient::post`].
    pub async fn try_post(
        &mut self,
        url: &str,
        payload: Option<&Value>,
    ) -> Result<Response, String> {
        let r = self.try_post_once(url, payload).await?;
        if !is_bad_nonce(&r) {
            return Ok(r);
        }
        self.bad_nonce_retries += 1;
        self.try_post_once(url, payload).await
    }

    async fn try_post_once(
        &mut self,
        url: &str,
        payload: Option<&Value>,
    ) -> Result<Response, String> {
        let nonce = match self.nonce.take() {
            Some(n) => n,
            None => {
                let url = self.url("newNonce");
                self.http
                    .try_request_with("HEAD", &url, &[], None, Vec::new())
                    .await?
                    .header("replay-nonce")
                    .ok_or("newNonce without Replay-Nonce")?
            }
        };
        self.nonce = Some(nonce);
        let body = self.signed(url, payload).await;
        let r = self
            .http
            .try_request_with(
                "POST",
                url,
                &[],
                Some("application/jose+json"),
                body.to_string().into_bytes(),
            )
            .await?;
        self.nonce = r.header("replay-nonce");
        Ok(r)
    }

    /// Signs and POSTs. A `badNonce` answer is retried once with the nonce it carried, as
    /// certbot, lego and Go's ACME package do (a server restart invalidates the nonces it
    /// issued); [`AcmeClient::bad_nonce_retries`] counts them. Tests of nonce handling itself
    /// use [`AcmeClient::post_raw`], which never retries.
    pub async fn post(&mut self, url: &str, payload: Option<&Value>) -> Response {
        let body = self.signed(url, payload).await;
        let r = self.post_raw(url, body.to_string().into_bytes()).await;
        if !is_bad_nonce(&r) {
            return r;
        }
        self.bad_nonce_retries += 1;
        let body = self.signed(url, payload).await;
        self.post_raw(url, body.to_string().into_bytes()).await
    }

    /// newAccount; remembers the account URL.
    pub async fn new_account(&mut self, payload: &Value) -> Response {
        let url = self.url("newAccount");
        let r = self.post(&url, Some(payload)).await;
        if r.status == 200 || r.status == 201 {
            self.kid = r.header("location");
        }
        r
    }

    /// `newAccount` with an HS256 external account binding made from `kid` and its base64url
    /// HMAC key, as cert-manager and certbot send it.
    pub async fn new_account_with_eab(&mut self, kid: &str, hmac_key_b64: &str) -> Response {
        let binding = eab(
            kid,
            hmac_key_b64,
            &self.url("newAccount"),
            &self.key.jwk(),
            "HS256",
        );
        self.new_account(&json!({"externalAccountBinding": binding}))
            .await
    }

    /// POST-as-GET `url` until its `status` is no longer `pending` or `processing` (validation
    /// finished, whenever that is), at most `limit`; returns the object.
    pub async fn poll_settled(&mut self, url: &str, limit: std::time::Duration) -> Value {
        let deadline = std::time::Instant::now() + limit;
        loop {
            let r = self.post(url, None).await;
            assert_eq!(r.status, 200, "POST-as-GET {url}: {}", r.text());
            let v = r.json();
            if !matches!(v["status"].as_str(), Some("pending" | "processing")) {
                return v;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{url} still {} after {limit:?}",
                v["status"]
            );
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }

    /// `token.thumbprint`.
    pub fn key_authorization(&self, token: &str) -> String {
        format!("{token}.{}", self.key.thumbprint())
    }
}

/// A minimal http-01 responder (the role of cert-manager's acmesolver pod): answers
/// `/.well-known/acme-challenge/<token>` with the key authorization when `Host` is the identifier.
pub struct Http01Responder {
    /// Where it listens.
    pub addr: SocketAddr,
    tokens: Arc<std::sync::Mutex<std::collections::HashMap<String, (String, String)>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Http01Responder {
    /// Listens on 127.0.0.1:`port`.
    pub async fn start(port: u16) -> Self {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .unwrap_or_else(|e| panic!("bind {port}: {e}"));
        let addr = listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
        let tokens: Arc<std::sync::Mutex<std::collections::HashMap<String, (String, String)>>> =
            Arc::default();
        let shared = Arc::clone(&tokens);
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let tokens = Arc::clone(&shared);
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(
                        move |req: hyper::Request<hyper::body::Incoming>| {
                            let tokens = Arc::clone(&tokens);
                            async move {
                                let token = req
                                    .uri()
                                    .path()
                                    .strip_prefix("/.well-known/acme-challenge/")
                                    .unwrap_or("")
                                    .to_owned();
                                let host = req
                                    .headers()
                                    .get(hyper::header::HOST)
                                    .and_then(|h| h.to_str().ok())
                                    .unwrap_or("")
                                    .to_owned();
                                let host = host
                                    .rsplit_once(':')
                                    .map(|(h, _)| h.to_owned())
                                    .unwrap_or(host);
                                let found = tokens.lock().ok().and_then(|t| t.get(&token).cloned());
                                let (status, body) = match found {
                                    Some((name, ka)) if name == host => (200, ka),
                                    _ => (404, "not found".to_owned()),
                                };
                                Ok::<_, std::convert::Infallible>(
                                    hyper::Response::builder()
                                        .status(status)
                                        .body(Full::new(Bytes::from(body)))
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
        Self { addr, tokens, task }
    }

    /// Serves `key_authorization` for `token` when asked with `Host: identifier`.
    pub fn add(&self, identifier: &str, token: &str, key_authorization: &str) {
        if let Ok(mut t) = self.tokens.lock() {
            t.insert(
                token.to_owned(),
                (identifier.to_owned(), key_authorization.to_owned()),
            );
        }
    }
}

impl Drop for Http01Responder {
    fn drop(&mut self) {
        self.task.abort();
    }
}
