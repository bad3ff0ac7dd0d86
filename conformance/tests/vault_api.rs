//! The Vault-compatible API as cert-manager's `vault` issuer uses it, replayed call by call, plus
//! SPIFFE identity enforcement and Vault's conventions (LIST, errors, envelopes).
//!
//! Test double, stated plainly: no Kubernetes API server runs on these machines, so this test
//! plays the cluster's service-account token signer (`conformance::kubernetes`). It gives the
//! server the public key through `auth/kubernetes/config` (`pem_keys`, as an operator would from
//! the API server's JWKS); the server verifies tokens with its production code path.

use std::path::Path;

use conformance::acme::AccountKey;
use conformance::kubernetes::{service_account_token, service_account_token_with};
use conformance::ledger::Snapshot;
use conformance::openssl::{openssl, p256_csr, pkcs8_key, serial_bytes, serial_hex, verify};
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

    let store = conformance::ledger::open(&server.data_dir, server_args).await;
    let mut issued: Vec<String> = Vec::new();
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
        let serial = data["serial_number"].as_str().expect("serial").to_owned();
        assert!(serial.contains(':'), "{serial}");
        // 2160h asked, 2160h the role's maximum: that long, give or take the signing time.
        let expiration = data["expiration"].as_i64().expect("expiration");
        let wanted = now() + 2160 * 3600;
        assert!(
            (wanted - 120..=wanted + 5).contains(&expiration),
            "{expiration} is not 2160h from now"
        );
        let row = conformance::ledger::row(&store, &serial_bytes(&serial)).await;
        assert_eq!(
            row.certificate.dns_names,
            [format!("{name}.default.svc.cluster.local")]
        );
        assert_eq!(row.certificate.not_after, expiration);
        issued.push(serial);
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
    // A name outside the role is a 400 with Vault's wording; neither refusal writes anything.
    let before = Snapshot::take(&store).await;
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
    before
        .assert_unchanged(&store, "signing refused by the role")
        .await;
    assert!(
        conformance::ledger::rows_naming(&store, "evil.example.com")
            .await
            .is_empty()
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
    // The two signings and the server's own serving certificate, nothing else.
    let keys: std::collections::BTreeSet<Vec<u8>> = r.json()["data"]["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .map(|k| serial_bytes(k.as_str().expect("serial")))
        .collect();
    assert_eq!(
        keys.len(),
        3,
        "web, api and the serving certificate: {keys:?}"
    );
    assert!(
        issued.iter().all(|s| keys.contains(&serial_bytes(s))),
        "{issued:?} not all in {keys:?}"
    );
    // Revocation reaches the ledger and the cert endpoint.
    let serial = issued[1].clone();
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
    let listed: Vec<String> = conformance::crl::parse(&crl_text).into_keys().collect();
    assert_eq!(
        listed,
        [serial_hex(&serial_bytes(&serial))],
        "exactly the revoked certificate: {crl_text}"
    );
    assert!(crl_text.contains("X509v3 CRL Number"));
    assert_eq!(
        conformance::ledger::row(&store, &serial_bytes(&serial))
            .await
            .revocation_reason,
        Some(0),
        "Vault's revoke gives no reason: unspecified"
    );
    assert!(
        conformance::ledger::row(&store, &serial_bytes(&issued[0]))
            .await
            .revoked_at
            .is_none()
    );
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
    let crl_verify = |leaf: &str| {
        let out = conformance::process::output_within(
            std::process::Command::new("openssl")
                .current_dir(dir)
                .args([
                    "verify",
                    "-crl_check",
                    "-CAfile",
                    "root-and-crl.pem",
                    "-untrusted",
                    "intermediate.pem",
                    leaf,
                ]),
            conformance::process::QUICK,
        );
        (
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    };
    let (ok, said) = crl_verify("revoked.pem");
    assert!(!ok && said.contains("certificate revoked"), "{said}");
    // The same check passes a certificate that was not revoked: the refusal above is the CRL's.
    let r = vault
        .call("GET", &format!("pki_int/cert/{}", issued[0]), None, None)
        .await;
    std::fs::write(
        dir.join("kept.pem"),
        r.json()["data"]["certificate"].as_str().expect("pem"),
    )
    .expect("write");
    let (ok, said) = crl_verify("kept.pem");
    assert!(ok, "{said}");
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
    let (server, vault, signer) = setup(dir).await;
    let store = conformance::ledger::open(&server.data_dir, &[]).await;
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
    let before = Snapshot::take(&store).await;
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
    before
        .assert_unchanged(&store, "another workload's SPIFFE ID")
        .await;
    assert!(
        conformance::ledger::rows_naming(&store, "spiffe://cluster.local/ns/billing/sa/api")
            .await
            .is_empty()
    );

    // Verified with the local key (pem_keys): expired token, wrong audience, foreign signing
    // key, another issuer, a subject naming another account: refused at login by the server's
    // own checks (auth/kubernetes.rs), the same token otherwise logging in.
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
    assert_eq!(
        login(service_account_token_with(&signer, json!({})))
            .await
            .status,
        200,
        "the control: the unforged token logs in"
    );
    for (patch, why) in [
        (json!({"iss": "https://evil.example"}), "another issuer"),
        (json!({"iss": null}), "no issuer"),
        (
            json!({"sub": "system:serviceaccount:kube-system:admin"}),
            "a subject naming another account",
        ),
        (json!({"nbf": now() + 3600}), "not yet valid"),
        (json!({"exp": "never"}), "a malformed expiry"),
    ] {
        let r = login(service_account_token_with(&signer, patch)).await;
        assert_eq!(r.status, 403, "{why}: {}", r.text());
    }
    // The root token has no service-account identity: no SPIFFE ID for it either.
    let before = Snapshot::take(&store).await;
    let r = vault
        .call(
            "POST",
            "pki_int/sign/svid",
            Some(&vault.token),
            Some(json!({"csr": own})),
        )
        .await;
    assert_eq!(r.status, 403, "{}", r.text());
    before
        .assert_unchanged(&store, "the root token on an identity role")
        .await;
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
    let mut cmd = std::process::Command::new(python);
    // Checks are explicit (hvac_flow.py's `check`), but no inherited PYTHONOPTIMIZE either.
    cmd.env_remove("PYTHONOPTIMIZE")
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
        .env("CSR_FILE", dir.join("app.csr"));
    let out = conformance::process::output_within(&mut cmd, conformance::process::CLIENT);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && text.contains("hvac flow: ok"),
        "{text}"
    );
    // What the script says it saw, checked here too: the revoked serial is the one in the CRL.
    let revoked: Vec<String> = text
        .lines()
        .filter_map(|l| l.strip_prefix("revoked: "))
        .map(str::to_owned)
        .collect();
    assert_eq!(revoked.len(), 1, "{text}");
    let crl = conformance::crl::fetch(&server.http_url(), dir);
    assert_eq!(
        crl.entries.keys().cloned().collect::<Vec<_>>(),
        [serial_hex(&serial_bytes(&revoked[0]))],
        "{}",
        crl.text
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
    let vault_ref = &vault;
    let expired_ref = &expired;
    conformance::wait::until_async(
        "tidy removing the expired certificate's DER (404)",
        std::time::Duration::from_secs(30),
        std::time::Duration::from_millis(100),
        || async move {
            let status = vault_ref
                .call("GET", &format!("pki_int/cert/{expired_ref}"), None, None)
                .await
                .status;
            assert!(status == 200 || status == 404, "{status}");
            (status == 404).then_some(())
        },
    )
    .await;
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
/// endpoint over real HTTPS; the server's production client talks to it. The double's own
/// verdicts (signature, expiry, audiences) are the API server's; ca-server's checks of the reply
/// (the audience it asked for, the username's form, the role's bindings) are exercised with
/// scripted replies, and so is the API server refusing the reviewer's credential.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubernetes_login_through_token_review() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let (_server, vault, signer) = setup(dir).await;
    let reviewer_signer =
        AccountKey::rsa_from_pkcs8(&std::fs::read(dir.join("sa.p8.der")).expect("key"));
    let mut api =
        conformance::kubernetes::TokenReviewServer::start(reviewer_signer, "reviewer-sa-token")
            .await;

    // Reconfigure without pem_keys: kubernetes_host + CA + reviewer token.
    let configure = |reviewer: &'static str| {
        let (vault, host, ca) = (&vault, format!("https://{}", api.addr), api.ca_pem.clone());
        async move {
            vault
                .root(
                    "POST",
                    "auth/kubernetes/config",
                    json!({"kubernetes_host": host, "kubernetes_ca_cert": ca,
                           "token_reviewer_jwt": reviewer}),
                )
                .await;
        }
    };
    configure("reviewer-sa-token").await;
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
    vault
        .root(
            "POST",
            "auth/kubernetes/role/anyone",
            json!({"bound_service_account_names": "*", "bound_service_account_namespaces": "*",
                   "audience": "ca-server", "token_policies": "default", "ttl": "5m"}),
        )
        .await;
    vault
        .root(
            "POST",
            "auth/kubernetes/role/any-audience",
            json!({"bound_service_account_names": "api", "bound_service_account_namespaces": "payments",
                   "token_policies": "default", "ttl": "5m"}),
        )
        .await;
    let login = |jwt: String| {
        let vault = &vault;
        async move { vault.kubernetes_login("reviewed", &jwt).await }
    };
    let good = || service_account_token(&signer, "payments", "api", "ca-server", 600);

    let jwt = good();
    let ok = login(jwt.clone()).await;
    assert_eq!(ok.status, 200, "{}", ok.text());
    let meta = &ok.json()["auth"]["metadata"];
    assert_eq!(meta["service_account_name"], "api");
    assert_eq!(meta["service_account_namespace"], "payments");
    assert_eq!(meta["service_account_uid"], conformance::kubernetes::UID);
    // What the API server was asked: this token, for the role's audience, with the reviewer's
    // credential.
    assert_eq!(
        api.last_request(),
        Some((
            Some("Bearer reviewer-sa-token".to_owned()),
            json!({"token": jwt, "audiences": ["ca-server"]})
        ))
    );
    // A role without an audience asks for none (the API server's defaults apply).
    let jwt = service_account_token(
        &signer,
        "payments",
        "api",
        conformance::kubernetes::ISSUER,
        600,
    );
    let r = vault.kubernetes_login("any-audience", &jwt).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        api.last_request().map(|(_, spec)| spec),
        Some(json!({"token": jwt, "audiences": null}))
    );

    // The API server's verdicts: a token it did not sign, an expired one, one for another
    // audience. ca-server takes its word: denied, never issued a token.
    let foreign = AccountKey::rsa_from_pkcs8(&conformance::openssl::pkcs8_key(
        dir,
        "foreign",
        &["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"],
    ));
    for (jwt, why) in [
        (
            service_account_token(&foreign, "payments", "api", "ca-server", 600),
            "another signer",
        ),
        (
            service_account_token(&signer, "payments", "api", "ca-server", -60),
            "expired",
        ),
        (
            service_account_token(&signer, "payments", "api", "someone-else", 600),
            "another audience",
        ),
    ] {
        let r = login(jwt).await;
        assert_eq!(
            r.status,
            403,
            "the API server said no ({why}): {}",
            r.text()
        );
    }

    // ca-server's own checks of an authenticated reply.
    let reply = |username: &str, audiences: Value| {
        json!({"authenticated": true, "audiences": audiences,
               "user": {"username": username, "uid": "u-1", "groups": ["system:serviceaccounts"]}})
    };
    api.answer_with(Some(reply(
        "system:serviceaccount:payments:api",
        json!(["ca-server"]),
    )));
    assert_eq!(
        login(good()).await.status,
        200,
        "the control: a scripted reply like the API server's logs in"
    );
    // Through a role binding every service account (`*`), so only the reply's form decides.
    assert_eq!(
        vault.kubernetes_login("anyone", &good()).await.status,
        200,
        "the control on the wildcard role"
    );
    for (role, status, why) in [
        (
            "anyone",
            reply(
                "system:serviceaccount:payments:api",
                json!(["someone-else"]),
            ),
            "the audience asked for is not confirmed",
        ),
        (
            "anyone",
            reply("system:serviceaccount:payments:api", json!(null)),
            "no audiences (an API server that ignored spec.audiences)",
        ),
        (
            "anyone",
            reply("system:node:worker-1", json!(["ca-server"])),
            "a node",
        ),
        ("anyone", reply("alice", json!(["ca-server"])), "a user"),
        (
            "anyone",
            reply("system:serviceaccount:payments", json!(["ca-server"])),
            "no name",
        ),
        (
            "anyone",
            reply("system:serviceaccount::", json!(["ca-server"])),
            "empty namespace and name",
        ),
        (
            "anyone",
            reply("system:serviceaccount:payments:api:x", json!(["ca-server"])),
            "a name with a colon",
        ),
        (
            "reviewed",
            reply("system:serviceaccount:payments:web", json!(["ca-server"])),
            "a service account the role does not bind",
        ),
    ] {
        api.answer_with(Some(status));
        let r = vault.kubernetes_login(role, &good()).await;
        assert_eq!(r.status, 403, "{why}: {}", r.text());
        assert_eq!(r.json()["errors"], json!(["permission denied"]), "{why}");
    }
    api.answer_with(None);

    // The API server refusing the reviewer's credential (401) is the server's problem, not the
    // client's: try again later (503), not "permission denied".
    configure("wrong-reviewer-token").await;
    let reviewed = api.reviews.load(std::sync::atomic::Ordering::Relaxed);
    let r = login(good()).await;
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(
        api.reviews.load(std::sync::atomic::Ordering::Relaxed),
        reviewed,
        "the API server answered 401, it reviewed nothing"
    );
    configure("reviewer-sa-token").await;
    assert_eq!(login(good()).await.status, 200);

    // The API server unreachable: 503 too.
    let addr = api.addr;
    api.stop().await;
    assert!(
        std::net::TcpStream::connect(addr).is_err(),
        "the double no longer listens"
    );
    let r = login(good()).await;
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(r.json()["errors"].is_array());
}
