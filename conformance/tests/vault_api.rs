//! The Vault-compatible API as cert-manager's `vault` issuer uses it, replayed call by call, plus
//! SPIFFE identity enforcement and Vault's conventions (LIST, errors, envelopes).
//!
//! Test double, stated plainly: no Kubernetes API server runs on these machines, so this test
//! plays the cluster's service-account token signer (`conformance::kubernetes`). It gives the
//! server the public key through `auth/kubernetes/config` (`pem_keys`, as an operator would from
//! the API server's JWKS); the server verifies tokens with its production code path.

use std::path::Path;

use conformance::acme::AccountKey;
use conformance::kubernetes::service_account_token;
use conformance::openssl::{openssl, p256_csr, pkcs8_key, verify};
use conformance::server::CaServer;
use conformance::vault::{Vault, curl_post};
use serde_json::{Value, json};

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or_default()
}

fn csr_pem(dir: &Path, name: &str, subject: &str, san: &str) -> String {
    p256_csr(dir, name, subject, Some(san));
    std::fs::read_to_string(dir.join(format!("{name}.csr"))).expect("csr")
}

async fn setup(dir: &Path) -> (CaServer, Vault, AccountKey) {
    setup_with(dir, &[]).await
}

async fn setup_with(dir: &Path, server_args: &[&str]) -> (CaServer, Vault, AccountKey) {
    let server = CaServer::start(&dir.join("data"), server_args);
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(dir.join("data/root-token"))
            .expect("stat")
            .permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);
    let vault = Vault::connect(&server);

    // The cluster's service-account signing key (see the module docs).
    let signer = AccountKey::rsa_from_pkcs8(&pkcs8_key(
        dir,
        "sa",
        &["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"],
    ));
    openssl(dir, &["pkey", "-in", "sa.pem", "-pubout", "-out", "sa.pub"]);
    let public = std::fs::read_to_string(dir.join("sa.pub")).expect("public key");
    vault
        .root(
            "POST",
            "auth/kubernetes/config",
            json!({
        "kubernetes_host": "https://kubernetes.default.svc", "pem_keys": [public],
        "issuer": "https://kubernetes.default.svc.cluster.local"}),
        )
        .await;
    vault.root("PUT", "sys/policy/cert-manager", json!({"policy": "path \"pki_int/sign/*\" {\n  capabilities = [\"create\", \"update\"]\n}\n"})).await;
    vault.root("POST", "auth/kubernetes/role/cert-manager", json!({
        "bound_service_account_names": "cert-manager", "bound_service_account_namespaces": "cert-manager",
        "audience": "vault://vault-internal", "token_policies": "cert-manager", "ttl": "1m"})).await;
    vault
        .root(
            "POST",
            "pki_int/roles/internal-service",
            json!({
        "allowed_domains": "svc.cluster.local", "allow_subdomains": "true", "key_type": "any",
        "require_cn": "false", "max_ttl": "2160h", "allowed_uri_sans": "spiffe://cluster.local/*"}),
        )
        .await;
    (server, vault, signer)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cert_manager_vault_issuer_replayed() {
    let tmp = tempfile::tempdir().expect("tempdir");
    cert_manager_replay(tmp.path(), &[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cert_manager_vault_issuer_replayed_on_postgres() {
    let db = tokio::task::spawn_blocking(conformance::postgres::test_database)
        .await
        .expect("postgres");
    let tmp = tempfile::tempdir().expect("tempdir");
    cert_manager_replay(tmp.path(), &["--database-url", &db.url]).await;
}

async fn cert_manager_replay(dir: &Path, server_args: &[&str]) {
    let (server, vault, signer) = setup_with(dir, server_args).await;

    // Issuer Setup: sys/health with no token and no namespace header.
    let r = vault.call("GET", "sys/health", None, None).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["sealed"], false);

    for (i, name) in ["web", "api"].iter().enumerate() {
        // A fresh login per signing, as cert-manager does.
        let jwt = service_account_token(
            &signer,
            "cert-manager",
            "cert-manager",
            "vault://vault-internal",
            600,
        );
        let r = vault.kubernetes_login("cert-manager", &jwt).await;
        assert_eq!(r.status, 200, "{}", r.text());
        let token = r.json()["auth"]["client_token"]
            .as_str()
            .expect("client_token")
            .to_owned();
        assert_eq!(r.json()["auth"]["lease_duration"], 60);

        let host = format!("{name}.default.svc.cluster.local");
        let csr = csr_pem(dir, name, &format!("/CN={host}"), &format!("DNS:{host}"));
        let body = json!({"common_name": host, "alt_names": host, "ip_sans": "", "uri_sans": "",
            "ttl": "2160h0m0s", "csr": csr, "exclude_cn_from_sans": "true"});
        let r = vault
            .call(
                "POST",
                "pki_int/sign/internal-service",
                Some(&token),
                Some(body),
            )
            .await;
        assert_eq!(r.status, 200, "sign {i}: {}", r.text());
        let data = &r.json()["data"];
        let warnings = r.json()["warnings"].clone();
        assert!(
            warnings.to_string().contains("use_csr_common_name"),
            "Vault's warnings: {warnings}"
        );
        let chain: Vec<String> = data["ca_chain"]
            .as_array()
            .expect("ca_chain")
            .iter()
            .map(|c| c.as_str().expect("pem").to_owned())
            .collect();
        assert_eq!(chain.len(), 2, "issuing CA then root, nothing unrelated");
        assert_eq!(data["issuing_ca"], json!(chain[0]));
        assert!(
            data["serial_number"]
                .as_str()
                .expect("serial")
                .contains(':')
        );
        assert!(data["expiration"].as_i64().expect("expiration") > now());
        std::fs::write(
            dir.join("leaf.pem"),
            data["certificate"].as_str().expect("cert"),
        )
        .expect("write");
        std::fs::write(dir.join("intermediate.pem"), &chain[0]).expect("write");
        std::fs::write(dir.join("root.pem"), &chain[1]).expect("write");
        // cert-manager's checks: the chain links up, and the root is there so ca.crt is the root.
        let (ok, text) = verify(dir, "root.pem", Some("intermediate.pem"), "leaf.pem");
        assert!(ok, "{text}");
        let root_dump = openssl(
            dir,
            &["x509", "-in", "root.pem", "-noout", "-subject", "-issuer"],
        );
        let lines: Vec<&str> = root_dump.lines().collect();
        assert_eq!(
            lines[0].trim_start_matches("subject="),
            lines[1].trim_start_matches("issuer="),
            "self-signed root"
        );
    }

    // The cert-manager token may only sign: anything else is 403.
    let jwt = service_account_token(
        &signer,
        "cert-manager",
        "cert-manager",
        "vault://vault-internal",
        600,
    );
    let token = vault.kubernetes_login("cert-manager", &jwt).await.json()["auth"]["client_token"]
        .as_str()
        .expect("token")
        .to_owned();
    let r = vault
        .call(
            "POST",
            "pki_int/roles/evil",
            Some(&token),
            Some(json!({"allow_any_name": true})),
        )
        .await;
    assert_eq!(
        (r.status, r.json()["errors"][0].as_str()),
        (403, Some("permission denied"))
    );
    // A name outside the role is a 400 with Vault's wording.
    let csr = csr_pem(dir, "bad", "/CN=evil.example.com", "DNS:evil.example.com");
    let r = vault
        .call(
            "POST",
            "pki_int/sign/internal-service",
            Some(&token),
            Some(json!({"csr": csr})),
        )
        .await;
    assert_eq!(r.status, 400);
    assert_eq!(
        r.json()["errors"][0],
        "common name evil.example.com not allowed by this role"
    );
    let r = vault
        .call(
            "POST",
            "pki_int/sign/nope",
            Some(&vault.token),
            Some(json!({"csr": csr})),
        )
        .await;
    assert_eq!(
        (r.status, r.json()["errors"][0].as_str()),
        (400, Some("unknown role: nope"))
    );
    // LIST as a verb and as ?list=true; an empty list is a 404.
    let r = vault
        .call("LIST", "pki_int/roles", Some(&vault.token), None)
        .await;
    assert_eq!(r.json()["data"]["keys"], json!(["internal-service"]));
    let r = vault
        .call("GET", "pki_int/roles?list=true", Some(&vault.token), None)
        .await;
    assert_eq!(r.json()["data"]["keys"], json!(["internal-service"]));
    assert_eq!(
        vault
            .call("LIST", "pki/roles", Some(&vault.token), None)
            .await
            .status,
        404
    );
    let r = vault
        .call("GET", "pki_int/certs?list=true", Some(&vault.token), None)
        .await;
    assert!(r.json()["data"]["keys"].as_array().expect("keys").len() >= 2);
    // Revocation reaches the ledger and the cert endpoint.
    let serial = r.json()["data"]["keys"][0]
        .as_str()
        .expect("serial")
        .to_owned();
    let r = vault
        .root("POST", "pki_int/revoke", json!({"serial_number": serial}))
        .await;
    assert_eq!(r.json()["data"]["state"], "revoked");
    let r = vault
        .call("GET", &format!("pki_int/cert/{serial}"), None, None)
        .await;
    assert!(r.json()["data"]["revocation_time"].as_i64().expect("time") > 0);
    // The CRL lists it, and openssl's CRL check refuses the certificate.
    let crl = vault.call("GET", "pki_int/crl/pem", None, None).await;
    assert_eq!(crl.status, 200);
    std::fs::write(dir.join("crl.pem"), crl.text()).expect("crl");
    let crl_text = openssl(dir, &["crl", "-in", "crl.pem", "-noout", "-text"]);
    assert!(
        crl_text.contains(&serial.replace(':', "").to_ascii_uppercase()),
        "{crl_text}"
    );
    assert!(crl_text.contains("X509v3 CRL Number"));
    let pem = r.json()["data"]["certificate"]
        .as_str()
        .expect("pem")
        .to_owned();
    std::fs::write(dir.join("revoked.pem"), pem).expect("write");
    let root_and_crl = format!(
        "{}{}",
        std::fs::read_to_string(dir.join("root.pem")).expect("root"),
        crl.text()
    );
    std::fs::write(dir.join("root-and-crl.pem"), root_and_crl).expect("write");
    let out = std::process::Command::new("openssl")
        .current_dir(dir)
        .args([
            "verify",
            "-crl_check",
            "-CAfile",
            "root-and-crl.pem",
            "-untrusted",
            "intermediate.pem",
            "revoked.pem",
        ])
        .output()
        .expect("openssl");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !out.status.success() && said.contains("certificate revoked"),
        "{said}"
    );
    // Token lookup-self (hvac's is_authenticated) and a child token.
    let r = vault
        .call("GET", "auth/token/lookup-self", Some(&vault.token), None)
        .await;
    assert_eq!(r.json()["data"]["policies"], json!(["root"]));
    assert_eq!(
        vault
            .call("GET", "auth/token/lookup-self", Some("hvs.bogus"), None)
            .await
            .status,
        403
    );

    // The ledger keeps who asked (cert-manager's namespace) and whose certificate it is (the
    // workload's namespace, from its service name).
    let mut args = vec![
        "--data-dir",
        server.data_dir.to_str().expect("utf-8"),
        "ledger",
        "search",
        "--san",
        "web.default.svc.cluster.local",
        "-o",
        "json",
    ];
    args.extend_from_slice(server_args);
    let out = conformance::server::run(&args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).expect("json");
    let item = &report["certificates"][0];
    assert_eq!(item["namespace"], "cert-manager", "{report}");
    assert_eq!(item["workloadNamespace"], "default", "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_workload_gets_its_own_spiffe_id_and_no_other() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let (_server, vault, signer) = setup(dir).await;
    vault
        .root(
            "PUT",
            "sys/policy/workload",
            json!({"policy": "path \"pki_int/sign/svid\" { capabilities = [\"update\"] }"}),
        )
        .await;
    vault
        .root(
            "POST",
            "auth/kubernetes/role/workloads",
            json!({
        "bound_service_account_names": "*", "bound_service_account_namespaces": "*",
        "audience": "ca-server", "token_policies": "workload", "ttl": "5m"}),
        )
        .await;
    vault.root("POST", "pki_int/roles/svid", json!({"spiffe_from_identity": "true", "key_type": "ec", "require_cn": "false", "ttl": "1h"})).await;

    let login = |jwt: String| {
        let vault = &vault;
        async move { vault.kubernetes_login("workloads", &jwt).await }
    };
    let r = login(service_account_token(
        &signer,
        "payments",
        "api",
        "ca-server",
        600,
    ))
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let token_a = r.json()["auth"]["client_token"]
        .as_str()
        .expect("token")
        .to_owned();

    // Its own ID: issued, as a valid X509-SVID.
    let own = csr_pem(
        dir,
        "own",
        "/",
        "URI:spiffe://cluster.local/ns/payments/sa/api",
    );
    let r = vault
        .call(
            "POST",
            "pki_int/sign/svid",
            Some(&token_a),
            Some(json!({"csr": own})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    std::fs::write(
        dir.join("svid.pem"),
        r.json()["data"]["certificate"].as_str().expect("cert"),
    )
    .expect("write");
    let dump = openssl(dir, &["x509", "-in", "svid.pem", "-noout", "-text"]);
    assert_eq!(dump.matches("URI:").count(), 1);
    assert!(
        dump.contains("URI:spiffe://cluster.local/ns/payments/sa/api") && dump.contains("CA:FALSE")
    );
    assert!(dump.contains("TLS Web Server Authentication, TLS Web Client Authentication"));
    // No names in the CSR at all: the caller's ID is filled in.
    openssl(
        dir,
        &[
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            "none.key",
            "-subj",
            "/",
            "-out",
            "none.csr",
        ],
    );
    let none = std::fs::read_to_string(dir.join("none.csr")).expect("csr");
    let r = vault
        .call(
            "POST",
            "pki_int/sign/svid",
            Some(&token_a),
            Some(json!({"csr": none})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    std::fs::write(
        dir.join("filled.pem"),
        r.json()["data"]["certificate"].as_str().expect("cert"),
    )
    .expect("write");
    assert!(
        openssl(
            dir,
            &[
                "x509",
                "-in",
                "filled.pem",
                "-noout",
                "-ext",
                "subjectAltName"
            ]
        )
        .contains("URI:spiffe://cluster.local/ns/payments/sa/api")
    );

    // Workload A asking for workload B's identity: 403, and nothing issued.
    let other = csr_pem(
        dir,
        "other",
        "/",
        "URI:spiffe://cluster.local/ns/billing/sa/api",
    );
    let r = vault
        .call(
            "POST",
            "pki_int/sign/svid",
            Some(&token_a),
            Some(json!({"csr": other})),
        )
        .await;
    assert_eq!(
        (r.status, r.json()["errors"][0].as_str()),
        (403, Some("permission denied"))
    );

    // Expired token, wrong audience, foreign signing key: refused at login.
    assert_eq!(
        login(service_account_token(
            &signer,
            "payments",
            "api",
            "ca-server",
            -60
        ))
        .await
        .status,
        403
    );
    assert_eq!(
        login(service_account_token(
            &signer,
            "payments",
            "api",
            "someone-else",
            600
        ))
        .await
        .status,
        403
    );
    let foreign = AccountKey::rsa_from_pkcs8(&pkcs8_key(
        dir,
        "foreign",
        &["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"],
    ));
    assert_eq!(
        login(service_account_token(
            &foreign,
            "payments",
            "api",
            "ca-server",
            600
        ))
        .await
        .status,
        403
    );
    // The root token has no service-account identity: no SPIFFE ID for it either.
    let r = vault
        .call(
            "POST",
            "pki_int/sign/svid",
            Some(&vault.token),
            Some(json!({"csr": own})),
        )
        .await;
    assert_eq!(r.status, 403);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hvac_works_unchanged() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let server = CaServer::start(&dir.join("data"), &[]);
    let token = std::fs::read_to_string(dir.join("data/root-token"))
        .expect("root token")
        .trim()
        .to_owned();
    let (_, bundle) =
        conformance::openssl::curl_http(&format!("{}/ca/bundle.pem", server.http_url()));
    std::fs::write(dir.join("bundle.pem"), bundle).expect("bundle");
    let signer = AccountKey::rsa_from_pkcs8(&pkcs8_key(
        dir,
        "sa",
        &["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"],
    ));
    // hvac accepts only certificates in pem_keys: wrap the signing key's public half in one.
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-new",
            "-key",
            "sa.pem",
            "-subj",
            "/CN=service-account-signer",
            "-days",
            "1",
            "-out",
            "sa.pub",
        ],
    );
    csr_pem(dir, "app", "/CN=app.example.test", "DNS:app.example.test");
    let python = conformance::tools::tool("certbot").with_file_name("python");
    let out = std::process::Command::new(python)
        .arg(conformance::workspace_root().join("conformance/python/hvac_flow.py"))
        .env("VAULT_ADDR", server.https_url())
        .env("CA_BUNDLE", dir.join("bundle.pem"))
        .env("ROOT_TOKEN", token)
        .env(
            "SA_PUBLIC_KEY",
            std::fs::read_to_string(dir.join("sa.pub")).expect("pub"),
        )
        .env(
            "SA_JWT",
            service_account_token(&signer, "default", "app", "ca-server", 600),
        )
        .env("CSR_FILE", dir.join("app.csr"))
        .output()
        .expect("python");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && text.contains("hvac flow: ok"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cert_auth_logs_in_with_a_trusted_client_certificate() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let (server, vault, _) = setup(dir).await;
    let bundle = dir.join("bundle.pem");
    std::fs::write(
        &bundle,
        conformance::openssl::curl_http(&format!("{}/ca/bundle.pem", server.http_url())).1,
    )
    .expect("bundle");
    // A client CA and two client certificates: one from it, one from a foreign CA.
    for ca in ["clients", "foreign"] {
        openssl(
            dir,
            &[
                "req",
                "-x509",
                "-new",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-keyout",
                &format!("{ca}-ca.key"),
                "-subj",
                &format!("/CN={ca} CA"),
                "-days",
                "1",
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-out",
                &format!("{ca}-ca.pem"),
            ],
        );
        openssl(
            dir,
            &[
                "req",
                "-new",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-keyout",
                &format!("{ca}.key"),
                "-subj",
                "/CN=deployer-1",
                "-out",
                &format!("{ca}.csr"),
            ],
        );
        std::fs::write(dir.join("client.ext"), "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth\n").expect("ext");
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                &format!("{ca}.csr"),
                "-CA",
                &format!("{ca}-ca.pem"),
                "-CAkey",
                &format!("{ca}-ca.key"),
                "-CAcreateserial",
                "-days",
                "1",
                "-extfile",
                "client.ext",
                "-out",
                &format!("{ca}.pem"),
            ],
        );
    }
    let ca_pem = std::fs::read_to_string(dir.join("clients-ca.pem")).expect("ca");
    vault
        .root(
            "POST",
            "auth/cert/certs/deployers",
            json!({"certificate": ca_pem, "allowed_common_names": "deployer-*",
        "token_policies": "cert-manager", "ttl": "5m"}),
        )
        .await;

    let url = format!("{}/v1/auth/cert/login", server.https_url());
    let (code, body) = curl_post(
        &url,
        &bundle,
        Some((&dir.join("clients.pem"), &dir.join("clients.key"))),
        r#"{"name":"deployers"}"#,
    );
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["auth"]["metadata"]["common_name"], "deployer-1");
    let token = body["auth"]["client_token"]
        .as_str()
        .expect("token")
        .to_owned();
    let csr = csr_pem(
        dir,
        "web",
        "/CN=web.default.svc.cluster.local",
        "DNS:web.default.svc.cluster.local",
    );
    let r = vault
        .call(
            "POST",
            "pki_int/sign/internal-service",
            Some(&token),
            Some(json!({"csr": csr})),
        )
        .await;
    assert_eq!(
        r.status,
        200,
        "the cert-authenticated token signs: {}",
        r.text()
    );

    let (code, body) = curl_post(
        &url,
        &bundle,
        Some((&dir.join("foreign.pem"), &dir.join("foreign.key"))),
        "{}",
    );
    assert_eq!(
        (code, body["errors"][0].as_str()),
        (403, Some("permission denied"))
    );
    let (code, _) = curl_post(&url, &bundle, None, "{}");
    assert_eq!(code, 400, "no client certificate presented");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tidy_trims_expired_certificates_but_keeps_their_ledger_rows() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let (_server, vault, _) = setup(dir).await;
    vault
        .root(
            "POST",
            "pki_int/roles/short",
            json!({"allow_any_name": true, "key_type": "any", "require_cn": false, "ttl": "1s"}),
        )
        .await;
    let sign = |name: &'static str, ttl: &'static str| {
        let vault = &vault;
        let csr = csr_pem(
            dir,
            name,
            &format!("/CN={name}.example.test"),
            &format!("DNS:{name}.example.test"),
        );
        async move {
            let r = vault
                .root(
                    "POST",
                    "pki_int/sign/short",
                    json!({"csr": csr, "ttl": ttl}),
                )
                .await;
            r.json()["data"]["serial_number"]
                .as_str()
                .expect("serial")
                .to_owned()
        }
    };
    let expired = sign("expired", "1s").await;
    let live = sign("live", "1h").await;
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;

    let r = vault
        .call(
            "POST",
            "pki_int/tidy",
            Some(&vault.token),
            Some(json!({"tidy_cert_store": true, "safety_buffer": "0s"})),
        )
        .await;
    assert_eq!(r.status, 202, "{}", r.text());
    assert!(
        r.json()["warnings"][0]
            .as_str()
            .unwrap_or_default()
            .contains("Tidy operation successfully started")
    );
    let mut status = 0;
    for _ in 0..50 {
        status = vault
            .call("GET", &format!("pki_int/cert/{expired}"), None, None)
            .await
            .status;
        if status == 404 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(status, 404, "the expired certificate's DER is gone");
    assert_eq!(
        vault
            .call("GET", &format!("pki_int/cert/{live}"), None, None)
            .await
            .status,
        200,
        "a live certificate is untouched"
    );
    let keys = vault
        .call("LIST", "pki_int/certs", Some(&vault.token), None)
        .await
        .json()["data"]["keys"]
        .clone();
    assert!(
        keys.as_array().expect("keys").contains(&json!(expired)),
        "the ledger row remains for reports"
    );
}

/// Kubernetes auth with no local keys: the server asks the API server (TokenReview). No API
/// server runs here, so `conformance::kubernetes::TokenReviewServer` plays its TokenReview
/// endpoint over real HTTPS; the server's production client talks to it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubernetes_login_through_token_review() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let (_server, vault, signer) = setup(dir).await;
    let reviewer_signer =
        AccountKey::rsa_from_pkcs8(&std::fs::read(dir.join("sa.p8.der")).expect("key"));
    let api =
        conformance::kubernetes::TokenReviewServer::start(reviewer_signer, "reviewer-sa-token")
            .await;

    // Reconfigure without pem_keys: kubernetes_host + CA + reviewer token.
    vault
        .root(
            "POST",
            "auth/kubernetes/config",
            json!({"kubernetes_host": format!("https://{}", api.addr),
                   "kubernetes_ca_cert": api.ca_pem, "token_reviewer_jwt": "reviewer-sa-token"}),
        )
        .await;
    let config = vault
        .call("GET", "auth/kubernetes/config", Some(&vault.token), None)
        .await;
    assert_eq!(config.status, 200);
    assert!(
        !config.text().contains("reviewer-sa-token"),
        "the reviewer token is never returned"
    );
    vault
        .root(
            "POST",
            "auth/kubernetes/role/reviewed",
            json!({"bound_service_account_names": "api", "bound_service_account_namespaces": "payments",
                   "audience": "ca-server", "token_policies": "default", "ttl": "5m"}),
        )
        .await;
    let login = |jwt: String| {
        let vault = &vault;
        async move { vault.kubernetes_login("reviewed", &jwt).await }
    };

    let ok = login(service_account_token(
        &signer,
        "payments",
        "api",
        "ca-server",
        600,
    ))
    .await;
    assert_eq!(ok.status, 200, "{}", ok.text());
    let meta = &ok.json()["auth"]["metadata"];
    assert_eq!(meta["service_account_name"], "api");
    assert_eq!(meta["service_account_namespace"], "payments");
    assert_eq!(
        meta["service_account_uid"],
        "0b7a1c2d-1111-2222-3333-444455556666"
    );
    assert!(
        api.reviews.load(std::sync::atomic::Ordering::Relaxed) >= 1,
        "the API server was asked"
    );

    for (jwt, why) in [
        (
            service_account_token(&signer, "payments", "api", "ca-server", -60),
            "expired",
        ),
        (
            service_account_token(&signer, "payments", "api", "someone-else", 600),
            "wrong audience",
        ),
        (
            service_account_token(&signer, "payments", "web", "ca-server", 600),
            "not bound to the role",
        ),
    ] {
        let r = login(jwt).await;
        assert_eq!(r.status, 403, "{why}: {}", r.text());
    }
    // A token from another signer is not one the API server vouches for.
    let foreign = AccountKey::rsa_from_pkcs8(&conformance::openssl::pkcs8_key(
        dir,
        "foreign",
        &["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"],
    ));
    let r = login(service_account_token(
        &foreign,
        "payments",
        "api",
        "ca-server",
        600,
    ))
    .await;
    assert_eq!(r.status, 403, "{}", r.text());

    // The API server unreachable: try again later (503), not "permission denied".
    drop(api);
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let r = login(service_account_token(
        &signer,
        "payments",
        "api",
        "ca-server",
        600,
    ))
    .await;
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(r.json()["errors"].is_array());
}
