//! Trust distribution into the cluster: the server writes the ConfigMap `ca-server-trust-bundle`
//! (what trust-manager `Bundle` sources read) and the `ClusterTrustBundle` of the same name by
//! server-side apply, and writes them again when the roots change (a new issuer under another
//! root), re-reading its service-account token each time.
//!
//! Test double, stated plainly: no Kubernetes API server runs on these machines, so a small HTTPS
//! server plays its object-write endpoint (`conformance::kubernetes::ApiServerDouble`): it checks
//! the bearer token and records each apply. The server's code path is the production one; only
//! the API server's address, CA and token file are given in the configuration.

use std::path::Path;
use std::time::Duration;

use conformance::kubernetes::{ApiRequest, ApiServerDouble};
use conformance::openssl::openssl;
use conformance::server::CaServer;

fn cli(data: &Path, args: &[&str]) -> (bool, String, String) {
    let mut all = vec!["--data-dir", data.to_str().expect("utf-8")];
    all.extend_from_slice(args);
    let out = conformance::server::run(&all);
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Waits until the double has received an apply for `prefix` whose bundle satisfies `done`.
async fn wait_for(
    api: &ApiServerDouble,
    prefix: &str,
    done: impl Fn(&ApiRequest) -> bool,
) -> ApiRequest {
    for _ in 0..120 {
        if let Some(r) = api.received(prefix).into_iter().rev().find(|r| done(r)) {
            return r;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    panic!(
        "no matching apply to {prefix}; received: {:?}",
        api.received("")
            .iter()
            .map(|r| (&r.method, &r.path))
            .collect::<Vec<_>>()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bundle_is_published_and_follows_the_roots() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let api = ApiServerDouble::start("first-token").await;
    std::fs::write(dir.join("api-ca.crt"), &api.ca_pem).expect("write");
    std::fs::write(dir.join("token"), "first-token\n").expect("write");
    let cfg = dir.join("ca.toml");
    std::fs::write(
        &cfg,
        format!(
            "[trust]\nconfigmap_namespace = \"ca-system\"\ncluster_trust_bundle = true\nkubernetes_api = \"https://127.0.0.1:{}\"\nkubernetes_ca_file = \"{}\"\nkubernetes_token_file = \"{}\"\n",
            api.addr.port(),
            dir.join("api-ca.crt").display(),
            dir.join("token").display()
        ),
    )
    .expect("config");
    let data = dir.join("data");
    let server = CaServer::start(&data, &["--config", cfg.to_str().expect("utf-8")]);
    let bundle = conformance::openssl::curl_http(&format!("{}/ca/bundle.pem", server.http_url())).1;

    // Both objects, by server-side apply, as the ca-server field manager, with the pod's token.
    let cm = wait_for(
        &api,
        "/api/v1/namespaces/ca-system/configmaps/ca-server-trust-bundle",
        |_| true,
    )
    .await;
    assert_eq!(cm.method, "PATCH");
    assert_eq!(
        cm.path,
        "/api/v1/namespaces/ca-system/configmaps/ca-server-trust-bundle?fieldManager=ca-server&force=true"
    );
    assert_eq!(cm.content_type, "application/apply-patch+yaml");
    assert_eq!(cm.body["kind"], "ConfigMap");
    assert_eq!(cm.body["metadata"]["namespace"], "ca-system");
    assert_eq!(cm.body["data"]["bundle.pem"], bundle.as_str());
    let ctb = wait_for(
        &api,
        "/apis/certificates.k8s.io/v1beta1/clustertrustbundles/ca-server-trust-bundle",
        |_| true,
    )
    .await;
    assert_eq!(ctb.body["apiVersion"], "certificates.k8s.io/v1beta1");
    assert_eq!(ctb.body["kind"], "ClusterTrustBundle");
    assert_eq!(ctb.body["spec"]["trustBundle"], bundle.as_str());
    assert!(
        ctb.body["spec"].get("signerName").is_none(),
        "no signer name: pods mount it by name"
    );

    // `ca-server bundle` prints the same objects for GitOps.
    let (ok, out, err) = cli(
        &data,
        &[
            "bundle",
            "--format",
            "configmap",
            "--namespace",
            "ca-system",
        ],
    );
    assert!(ok, "{err}");
    let printed: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(printed, cm.body);

    // The token rotates (projected tokens do): the next write uses the new one.
    std::fs::write(dir.join("token"), "second-token\n").expect("write");
    *api.token.lock().expect("lock") = "second-token".into();

    // A new issuer under another root: once it is the default, both roots are published.
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            "new-root.key",
            "-subj",
            "/CN=New Root",
            "-days",
            "60",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
            "-out",
            "new-root.crt",
        ],
    );
    let (ok, _, err) = cli(
        &data,
        &[
            "ca",
            "csr",
            "--out",
            dir.join("next.csr").to_str().expect("utf-8"),
        ],
    );
    assert!(ok, "{err}");
    std::fs::write(dir.join("ext"), "basicConstraints=critical,CA:TRUE,pathlen:1\nkeyUsage=critical,keyCertSign,cRLSign,digitalSignature\nsubjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n").expect("write");
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "next.csr",
            "-CA",
            "new-root.crt",
            "-CAkey",
            "new-root.key",
            "-CAcreateserial",
            "-days",
            "30",
            "-extfile",
            "ext",
            "-out",
            "next.crt",
        ],
    );
    let (ok, _, err) = cli(
        &data,
        &[
            "ca",
            "install-intermediate",
            "--cert",
            dir.join("next.crt").to_str().expect("utf-8"),
            "--chain",
            dir.join("new-root.crt").to_str().expect("utf-8"),
            "--activate",
            "now",
        ],
    );
    assert!(ok, "{err}");
    let new_root = std::fs::read_to_string(dir.join("new-root.crt")).expect("read");
    let both = |r: &ApiRequest| {
        let pem = r.body["data"]["bundle.pem"].as_str().unwrap_or_default();
        pem.matches("BEGIN CERTIFICATE").count() == 2 && pem.contains(new_root.trim())
    };
    let cm = wait_for(&api, "/api/v1/namespaces/ca-system/configmaps/", both).await;
    assert_eq!(
        cm.authorization, "Bearer second-token",
        "the token file is read again"
    );
    let served = conformance::openssl::curl_http(&format!("{}/ca/bundle.pem", server.http_url())).1;
    assert_eq!(
        cm.body["data"]["bundle.pem"],
        served.as_str(),
        "what is served is what is published"
    );
    let ctb = wait_for(
        &api,
        "/apis/certificates.k8s.io/v1beta1/clustertrustbundles/",
        |r| {
            r.body["spec"]["trustBundle"]
                .as_str()
                .is_some_and(|p| p.contains(new_root.trim()))
        },
    )
    .await;
    assert_eq!(ctb.body["spec"]["trustBundle"], served.as_str());
}
