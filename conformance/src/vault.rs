//! A Vault API client for tests: raw calls with an optional token (as cert-manager sends them,
//! no Content-Type), the root token, and a server with the cert-manager set-up of the guide.

use std::path::Path;

use serde_json::{Value, json};

use crate::acme::{Https, Response};
use crate::server::CaServer;

/// A client of one server's Vault API.
pub struct Vault {
    /// HTTPS transport trusting the server's bundle.
    pub http: Https,
    /// The root token written at initialisation.
    pub token: String,
}

impl Vault {
    /// A client for `server`, with the root token from its data directory.
    pub fn connect(server: &CaServer) -> Self {
        let token = std::fs::read_to_string(server.data_dir.join("root-token"))
            .expect("root token written at first start")
            .trim()
            .to_owned();
        let (code, bundle) =
            crate::openssl::curl_http(&format!("{}/ca/bundle.pem", server.http_url()));
        assert_eq!(code, 200);
        let http = Https::new(
            server.https,
            &format!("localhost:{}", server.https.port()),
            &bundle,
        );
        Self { http, token }
    }

    /// `method /v1/<path>` with `token` and a JSON body.
    pub async fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Response {
        let body = body.map(|b| b.to_string().into_bytes()).unwrap_or_default();
        self.raw(method, &format!("/v1/{path}"), token, body).await
    }

    /// A request with an exact path (spellings included) and body bytes.
    pub async fn raw(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Vec<u8>,
    ) -> Response {
        let mut headers = vec![("x-vault-request", "true")];
        if let Some(t) = token {
            headers.push(("x-vault-token", t));
        }
        self.http
            .request_with(method, path, &headers, None, body)
            .await
    }

    /// `POST auth/kubernetes/login` with a service account token, as cert-manager does.
    pub async fn kubernetes_login(&self, role: &str, jwt: &str) -> Response {
        self.call(
            "POST",
            "auth/kubernetes/login",
            None,
            Some(json!({"role": role, "jwt": jwt})),
        )
        .await
    }

    /// A call with the root token that must succeed.
    pub async fn root(&self, method: &str, path: &str, body: Value) -> Response {
        let r = self.call(method, path, Some(&self.token), Some(body)).await;
        assert!(r.status < 300, "{method} {path}: {} {}", r.status, r.text());
        r
    }

    /// Writes a policy with the root token.
    pub async fn policy(&self, name: &str, text: &str) {
        self.root(
            "PUT",
            &format!("sys/policy/{name}"),
            json!({ "policy": text }),
        )
        .await;
    }

    /// A token with `policies`, made by the root token.
    pub async fn token_with(&self, policies: &[&str]) -> String {
        let r = self
            .root("POST", "auth/token/create", json!({ "policies": policies }))
            .await;
        r.json()["auth"]["client_token"]
            .as_str()
            .expect("client_token")
            .to_owned()
    }
}

/// The errors of a Vault error response.
pub fn errors(r: &Response) -> Vec<String> {
    r.json()["errors"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|e| e.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// How many certificates the ledger of a server's data directory holds (via `ledger stats`).
pub fn ledger_total(data_dir: &Path, db_args: &[&str]) -> u64 {
    let mut args = vec![
        "--data-dir",
        data_dir.to_str().expect("utf-8"),
        "ledger",
        "stats",
        "-o",
        "json",
    ];
    args.extend_from_slice(db_args);
    let out = crate::server::run(&args);
    assert!(
        out.status.success(),
        "ledger stats: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).expect("stats JSON");
    v["total"].as_u64().expect("total")
}

/// `curl` POST over HTTPS with an optional client certificate (what cert auth needs: rustls
/// clients here present none); returns (status, JSON body).
pub fn curl_post(
    url: &str,
    bundle: &Path,
    client: Option<(&Path, &Path)>,
    body: &str,
) -> (u16, Value) {
    let mut cmd = std::process::Command::new("curl");
    cmd.args(["-sS", "--max-time", "20", "--cacert"])
        .arg(bundle);
    if let Some((cert, key)) = client {
        cmd.arg("--cert").arg(cert).arg("--key").arg(key);
    }
    cmd.args(["-w", "\n%{http_code}", "-d", body, url]);
    let out = crate::process::output_within(&mut cmd, crate::process::QUICK);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (json_text, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (
        code.trim().parse().unwrap_or(0),
        serde_json::from_str(json_text).unwrap_or(Value::Null),
    )
}
