//! The Kubernetes API server as a client sees it: one HTTPS request at a time, trusted through a
//! CA bundle, authenticated with a bearer token — what TokenReview (kubernetes auth) and trust
//! publishing (ConfigMap, ClusterTrustBundle) need, and nothing more. In a pod the defaults are
//! the pod's own: `KUBERNETES_SERVICE_HOST`/`_PORT`, and the service account's `ca.crt` and
//! token. A leaf: it knows neither Vault nor the CA.

use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;

/// The pod's service-account mount.
pub const POD_CA: &str = "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt";
/// The pod's service-account token (projected: re-read it, it rotates).
pub const POD_TOKEN: &str = "/var/run/secrets/kubernetes.io/serviceaccount/token";
/// The pod's namespace.
pub const POD_NAMESPACE: &str = "/var/run/secrets/kubernetes.io/serviceaccount/namespace";

/// Why a request could not be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KubeError {
    /// The configuration is unusable (bad URL, bad CA): an operator's problem.
    #[error("{0}")]
    Invalid(String),
    /// The API server could not be reached or did not answer in time.
    #[error("the Kubernetes API server is unavailable: {0}")]
    Unavailable(String),
}

/// An API server endpoint and how to trust it.
#[derive(Clone)]
pub struct ApiServer {
    authority: String,
    hostname: String,
    port: u16,
    base_path: String,
    tls: Arc<rustls::ClientConfig>,
}

impl std::fmt::Debug for ApiServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiServer")
            .field("authority", &self.authority)
            .finish_non_exhaustive()
    }
}

impl ApiServer {
    /// `host` is `https://name[:port][/path]`; `ca_pem` the certificates that may sign its
    /// serving certificate.
    pub fn new(host: &str, ca_pem: &str) -> Result<Self, KubeError> {
        let invalid = |m: &str| KubeError::Invalid(format!("kubernetes host {host:?}: {m}"));
        let rest = host
            .trim_end_matches('/')
            .strip_prefix("https://")
            .ok_or_else(|| invalid("must be an https:// URL"))?;
        let (authority, base_path) = match rest.split_once('/') {
            Some((a, p)) => (a, format!("/{p}")),
            None => (rest, String::new()),
        };
        let (hostname, port) = match authority.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => (
                h.trim_start_matches('[').trim_end_matches(']'),
                p.parse::<u16>().map_err(|_| invalid("bad port"))?,
            ),
            _ => (authority, 443),
        };
        let mut roots = rustls::RootCertStore::empty();
        for cert in rustls::pki_types::pem::PemObject::pem_slice_iter(ca_pem.as_bytes()) {
            let cert: rustls::pki_types::CertificateDer<'static> =
                cert.map_err(|_| KubeError::Invalid("the API server's CA: bad PEM".into()))?;
            roots.add(cert).map_err(|_| {
                KubeError::Invalid("the API server's CA: unusable certificate".into())
            })?;
        }
        if roots.is_empty() {
            return Err(KubeError::Invalid(
                "the API server's CA: no certificate".into(),
            ));
        }
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| KubeError::Invalid(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
        Ok(Self {
            authority: authority.to_owned(),
            hostname: hostname.to_owned(),
            port,
            base_path,
            tls: Arc::new(tls),
        })
    }

    /// The API server a pod reaches: `KUBERNETES_SERVICE_HOST:PORT`, trusted through the pod's
    /// `ca.crt`. `host` and `ca_file` override either.
    pub fn in_cluster(host: Option<&str>, ca_file: Option<&str>) -> Result<Self, KubeError> {
        let host = match host {
            Some(h) => h.to_owned(),
            None => {
                let name = std::env::var("KUBERNETES_SERVICE_HOST").map_err(|_| {
                    KubeError::Invalid(
                        "not in a pod (no KUBERNETES_SERVICE_HOST): set the API server's URL"
                            .into(),
                    )
                })?;
                let port =
                    std::env::var("KUBERNETES_SERVICE_PORT").unwrap_or_else(|_| "443".into());
                if name.contains(':') {
                    format!("https://[{name}]:{port}")
                } else {
                    format!("https://{name}:{port}")
                }
            }
        };
        let ca_file = ca_file.unwrap_or(POD_CA);
        let ca = std::fs::read_to_string(ca_file)
            .map_err(|e| KubeError::Invalid(format!("{ca_file}: {e}")))?;
        Self::new(&host, &ca)
    }

    /// One request: `method path` with `token` as bearer, `content_type` and `body`; the
    /// answer's status and body, within `timeout`.
    pub async fn call(
        &self,
        method: hyper::Method,
        path: &str,
        token: &str,
        content_type: &str,
        body: Vec<u8>,
        timeout: Duration,
    ) -> Result<(hyper::StatusCode, Bytes), KubeError> {
        let unavailable = |e: &dyn std::fmt::Display| KubeError::Unavailable(e.to_string());
        let server_name = rustls::pki_types::ServerName::try_from(self.hostname.clone())
            .map_err(|_| KubeError::Invalid("bad API server host name".into()))?;
        let request = hyper::Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base_path))
            .header(hyper::header::HOST, &self.authority)
            .header(hyper::header::CONTENT_TYPE, content_type)
            .header(hyper::header::ACCEPT, "application/json")
            .header(hyper::header::AUTHORIZATION, format!("Bearer {token}"))
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| unavailable(&e))?;
        let exchange = async {
            let tcp = tokio::net::TcpStream::connect((self.hostname.as_str(), self.port)).await?;
            let stream = tokio_rustls::TlsConnector::from(Arc::clone(&self.tls))
                .connect(server_name, tcp)
                .await?;
            let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .map_err(std::io::Error::other)?;
            tokio::spawn(async move {
                let _ = conn.await;
            });
            let response = sender
                .send_request(request)
                .await
                .map_err(std::io::Error::other)?;
            let status = response.status();
            let bytes = response
                .into_body()
                .collect()
                .await
                .map_err(std::io::Error::other)?
                .to_bytes();
            Ok::<_, std::io::Error>((status, bytes))
        };
        tokio::time::timeout(timeout, exchange)
            .await
            .map_err(|_| KubeError::Unavailable("timed out".into()))?
            .map_err(|e| unavailable(&e))
    }
}
