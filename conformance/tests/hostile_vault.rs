//! The Vault surface attacked: policies that say less than they seem (comments, parameter
//! constraints, unsupported keys), denied paths in other spellings, root tokens from logins and
//! children, the token tree, every role rule (e-mail addresses included), hostile sizes and
//! characters, the ledger API and the plain-HTTP listener. Each refusal is checked for its exact
//! error and for leaving the ledger as it was.

use std::path::Path;

use conformance::acme::AccountKey;
use conformance::kubernetes::service_account_token;
use conformance::openssl::{curl_http, openssl, pkcs8_key};
use conformance::server::{CaServer, run};
use conformance::vault::{Vault, curl_post, errors, ledger_total};
use serde_json::json;

async fn start(dir: &Path) -> (CaServer, Vault) {
    let server = CaServer::start(&dir.join("data"), &[]);
    let vault = Vault::connect(&server);
    vault
        .root(
            "POST",
            "pki_int/roles/web",
            json!({"allowed_domains": "svc.cluster.local", "allow_subdomains": true,
                   "key_type": "any", "require_cn": false}),
        )
        .await;
    vault
        .root(
            "POST",
            "pki_int/roles/admin",
            json!({"allow_any_name": true, "key_type": "any", "enforce_hostnames": false}),
        )
        .await;
    (server, vault)
}

fn csr(dir: &Path, name: &str, subject: &str, san: &str) -> String {
    conformance::openssl::p256_csr(dir, name, subject, Some(san));
    std::fs::read_to_string(dir.join(format!("{name}.csr"))).expect("csr")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policies_mean_what_they_say() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (server, vault) = start(tmp.path()).await;
    let before = ledger_total(&server.data_dir, &[]);

    // A commented-out rule grants nothing; the live one still works.
    vault
        .policy(
            "commented",
            "# path \"pki_int/issue/web\" { capabilities = [\"update\"] }\n\
             // path \"pki_int/sign/web\" { capabilities = [\"update\"] }\n\
             /* path \"pki_int/*\" { capabilities = [\"update\"] } */\n\
             path \"pki_int/roles/+\" { capabilities = [\"read\"] }\n",
        )
        .await;
    let t = vault.token_with(&["commented"]).await;
    let r = vault
        .call(
            "POST",
            "pki_int/issue/web",
            Some(&t),
            Some(json!({"common_name": "a.svc.cluster.local"})),
        )
        .await;
    assert_eq!(
        (r.status, errors(&r)),
        (403, vec!["permission denied".to_owned()])
    );
    assert_eq!(
        vault
            .call("GET", "pki_int/roles/web", Some(&t), None)
            .await
            .status,
        200
    );

    // allowed_parameters limits common_name (and every other parameter).
    vault
        .policy(
            "one-name",
            "path \"pki_int/issue/web\" {\n  capabilities = [\"update\"]\n  allowed_parameters = {\n    \"common_name\" = [\"a.svc.cluster.local\"]\n  }\n}\n",
        )
        .await;
    let t = vault.token_with(&["one-name"]).await;
    let issue = |cn: &str, extra: Option<(&str, &str)>| {
        let mut body = json!({"common_name": cn});
        if let Some((k, v)) = extra {
            body[k] = json!(v);
        }
        body
    };
    let r = vault
        .call(
            "POST",
            "pki_int/issue/web",
            Some(&t),
            Some(issue("b.svc.cluster.local", None)),
        )
        .await;
    assert_eq!(r.status, 403, "{}", r.text());
    let r = vault
        .call(
            "POST",
            "pki_int/issue/web",
            Some(&t),
            Some(issue(
                "a.svc.cluster.local",
                Some(("alt_names", "b.svc.cluster.local")),
            )),
        )
        .await;
    assert_eq!(
        r.status,
        403,
        "a parameter the policy does not list: {}",
        r.text()
    );
    let r = vault
        .call(
            "POST",
            "pki_int/issue/web?common_name=b.svc.cluster.local",
            Some(&t),
            Some(json!({"COMMON_NAME": "b.svc.cluster.local"})),
        )
        .await;
    assert_eq!(r.status, 403, "other key spellings: {}", r.text());
    assert_eq!(
        ledger_total(&server.data_dir, &[]),
        before,
        "nothing issued yet"
    );
    let r = vault
        .call(
            "POST",
            "pki_int/issue/web",
            Some(&t),
            Some(issue("a.svc.cluster.local", None)),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let before = before + 1;

    // What the server cannot enforce is refused, not stored.
    let r = vault
        .call(
            "PUT",
            "sys/policy/wrapped",
            Some(&vault.token),
            Some(json!({"policy": "path \"pki_int/*\" {\n  capabilities = [\"update\"]\n  min_wrapping_ttl = \"1m\"\n}\n"})),
        )
        .await;
    assert_eq!(r.status, 400);
    assert!(errors(&r)[0].contains("min_wrapping_ttl"), "{}", r.text());
    assert_eq!(
        vault
            .call("GET", "sys/policy/wrapped", Some(&vault.token), None)
            .await
            .status,
        404
    );

    // A broad allow with a narrow deny, and the denied paths in every spelling.
    const BROAD: &str = "path \"pki_int/*\" {\n  capabilities = [\"create\", \"update\", \"read\"]\n}\n\
             path \"pki_int/sign/admin\" {\n  capabilities = [\"deny\"]\n}\n\
             path \"sys/policy/*\" {\n  capabilities = [\"create\", \"update\", \"read\"]\n}\n\
             path \"sys/policy/broad\" {\n  capabilities = [\"deny\"]\n}\n";
    vault.policy("broad", BROAD).await;
    let t = vault.token_with(&["broad"]).await;
    let admin_csr = csr(
        tmp.path(),
        "adm",
        "/CN=x.svc.cluster.local",
        "DNS:x.svc.cluster.local",
    );
    let body = json!({"csr": admin_csr}).to_string().into_bytes();
    for spelling in [
        "/v1/pki_int/sign/admin",
        "/v1/pki_int//sign/admin",
        "/v1//pki_int/sign//admin/",
        "/v1/pki_int/./sign/admin",
        "/v1/pki_int/roles/../sign/admin",
        "/v1/pki_int%2Fsign%2Fadmin",
        "/v1/pki_int/sign%2fadmin",
        "/v1/pki_int/%73ign/admin",
    ] {
        let r = vault.raw("POST", spelling, Some(&t), body.clone()).await;
        assert_eq!(r.status, 403, "{spelling}: {}", r.text());
    }
    let r = vault
        .raw(
            "POST",
            "/v1/pki_int/%2e%2e/../sign/admin",
            Some(&t),
            body.clone(),
        )
        .await;
    assert_eq!(r.status, 400, "climbing above the root: {}", r.text());
    // The allowed neighbour, in an odd spelling, works: the spelling is not the refusal.
    let r = vault
        .raw("POST", "/v1/pki_int//sign/web", Some(&t), body.clone())
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let before = before + 1;
    let own = "path \"*\" {\n  capabilities = [\"sudo\", \"create\", \"update\", \"read\", \"delete\", \"list\"]\n}\n";
    for spelling in [
        "/v1/sys/policy/broad",
        "/v1/sys/policy//broad",
        "/v1/sys//policy/./broad",
    ] {
        let r = vault
            .raw(
                "PUT",
                spelling,
                Some(&t),
                json!({"policy": own}).to_string().into_bytes(),
            )
            .await;
        assert_eq!(r.status, 403, "{spelling}: {}", r.text());
    }
    let stored = vault
        .call("GET", "sys/policy/broad", Some(&vault.token), None)
        .await;
    assert_eq!(stored.status, 200, "{}", stored.text());
    assert_eq!(
        stored.json()["data"]["policy"],
        BROAD,
        "the denied writes left the policy exactly as it was"
    );
    // The deny is narrow: the same token writes a neighbouring policy.
    let r = vault
        .raw(
            "PUT",
            "/v1/sys/policy/neighbour",
            Some(&t),
            json!({"policy": "path \"pki_int/roles/+\" { capabilities = [\"read\"] }"})
                .to_string()
                .into_bytes(),
        )
        .await;
    assert!(r.status < 300, "{}", r.text());
    assert_eq!(
        ledger_total(&server.data_dir, &[]),
        before,
        "refusals wrote nothing"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn root_tokens_come_only_from_the_operator() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (mut server, vault) = start(tmp.path()).await;

    // No auth role may hand out root.
    for (path, body) in [
        (
            "auth/approle/role/escalate",
            json!({"token_policies": "root"}),
        ),
        (
            "auth/approle/role/escalate2",
            json!({"policies": ["default", "Root"]}),
        ),
        (
            "auth/kubernetes/role/escalate",
            json!({"bound_service_account_names": "*", "bound_service_account_namespaces": "*", "token_policies": "root"}),
        ),
    ] {
        let r = vault
            .call("POST", path, Some(&vault.token), Some(body))
            .await;
        assert_eq!(r.status, 400, "{path}: {}", r.text());
        assert!(
            errors(&r)[0].contains("cannot create root tokens"),
            "{}",
            r.text()
        );
        assert_eq!(
            vault
                .call("GET", path, Some(&vault.token), None)
                .await
                .status,
            404
        );
    }

    // A token may not create root, nor give its children policies it lacks.
    vault
        .policy(
            "maker",
            "path \"auth/token/create\" {\n  capabilities = [\"update\"]\n}\npath \"auth/token/create-orphan\" {\n  capabilities = [\"update\"]\n}\n",
        )
        .await;
    let maker = vault.token_with(&["maker"]).await;
    for policies in [json!(["root"]), json!(["maker", "admin"])] {
        let r = vault
            .call(
                "POST",
                "auth/token/create",
                Some(&maker),
                Some(json!({"policies": policies})),
            )
            .await;
        assert_eq!(r.status, 400, "{policies}: {}", r.text());
    }
    let r = vault
        .call(
            "POST",
            "auth/token/create-orphan",
            Some(&maker),
            Some(json!({})),
        )
        .await;
    assert_eq!(
        r.status,
        403,
        "orphans escape the tree: sudo only: {}",
        r.text()
    );
    // Metadata cannot claim a workload identity: refused, not silently dropped.
    let r = vault
        .call(
            "POST",
            "auth/token/create",
            Some(&maker),
            Some(json!({"meta": {"auth_method": "kubernetes", "service_account_namespace": "kube-system", "service_account_name": "admin"}})),
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(
        errors(&r)[0].contains("meta is not accepted"),
        "{}",
        r.text()
    );

    // The root token is revocable; the operator mints another on purpose.
    let r = vault
        .call("POST", "auth/token/revoke-self", Some(&vault.token), None)
        .await;
    assert_eq!(r.status, 204, "{}", r.text());
    let r = vault
        .call("LIST", "sys/policy", Some(&vault.token), None)
        .await;
    assert_eq!(r.status, 403, "a revoked root token is gone");
    let r = vault
        .call("GET", "auth/token/lookup-self", Some(&maker), None)
        .await;
    assert_eq!(r.status, 403, "its children went with it");
    let out = run(&[
        "--data-dir",
        server.data_dir.to_str().expect("utf-8"),
        "token",
        "root",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let fresh = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let r = vault.call("LIST", "sys/policy", Some(&fresh), None).await;
    assert_eq!(r.status, 200, "{}", r.text());

    // Restarting without the token file makes no new root token.
    std::fs::remove_file(server.data_dir.join("root-token")).expect("rm");
    server.terminate();
    let server = CaServer::start(&server.data_dir, &[]);
    assert!(!server.data_dir.join("root-token").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_form_a_tree() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (_server, vault) = start(tmp.path()).await;
    vault
        .policy(
            "parent",
            "path \"auth/token/create\" {\n  capabilities = [\"update\"]\n}\npath \"pki_int/roles/+\" {\n  capabilities = [\"read\"]\n}\n",
        )
        .await;
    let r = vault
        .root(
            "POST",
            "auth/token/create",
            json!({"policies": ["parent"], "ttl": "1h"}),
        )
        .await;
    let parent = r.json()["auth"]["client_token"]
        .as_str()
        .expect("token")
        .to_owned();
    let parent_accessor = r.json()["auth"]["accessor"]
        .as_str()
        .expect("accessor")
        .to_owned();
    let r = vault
        .call(
            "POST",
            "auth/token/create",
            Some(&parent),
            Some(json!({"ttl": "100h"})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let child = r.json()["auth"]["client_token"]
        .as_str()
        .expect("token")
        .to_owned();
    let ttl = vault
        .call("GET", "auth/token/lookup-self", Some(&child), None)
        .await
        .json()["data"]["ttl"]
        .as_i64()
        .expect("ttl");
    // Capped to the parent's remaining hour, not 0 (which would mean "never expires").
    assert!(
        (3500..=3600).contains(&ttl),
        "a child never outlives its parent: {ttl}"
    );
    let grandchild = vault
        .call("POST", "auth/token/create", Some(&child), Some(json!({})))
        .await
        .json()["auth"]["client_token"]
        .as_str()
        .expect("token")
        .to_owned();
    assert_eq!(
        vault
            .call("GET", "pki_int/roles/web", Some(&grandchild), None)
            .await
            .status,
        200
    );

    let r = vault
        .root(
            "POST",
            "auth/token/revoke-accessor",
            json!({"accessor": parent_accessor}),
        )
        .await;
    assert_eq!(r.status, 204);
    for t in [&parent, &child, &grandchild] {
        let r = vault.call("GET", "pki_int/roles/web", Some(t), None).await;
        assert_eq!(r.status, 403, "revoked with the tree: {}", r.text());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_name_a_role_is_asked_for_is_checked() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let (server, vault) = start(dir).await;
    let before = ledger_total(&server.data_dir, &[]);
    let refused = |r: &conformance::acme::Response, what: &str| {
        assert_eq!(r.status, 400, "{what}: {}", r.text());
        let e = errors(r);
        assert_eq!(e.len(), 1, "{what}: {e:?}");
        e[0].clone()
    };

    // E-mail addresses: in the CN, in alt_names, in a CSR.
    let r = vault
        .root_call(
            "pki_int/issue/web",
            json!({"common_name": "ceo@bank.example"}),
        )
        .await;
    assert_eq!(
        refused(&r, "CN e-mail"),
        "subject alternate name ceo@bank.example not allowed by this role"
    );
    let r = vault
        .root_call(
            "pki_int/issue/web",
            json!({"common_name": "web.svc.cluster.local", "alt_names": "web.svc.cluster.local,ceo@bank.example"}),
        )
        .await;
    assert_eq!(
        refused(&r, "alt_names e-mail"),
        "subject alternate name ceo@bank.example not allowed by this role"
    );
    let with_email = csr(
        dir,
        "email",
        "/CN=web.svc.cluster.local",
        "DNS:web.svc.cluster.local,email:ceo@bank.example",
    );
    let r = vault
        .root_call("pki_int/sign/web", json!({"csr": with_email}))
        .await;
    assert_eq!(
        refused(&r, "CSR e-mail"),
        "subject alternate name ceo@bank.example not allowed by this role"
    );
    // An e-mail inside the role's domain is fine.
    let r = vault
        .root_call(
            "pki_int/issue/web",
            json!({"common_name": "web.svc.cluster.local", "alt_names": "ops@web.svc.cluster.local"}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let mut total = before + 1;

    // Sizes and characters, on a role that allows any name.
    let many: Vec<String> = (0..1000).map(|i| format!("n{i}.example.test")).collect();
    let r = vault
        .root_call(
            "pki_int/issue/admin",
            json!({"common_name": "n0.example.test", "alt_names": many.join(",")}),
        )
        .await;
    assert!(refused(&r, "1000 names").contains("1000 subject alternative names"));
    let r = vault
        .root_call(
            "pki_int/issue/admin",
            json!({"common_name": "a".repeat(100 * 1024)}),
        )
        .await;
    assert!(refused(&r, "100 KB CN").contains("characters long; the limit is 64"));
    for cn in ["a.example.test\u{0}.evil.test", "web\u{1b}[2J", "tab\there"] {
        let r = vault
            .root_call("pki_int/issue/admin", json!({"common_name": cn}))
            .await;
        assert_eq!(
            refused(&r, "control character"),
            "CN contains a control character"
        );
    }
    let r = vault
        .raw(
            "POST",
            "/v1/pki_int/issue/admin",
            Some(&vault.token),
            b"{\"common_name\": \"caf\xe9.example.test\"}".to_vec(),
        )
        .await;
    assert!(refused(&r, "invalid UTF-8").starts_with("failed to parse JSON input"));
    let r = vault
        .root_call(
            "pki_int/issue/web",
            json!({"common_name": "web.svc.cluster.local", "ip_sans": "10.0.0.300"}),
        )
        .await;
    assert_eq!(
        refused(&r, "bad IP"),
        "\"10.0.0.300\" is not a valid IP address"
    );
    let r = vault
        .root_call("pki_int/issue/web", json!({"common_name": "web.svc.cluster.local", "uri_sans": "spiffe://cluster.local/ns/a/sa/b"}))
        .await;
    assert!(refused(&r, "URI").starts_with("URI Subject Alternative Names are not allowed"));
    let r = vault
        .root_call("pki_int/issue/web", json!({"common_name": "web.svc.cluster.local", "other_sans": "1.3.6.1.4.1.311.20.2.3;UTF8:admin@corp"}))
        .await;
    assert!(refused(&r, "other SAN").contains("other SANs are not supported"));
    assert_eq!(
        ledger_total(&server.data_dir, &[]),
        total,
        "refusals wrote nothing"
    );

    // A workload on an identity role: its own SPIFFE ID, no e-mail riding along.
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
            json!({"pem_keys": [public]}),
        )
        .await;
    vault
        .policy(
            "svid",
            "path \"pki_int/sign/svid\" {\n  capabilities = [\"update\"]\n}\n",
        )
        .await;
    vault
        .root(
            "POST",
            "auth/kubernetes/role/workloads",
            json!({"bound_service_account_names": "*", "bound_service_account_namespaces": "*", "token_policies": "svid"}),
        )
        .await;
    vault
        .root(
            "POST",
            "pki_int/roles/svid",
            json!({"spiffe_from_identity": true, "require_cn": false, "key_type": "any", "allow_localhost": false}),
        )
        .await;
    let jwt = service_account_token(&signer, "payments", "api", "", 600);
    let r = vault
        .call(
            "POST",
            "auth/kubernetes/login",
            None,
            Some(json!({"role": "workloads", "jwt": jwt})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let token = r.json()["auth"]["client_token"]
        .as_str()
        .expect("token")
        .to_owned();
    let svid_with_email = csr(
        dir,
        "svid-email",
        "/",
        "URI:spiffe://cluster.local/ns/payments/sa/api,email:ceo@bank.example",
    );
    let r = vault
        .call(
            "POST",
            "pki_int/sign/svid",
            Some(&token),
            Some(json!({"csr": svid_with_email})),
        )
        .await;
    assert_eq!(
        refused(&r, "e-mail in an SVID"),
        "subject alternate name ceo@bank.example not allowed by this role"
    );
    let svid = csr(
        dir,
        "svid",
        "/",
        "URI:spiffe://cluster.local/ns/payments/sa/api",
    );
    let r = vault
        .call(
            "POST",
            "pki_int/sign/svid",
            Some(&token),
            Some(json!({"csr": svid})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    total += 1;
    assert_eq!(ledger_total(&server.data_dir, &[]), total);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ledger_api_and_plain_http() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (server, vault) = start(tmp.path()).await;
    let r = vault.call("GET", "ledger/certificates", None, None).await;
    assert_eq!(
        (r.status, errors(&r)),
        (403, vec!["permission denied".to_owned()])
    );
    let nothing = vault.token_with(&["default"]).await;
    assert_eq!(
        vault
            .call("GET", "ledger/summary", Some(&nothing), None)
            .await
            .status,
        403
    );
    vault
        .policy(
            "reports",
            "path \"ledger/*\" {\n  capabilities = [\"read\"]\n}\n",
        )
        .await;
    let reader = vault.token_with(&["reports"]).await;
    assert_eq!(
        vault
            .call("GET", "ledger/summary", Some(&reader), None)
            .await
            .status,
        200
    );
    let r = vault
        .call("GET", "ledger/certificates?limit=5000", Some(&reader), None)
        .await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(
        vault
            .call("POST", "ledger/summary", Some(&reader), Some(json!({})))
            .await
            .status,
        403,
        "read only"
    );

    // Plain HTTP: public material, nothing else — not even with a token, and a POST that would
    // issue over HTTPS issues nothing here.
    let before = ledger_total(&server.data_dir, &[]);
    let out = conformance::process::output_within(
        std::process::Command::new("curl")
            .args([
                "-s",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "--max-time",
                "10",
            ])
            .args(["-H", &format!("X-Vault-Token: {}", vault.token)])
            .args([
                "-X",
                "POST",
                "-d",
                r#"{"common_name":"x.svc.cluster.local"}"#,
            ])
            .arg(format!("{}/v1/pki_int/issue/web", server.http_url())),
        conformance::process::QUICK,
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "404",
        "POST over plain HTTP"
    );
    assert_eq!(
        ledger_total(&server.data_dir, &[]),
        before,
        "nothing issued over plain HTTP"
    );
    let r = vault
        .root_call(
            "pki_int/issue/web",
            json!({"common_name": "x.svc.cluster.local"}),
        )
        .await;
    assert_eq!(
        r.status,
        200,
        "the same request over HTTPS issues: {}",
        r.text()
    );
    for path in [
        "/v1/sys/health",
        "/v1/pki_int/issue/web",
        "/v1/ledger/summary",
        "/v1/auth/token/lookup-self",
        "/acme/directory",
    ] {
        let out = conformance::process::output_within(
            std::process::Command::new("curl")
                .args([
                    "-s",
                    "-o",
                    "/dev/null",
                    "-w",
                    "%{http_code}",
                    "--max-time",
                    "10",
                ])
                .args(["-H", &format!("X-Vault-Token: {}", vault.token)])
                .arg(format!("{}{path}", server.http_url())),
            conformance::process::QUICK,
        );
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "404",
            "{path} over plain HTTP"
        );
    }
    for path in ["/healthz", "/ca/bundle.pem", "/ca/chain.pem", "/crl.pem"] {
        assert_eq!(
            curl_http(&format!("{}{path}", server.http_url())).0,
            200,
            "{path}"
        );
    }
}

/// What an outside attacker found against the first version of this layer, each now refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn found_by_attacking_it() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let (server, vault) = start(dir).await;
    let before = ledger_total(&server.data_dir, &[]);

    // Huge TTLs were a panic (date overflow); now a 400, and the server carries on.
    for ttl in [
        json!(9223372036854775807u64),
        json!("2000000000h"),
        json!("999999999999d"),
        json!(-5),
        json!(1.5),
    ] {
        let r = vault
            .root_call(
                "pki_int/issue/web",
                json!({"common_name": "a.svc.cluster.local", "ttl": ttl}),
            )
            .await;
        assert_eq!(r.status, 400, "ttl {ttl}: {}", r.text());
        let r = vault
            .root_call("auth/token/create", json!({"ttl": ttl}))
            .await;
        assert_eq!(r.status, 400, "token ttl {ttl}: {}", r.text());
        let r = vault
            .root_call("auth/approle/role/huge", json!({"token_ttl": ttl}))
            .await;
        assert_eq!(r.status, 400, "role token_ttl {ttl}: {}", r.text());
    }
    // A long but valid TTL is capped (Vault's 768h maximum), not overflowed.
    let r = vault
        .root_call("auth/token/create", json!({"ttl": "100000h"}))
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let lease = r.json()["auth"]["lease_duration"].as_i64().expect("ttl");
    assert!(
        (768 * 3600 - 5..=768 * 3600).contains(&lease),
        "capped at 768h, and not 0 (no expiry): {lease}"
    );

    // sys/health cannot be made to answer 101 (an HTTP/1.1 desync) or 204 with a body.
    let r = vault
        .call("GET", "sys/health?activecode=101", None, None)
        .await;
    assert_eq!(r.status, 400, "{}", r.text());
    let r = vault
        .call("GET", "sys/health?activecode=204", None, None)
        .await;
    assert_eq!((r.status, r.text().len()), (204, 0));

    // not_after is held to the role's max_ttl; ttl and not_after together are refused.
    vault
        .root("POST", "pki_int/roles/short", json!({"allowed_domains": "svc.cluster.local", "allow_subdomains": true, "key_type": "any", "max_ttl": "1h"}))
        .await;
    let far = (time::OffsetDateTime::now_utc() + time::Duration::days(300))
        .format(&time::format_description::well_known::Rfc3339)
        .expect("rfc3339");
    let r = vault
        .root_call(
            "pki_int/issue/short",
            json!({"common_name": "a.svc.cluster.local", "not_after": far}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let expiration = r.json()["data"]["expiration"].as_i64().expect("expiration");
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    assert!(
        (now + 3600 - 60..=now + 3600 + 5).contains(&expiration),
        "held to max_ttl (1h): {expiration} at {now}"
    );
    assert!(r.json()["warnings"].to_string().contains("max_ttl"));
    let r = vault
        .root_call(
            "pki_int/issue/short",
            json!({"common_name": "a.svc.cluster.local", "not_after": far, "ttl": "1h"}),
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.text());
    let before = before + 1;

    // A JSON policy with a repeated key would silently drop its deny: refused.
    let r = vault
        .root_call(
            "sys/policy/pj",
            json!({"policy": r#"{"path": {"pki_int/roles/*": {"capabilities": ["deny"]}}, "path": {"pki_int/*": {"capabilities": ["read"]}}}"#}),
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.text());

    // sign-verbatim may not certify `*.com`; oversized bodies are 413.
    let wild = csr(dir, "wild", "/CN=x.com", "DNS:*.com");
    let r = vault
        .root_call("pki_int/sign-verbatim", json!({"csr": wild}))
        .await;
    assert_eq!(r.status, 400, "{}", r.text());
    let r = vault
        .raw(
            "POST",
            "/v1/pki_int/issue/web",
            Some(&vault.token),
            vec![b' '; 1536 * 1024],
        )
        .await;
    assert_eq!(r.status, 413);
    assert_eq!(
        ledger_total(&server.data_dir, &[]),
        before,
        "refusals wrote nothing"
    );

    // AppRole: a secret ID's use limit holds under concurrent logins…
    vault
        .root(
            "POST",
            "auth/approle/role/limited",
            json!({"token_policies": "default", "secret_id_num_uses": 3}),
        )
        .await;
    let role_id = vault
        .call(
            "GET",
            "auth/approle/role/limited/role-id",
            Some(&vault.token),
            None,
        )
        .await
        .json()["data"]["role_id"]
        .as_str()
        .expect("role_id")
        .to_owned();
    let secret_id = vault
        .root_call("auth/approle/role/limited/secret-id", json!({}))
        .await
        .json()["data"]["secret_id"]
        .as_str()
        .expect("secret_id")
        .to_owned();
    let logins = (0..24).map(|_| {
        let http = conformance::acme::Https::new(
            server.https,
            &format!("localhost:{}", server.https.port()),
            &curl_http(&format!("{}/ca/bundle.pem", server.http_url())).1,
        );
        let body = json!({"role_id": role_id, "secret_id": secret_id}).to_string();
        async move {
            http.request_with(
                "POST",
                "/v1/auth/approle/login",
                &[],
                None,
                body.into_bytes(),
            )
            .await
            .status
        }
    });
    let statuses = futures_join_all(logins).await;
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        3,
        "{statuses:?}"
    );

    // …and a secret ID dies with its role: a role written again under the same name is another
    // role.
    vault
        .root(
            "POST",
            "auth/approle/role/z",
            json!({"token_policies": "default"}),
        )
        .await;
    let old_secret = vault
        .root_call("auth/approle/role/z/secret-id", json!({}))
        .await
        .json()["data"]["secret_id"]
        .as_str()
        .expect("secret_id")
        .to_owned();
    vault.root("DELETE", "auth/approle/role/z", json!({})).await;
    vault
        .policy(
            "p1",
            "path \"pki_int/*\" {\n  capabilities = [\"update\"]\n}\n",
        )
        .await;
    vault
        .root(
            "POST",
            "auth/approle/role/z",
            json!({"token_policies": "p1"}),
        )
        .await;
    let new_role_id = vault
        .call(
            "GET",
            "auth/approle/role/z/role-id",
            Some(&vault.token),
            None,
        )
        .await
        .json()["data"]["role_id"]
        .as_str()
        .expect("role_id")
        .to_owned();
    let r = vault
        .call(
            "POST",
            "auth/approle/login",
            None,
            Some(json!({"role_id": new_role_id, "secret_id": old_secret})),
        )
        .await;
    assert_eq!(
        (r.status, errors(&r)),
        (400, vec!["invalid secret id".to_owned()])
    );

    // Cert auth: a certificate this CA revoked, or one made for servers only, does not log in.
    let bundle = dir.join("bundle.pem");
    std::fs::write(
        &bundle,
        curl_http(&format!("{}/ca/bundle.pem", server.http_url())).1,
    )
    .expect("bundle");
    let issuing = vault
        .call("GET", "pki_int/cert/ca", None, None)
        .await
        .json()["data"]["certificate"]
        .as_str()
        .expect("issuing CA")
        .to_owned();
    vault
        .root(
            "POST",
            "auth/cert/certs/ours",
            json!({"certificate": issuing, "token_policies": "default"}),
        )
        .await;
    vault
        .root("POST", "pki_int/roles/clients", json!({"allowed_domains": "svc.cluster.local", "allow_subdomains": true, "key_type": "any", "server_flag": false, "client_flag": true}))
        .await;
    vault
        .root("POST", "pki_int/roles/servers", json!({"allowed_domains": "svc.cluster.local", "allow_subdomains": true, "key_type": "any", "server_flag": true, "client_flag": false}))
        .await;
    let mut serials = Vec::new();
    for role in ["clients", "servers"] {
        let r = vault
            .root_call(
                &format!("pki_int/issue/{role}"),
                json!({"common_name": format!("{role}.svc.cluster.local"), "key_type": "ec"}),
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.text());
        let data = &r.json()["data"];
        std::fs::write(
            dir.join(format!("{role}.crt")),
            data["certificate"].as_str().expect("cert"),
        )
        .expect("write");
        std::fs::write(
            dir.join(format!("{role}.key")),
            data["private_key"].as_str().expect("key"),
        )
        .expect("write");
        serials.push(data["serial_number"].as_str().expect("serial").to_owned());
    }
    let url = format!("{}/v1/auth/cert/login", server.https_url());
    let login = |role: &str| {
        curl_post(
            &url,
            &bundle,
            Some((
                &dir.join(format!("{role}.crt")),
                &dir.join(format!("{role}.key")),
            )),
            "{}",
        )
        .0
    };
    assert_eq!(login("clients"), 200);
    assert_eq!(
        login("servers"),
        403,
        "no clientAuth: not a client certificate"
    );
    vault
        .root(
            "POST",
            "pki_int/revoke",
            json!({"serial_number": serials[0]}),
        )
        .await;
    assert_eq!(login("clients"), 403, "revoked here: refused");
    let crl = conformance::crl::wait_listed(
        &server.http_url(),
        dir,
        &conformance::openssl::serial_bytes(&serials[0]),
        std::time::Duration::from_secs(30),
    );
    assert!(
        !crl.lists(&conformance::openssl::serial_bytes(&serials[1])),
        "{}",
        crl.text
    );
}

/// Runs futures concurrently (no extra dependency for one use).
async fn futures_join_all<F: std::future::Future<Output = u16> + Send + 'static>(
    futures: impl Iterator<Item = F>,
) -> Vec<u16> {
    let handles: Vec<_> = futures.map(tokio::spawn).collect();
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.expect("task"));
    }
    out
}

trait RootCall {
    async fn root_call(&self, path: &str, body: serde_json::Value) -> conformance::acme::Response;
}

impl RootCall for Vault {
    async fn root_call(&self, path: &str, body: serde_json::Value) -> conformance::acme::Response {
        self.call("POST", path, Some(&self.token), Some(body)).await
    }
}
