//! ACME at the wire level with a client whose every request we control: the cert-manager flow
//! replayed exactly, hostile input, failed validations, ARI, key rollover, profiles and SPIFFE
//! through a pre-authorized EAB binding. Validation talks to a real http-01 responder and a real
//! DNS server (pebble-challtestsrv).

use std::path::Path;
use std::time::Duration;

use conformance::acme::{AccountKey, AcmeClient, Http01Responder, Response, b64, jws};
use conformance::env::AcmeEnv;
use conformance::ledger::{Snapshot, count as certificate_count, row as ledger_row};
use conformance::openssl::{openssl, pem_blocks, pkcs8_key, serial_hex, serial_of, verify};
use serde_json::{Value, json};

/// How long a validation may take here (the VA's own timeout is 8 s, see `AcmeEnv`).
const SETTLE: Duration = Duration::from_secs(30);

fn rsa_account_key(dir: &Path) -> AccountKey {
    AccountKey::rsa_from_pkcs8(&pkcs8_key(
        dir,
        "account",
        &["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"],
    ))
}

/// An RSA-2048 CSR (cert-manager's default private key) for `names`; returns DER.
fn rsa_csr(dir: &Path, name: &str, names: &[&str]) -> Vec<u8> {
    let san = names
        .iter()
        .map(|n| format!("DNS:{n}"))
        .collect::<Vec<_>>()
        .join(",");
    openssl(
        dir,
        &[
            "req",
            "-new",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            &format!("{name}.key"),
            "-subj",
            &format!("/CN={}", names[0]),
            "-addext",
            &format!("subjectAltName={san}"),
            "-outform",
            "DER",
            "-out",
            &format!("{name}.csr.der"),
        ],
    );
    std::fs::read(dir.join(format!("{name}.csr.der"))).expect("csr")
}

fn assert_problem(r: &Response, status: u16, kind: &str) -> Value {
    assert_eq!(r.status, status, "{}", r.text());
    assert_eq!(
        r.header("content-type").as_deref(),
        Some("application/problem+json")
    );
    let doc = r.json();
    assert_eq!(
        doc["type"],
        format!("urn:ietf:params:acme:error:{kind}"),
        "{doc}"
    );
    assert_eq!(
        doc["status"], status,
        "problem status equals the HTTP status"
    );
    doc
}

/// Registers, orders `names`, solves http-01 with the responder, returns (order URL, order).
async fn validated_order(
    client: &mut AcmeClient,
    responder: &Http01Responder,
    names: &[&str],
) -> (String, Value) {
    let ids: Vec<Value> = names
        .iter()
        .map(|n| json!({"type": "dns", "value": n}))
        .collect();
    let new_order = client.url("newOrder");
    let r = client
        .post(&new_order, Some(&json!({"identifiers": ids})))
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let order_url = r.header("location").expect("order Location");
    let order = r.json();
    let authzs = order["authorizations"].as_array().expect("authorizations");
    assert_eq!(
        authzs.len(),
        names.len(),
        "one authorization per name: {order}"
    );
    let mut validated = 0;
    for authz_url in authzs {
        let authz_url = authz_url.as_str().expect("url");
        let authz = client.post(authz_url, None).await.json();
        let identifier = authz["identifier"]["value"]
            .as_str()
            .expect("identifier")
            .to_owned();
        let ch = authz["challenges"]
            .as_array()
            .expect("challenges")
            .iter()
            .find(|c| c["type"] == "http-01")
            .expect("http-01")
            .clone();
        let token = ch["token"].as_str().expect("token");
        responder.add(&identifier, token, &client.key_authorization(token));
        let r = client
            .post(ch["url"].as_str().expect("url"), Some(&json!({})))
            .await;
        assert_eq!(r.status, 200, "challenge accepted with 200: {}", r.text());
        // cert-manager polls the authorization, not the challenge.
        let a = client.poll_settled(authz_url, SETTLE).await;
        assert_eq!(a["status"], "valid", "authorization for {identifier}: {a}");
        validated += 1;
    }
    assert_eq!(validated, names.len());
    let order = client.post(&order_url, None).await.json();
    assert_eq!(order["status"], "ready");
    (order_url, order)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cert_manager_flow_replayed() {
    let env = AcmeEnv::start("");
    let work = env.dir.path();
    let responder = Http01Responder::start(env.http01_port).await;
    let key = rsa_account_key(work);
    let mut client = env.client(key).await;
    assert!(client.directory["meta"]["profiles"]["tls-server"].is_string());

    // Register (cert-manager: lower-cased mailto contact, no ToS flag without meta.termsOfService).
    let r = client
        .new_account(&json!({"contact": ["mailto:ops@example.com"]}))
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let account_url = r.header("location").expect("account Location");
    // GetReg: onlyReturnExisting returns the same account with 200.
    client.kid = None;
    let r = client
        .new_account(&json!({"onlyReturnExisting": true}))
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("location").as_deref(), Some(account_url.as_str()));

    let names = ["web.default.svc.example.test", "api.example.test"];
    let (order_url, order) = validated_order(&mut client, &responder, &names).await;
    let csr = rsa_csr(work, "leaf", &names);
    let r = client
        .post(
            order["finalize"].as_str().expect("finalize"),
            Some(&json!({"csr": b64(&csr)})),
        )
        .await;
    assert_eq!(r.status, 200, "finalize answers 200: {}", r.text());
    assert_eq!(
        r.header("location").as_deref(),
        Some(order_url.as_str()),
        "finalize carries the order Location"
    );
    let mut order = r.json();
    for _ in 0..20 {
        if order["status"] == "valid" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        order = client.post(&order_url, None).await.json();
    }
    assert_eq!(order["status"], "valid");
    let r = client
        .post(
            order["certificate"].as_str().expect("certificate URL"),
            None,
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("content-type").as_deref(),
        Some("application/pem-certificate-chain")
    );
    let pem = r.text();
    let blocks = pem_blocks(&pem);
    // The leaf and the issuing CA that signed it, nothing more (the root is the trust anchor).
    assert_eq!(blocks.len(), 2, "{pem}");
    let (code, served_chain) =
        conformance::openssl::curl_http(&format!("{}/ca/chain.pem", env.server.http_url()));
    assert_eq!(code, 200);
    assert_eq!(
        blocks[1],
        pem_blocks(&served_chain)[0],
        "the issuing CA the server serves"
    );
    assert!(
        pem.lines()
            .filter(|l| l.starts_with("-----BEGIN"))
            .all(|l| l == "-----BEGIN CERTIFICATE-----")
    );
    std::fs::write(work.join("leaf.pem"), &blocks[0]).expect("write");
    std::fs::write(work.join("chain.pem"), &pem).expect("write");

    // The leaf's key is the CSR's key, and the chain verifies against the served bundle.
    let leaf_key = openssl(work, &["x509", "-in", "leaf.pem", "-noout", "-pubkey"]);
    let csr_key = openssl(
        work,
        &[
            "req",
            "-inform",
            "DER",
            "-in",
            "leaf.csr.der",
            "-noout",
            "-pubkey",
        ],
    );
    assert_eq!(leaf_key, csr_key);
    let (ok, text) = verify(
        work,
        env.bundle.to_str().expect("utf-8"),
        Some("chain.pem"),
        "leaf.pem",
    );
    assert!(ok, "{text}");
    let dump = openssl(work, &["x509", "-in", "leaf.pem", "-noout", "-text"]);
    assert!(
        dump.contains("DNS:web.default.svc.example.test") && dump.contains("DNS:api.example.test")
    );

    // Recorded with its account and order: this certificate, under its serial.
    let store = env.store().await;
    let row = ledger_row(&store, &serial_of(work, "leaf.pem")).await;
    assert_eq!(
        row.certificate.der,
        conformance::openssl::der_of(work, "leaf.pem")
    );
    let mut names_recorded = row.certificate.dns_names.clone();
    names_recorded.sort();
    assert_eq!(
        names_recorded,
        ["api.example.test", "web.default.svc.example.test"]
    );
    assert_eq!(row.certificate.requester.identity, account_url);
    assert_eq!(
        row.certificate
            .requester
            .detail
            .get("order")
            .map(String::as_str),
        order_url.rsplit('/').next()
    );

    // /metrics counted the issuance and both http-01 validations.
    assert_eq!(
        env.metric(
            "ca_issuance_total",
            &[("protocol", "acme"), ("result", "issued")]
        ),
        Some(1.0)
    );
    assert_eq!(
        env.metric(
            "ca_acme_challenge_validations_total",
            &[("type", "http-01"), ("result", "valid")]
        ),
        Some(2.0)
    );

    // The orders list names the order.
    let orders = client
        .post(&format!("{account_url}/orders"), None)
        .await
        .json();
    assert!(
        orders["orders"]
            .as_array()
            .expect("orders")
            .iter()
            .any(|o| o == &json!(order_url))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_requests_get_the_right_problem_and_issue_nothing() {
    let env = AcmeEnv::start("");
    let work = env.dir.path();
    let store = env.store().await;
    let before = Snapshot::take(&store).await;
    // The account key is also written as PEM so openssl can sign a CSR with it.
    let der = pkcs8_key(
        work,
        "acct",
        &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"],
    );
    let mut client = env.client(AccountKey::p256_from_pkcs8(&der)).await;
    let new_account = client.url("newAccount");

    // A replayed nonce.
    let body = client
        .signed(&new_account, Some(&json!({})))
        .await
        .to_string()
        .into_bytes();
    assert_eq!(
        client.post_raw(&new_account, body.clone()).await.status,
        201
    );
    let doc = assert_problem(&client.post_raw(&new_account, body).await, 400, "badNonce");
    assert_eq!(doc["detail"], "JWS has an invalid anti-replay nonce");
    client.kid = None;
    let r = client
        .new_account(&json!({"onlyReturnExisting": true}))
        .await;
    assert_eq!(r.status, 200);

    // The wrong url in the protected header.
    let nonce = client.nonce().await;
    let body = jws(
        &client.key,
        &json!({"alg": "ES256", "nonce": nonce, "url": format!("{new_account}x"), "kid": client.kid}),
        "{}",
    );
    assert_problem(
        &client
            .post_raw(&client.url("newOrder"), body.to_string().into_bytes())
            .await,
        403,
        "unauthorized",
    );

    // alg none and HS256 on account requests.
    for alg in ["none", "HS256"] {
        let nonce = client.nonce().await;
        let protected = b64(
            json!({"alg": alg, "nonce": nonce, "url": new_account, "jwk": client.key.jwk()})
                .to_string()
                .as_bytes(),
        );
        let body = json!({"protected": protected, "payload": b64(b"{}"), "signature": ""});
        let doc = assert_problem(
            &client
                .post_raw(&new_account, body.to_string().into_bytes())
                .await,
            400,
            "badSignatureAlgorithm",
        );
        assert!(
            doc["algorithms"]
                .as_array()
                .is_some_and(|a| a.contains(&json!("RS256")))
        );
    }

    // An oversized body and malformed JSON.
    let r = client.post_raw(&new_account, vec![b'{'; 200 * 1024]).await;
    assert_problem(&r, 413, "malformed");
    assert_problem(
        &client.post_raw(&new_account, b"{not json".to_vec()).await,
        400,
        "malformed",
    );

    // A wrong Content-Type.
    let r = client
        .http
        .request(
            "POST",
            &new_account,
            Some("application/json"),
            b"{}".to_vec(),
        )
        .await;
    assert_problem(&r, 415, "malformed");

    // A CSR naming an identifier that was not ordered, and a CSR signed by the account key.
    let responder = Http01Responder::start(env.http01_port).await;
    let (_, order) = validated_order(&mut client, &responder, &["ok.example.test"]).await;
    let finalize = order["finalize"].as_str().expect("finalize").to_owned();
    openssl(
        work,
        &[
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            "x.key",
            "-subj",
            "/CN=ok.example.test",
            "-addext",
            "subjectAltName=DNS:ok.example.test,DNS:evil.example.test",
            "-outform",
            "DER",
            "-out",
            "extra.der",
        ],
    );
    let csr = std::fs::read(work.join("extra.der")).expect("csr");
    let doc = assert_problem(
        &client
            .post(&finalize, Some(&json!({"csr": b64(&csr)})))
            .await,
        400,
        "badCSR",
    );
    assert!(
        doc["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("evil.example.test"),
        "{doc}"
    );
    openssl(
        work,
        &[
            "req",
            "-new",
            "-key",
            "acct.pem",
            "-subj",
            "/CN=ok.example.test",
            "-addext",
            "subjectAltName=DNS:ok.example.test",
            "-outform",
            "DER",
            "-out",
            "samekey.der",
        ],
    );
    let csr = std::fs::read(work.join("samekey.der")).expect("csr");
    let doc = assert_problem(
        &client
            .post(&finalize, Some(&json!({"csr": b64(&csr)})))
            .await,
        400,
        "badCSR",
    );
    assert!(
        doc["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("account key"),
        "{doc}"
    );

    // Unknown identifier types are refused with subproblems.
    let r = client
        .post(
            &client.url("newOrder"),
            Some(&json!({"identifiers": [{"type": "email", "value": "a@b.c"}]})),
        )
        .await;
    let doc = assert_problem(&r, 400, "unsupportedIdentifier");
    assert_eq!(doc["subproblems"][0]["identifier"]["value"], "a@b.c");

    before
        .assert_unchanged(&store, "no hostile request issued anything")
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_validation_invalidates_the_authorization_and_order() {
    let env = AcmeEnv::start("");
    let mut client = env.client(AccountKey::generate_p256()).await;
    assert_eq!(client.new_account(&json!({})).await.status, 201);
    let r = client
        .post(
            &client.url("newOrder"),
            Some(&json!({"identifiers": [{"type": "dns", "value": "nobody-home.example.test"}]})),
        )
        .await;
    let order_url = r.header("location").expect("Location");
    let authz_url = r.json()["authorizations"][0]
        .as_str()
        .expect("authz")
        .to_owned();
    let authz = client.post(&authz_url, None).await.json();
    let ch = authz["challenges"]
        .as_array()
        .expect("challenges")
        .iter()
        .find(|c| c["type"] == "http-01")
        .expect("http-01")
        .clone();
    // Nothing listens on the http-01 port. The POST answers at once or after challenge_wait,
    // whichever comes first; the verdict is read by polling, as a client does.
    let ch_url = ch["url"].as_str().expect("url").to_owned();
    let r = client.post(&ch_url, Some(&json!({}))).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let settled = client.poll_settled(&ch_url, SETTLE).await;
    assert_eq!(settled["status"], "invalid", "{settled}");
    assert_eq!(
        settled["error"]["type"], "urn:ietf:params:acme:error:connection",
        "{settled}"
    );
    assert_eq!(
        client.poll_settled(&authz_url, SETTLE).await["status"],
        "invalid"
    );
    assert_eq!(
        client.post(&order_url, None).await.json()["status"],
        "invalid"
    );

    // dns-01 with a wrong TXT value is an incorrectResponse.
    let r = client
        .post(
            &client.url("newOrder"),
            Some(&json!({"identifiers": [{"type": "dns", "value": "wrong-txt.example.test"}]})),
        )
        .await;
    let authz_url = r.json()["authorizations"][0]
        .as_str()
        .expect("authz")
        .to_owned();
    let authz = client.post(&authz_url, None).await.json();
    let ch = authz["challenges"]
        .as_array()
        .expect("challenges")
        .iter()
        .find(|c| c["type"] == "dns-01")
        .expect("dns-01")
        .clone();
    env.dns
        .set_txt("_acme-challenge.wrong-txt.example.test.", "not-the-digest");
    let ch_url = ch["url"].as_str().expect("url").to_owned();
    assert_eq!(client.post(&ch_url, Some(&json!({}))).await.status, 200);
    let settled = client.poll_settled(&ch_url, SETTLE).await;
    assert_eq!(settled["status"], "invalid", "{settled}");
    assert_eq!(
        settled["error"]["type"], "urn:ietf:params:acme:error:incorrectResponse",
        "{settled}"
    );

    // dns-01 with the right value succeeds.
    let r = client
        .post(
            &client.url("newOrder"),
            Some(&json!({"identifiers": [{"type": "dns", "value": "right-txt.example.test"}]})),
        )
        .await;
    let right_order_url = r.header("location").expect("Location");
    let authz_url = r.json()["authorizations"][0]
        .as_str()
        .expect("authz")
        .to_owned();
    let authz = client.post(&authz_url, None).await.json();
    let ch = authz["challenges"]
        .as_array()
        .expect("challenges")
        .iter()
        .find(|c| c["type"] == "dns-01")
        .expect("dns-01")
        .clone();
    let ka = client.key_authorization(ch["token"].as_str().expect("token"));
    env.dns.set_txt(
        "_acme-challenge.right-txt.example.test.",
        &b64(ring::digest::digest(&ring::digest::SHA256, ka.as_bytes()).as_ref()),
    );
    let ch_url = ch["url"].as_str().expect("url").to_owned();
    assert_eq!(client.post(&ch_url, Some(&json!({}))).await.status, 200);
    let settled = client.poll_settled(&ch_url, SETTLE).await;
    assert_eq!(settled["status"], "valid", "{settled}");
    assert_eq!(
        client.poll_settled(&authz_url, SETTLE).await["status"],
        "valid"
    );
    assert_eq!(
        client.post(&right_order_url, None).await.json()["status"],
        "ready",
        "an order reads ready once its only authorization is valid"
    );

    // Deactivating the authorization of a pending order makes the order invalid: it cannot be
    // finalized any more.
    let r = client
        .post(
            &client.url("newOrder"),
            Some(&json!({"identifiers": [{"type": "dns", "value": "given-up.example.test"}]})),
        )
        .await;
    let order_url = r.header("location").expect("Location");
    let finalize_url = r.json()["finalize"].as_str().expect("finalize").to_owned();
    let authz_url = r.json()["authorizations"][0]
        .as_str()
        .expect("authz")
        .to_owned();
    let r = client
        .post(&authz_url, Some(&json!({"status": "deactivated"})))
        .await;
    assert_eq!(r.json()["status"], "deactivated", "{}", r.text());
    let order = client.post(&order_url, None).await.json();
    assert_eq!(order["status"], "invalid", "{order}");
    let store = env.store().await;
    let before = Snapshot::take(&store).await;
    let csr = ec_csr(env.dir.path(), "given-up", "given-up.example.test");
    let r = client
        .post(&finalize_url, Some(&json!({"csr": b64(&csr)})))
        .await;
    assert_problem(&r, 403, "orderNotReady");
    before
        .assert_unchanged(&store, "finalize of an invalid order")
        .await;

    // /metrics counts each validation by type and result (the ACME problem on failure).
    let validations = |kind: &str, result: &str| {
        env.metric(
            "ca_acme_challenge_validations_total",
            &[("type", kind), ("result", result)],
        )
    };
    assert_eq!(validations("http-01", "connection"), Some(1.0));
    assert_eq!(validations("dns-01", "valid"), Some(1.0));
    assert_eq!(validations("dns-01", "incorrectResponse"), Some(1.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renewal_info_replaces_and_key_rollover() {
    let env = AcmeEnv::start("");
    let work = env.dir.path();
    let responder = Http01Responder::start(env.http01_port).await;
    let mut client = env.client(AccountKey::generate_p256()).await;
    let account_url = client
        .new_account(&json!({}))
        .await
        .header("location")
        .expect("account");

    // A 24-hour certificate through the spiffe-free short profile: tls-server with notAfter.
    let (_, order) = validated_order(&mut client, &responder, &["ari.example.test"]).await;
    openssl(
        work,
        &[
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            "a.key",
            "-subj",
            "/CN=ari.example.test",
            "-addext",
            "subjectAltName=DNS:ari.example.test",
            "-outform",
            "DER",
            "-out",
            "a.der",
        ],
    );
    let r = client
        .post(
            order["finalize"].as_str().expect("finalize"),
            Some(&json!({"csr": b64(&std::fs::read(work.join("a.der")).expect("csr"))})),
        )
        .await;
    let order = r.json();
    let pem = client
        .post(order["certificate"].as_str().expect("cert"), None)
        .await
        .text();
    std::fs::write(
        work.join("ari.pem"),
        pem.split_inclusive("-----END CERTIFICATE-----\n")
            .next()
            .expect("leaf"),
    )
    .expect("write");
    let aki = openssl(
        work,
        &[
            "x509",
            "-in",
            "ari.pem",
            "-noout",
            "-ext",
            "authorityKeyIdentifier",
        ],
    );
    let aki_hex: String = aki
        .lines()
        .last()
        .expect("aki")
        .trim()
        .trim_start_matches("keyid:")
        .replace(':', "");
    let serial_hex = openssl(work, &["x509", "-in", "ari.pem", "-noout", "-serial"])
        .trim()
        .trim_start_matches("serial=")
        .to_owned();
    let unhex = |h: &str| {
        (0..h.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&h[i..i + 2], 16).expect("hex"))
            .collect::<Vec<u8>>()
    };
    let cert_id = format!("{}.{}", b64(&unhex(&aki_hex)), b64(&unhex(&serial_hex)));

    let r = client
        .http
        .request(
            "GET",
            &format!("{}/{cert_id}", client.url("renewalInfo")),
            None,
            Vec::new(),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let retry: u64 = r
        .header("retry-after")
        .expect("Retry-After")
        .parse()
        .expect("seconds");
    assert!((60..=6 * 3600).contains(&retry), "Retry-After {retry}");
    let window = &r.json()["suggestedWindow"];
    let at = |k: &str| {
        time::OffsetDateTime::parse(
            window[k]
                .as_str()
                .unwrap_or_else(|| panic!("{k}: {window}")),
            &time::format_description::well_known::Rfc3339,
        )
        .unwrap_or_else(|e| panic!("{k}: {e}"))
    };
    let not_after = openssl(
        work,
        &[
            "x509", "-in", "ari.pem", "-noout", "-enddate", "-dateopt", "iso_8601",
        ],
    );
    let not_after = time::PrimitiveDateTime::parse(
        not_after.trim().trim_start_matches("notAfter="),
        &time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second]Z"),
    )
    .unwrap_or_else(|e| panic!("{not_after}: {e}"))
    .assume_utc();
    assert!(at("start") < at("end"), "{window}");
    assert!(
        at("start") > time::OffsetDateTime::now_utc(),
        "a fresh certificate is not due yet: {window}"
    );
    assert!(at("end") <= not_after, "{window} past {not_after}");

    // Replacing it: echoed in the order; a second replacement is alreadyReplaced.
    let replaces =
        json!({"identifiers": [{"type": "dns", "value": "ari.example.test"}], "replaces": cert_id});
    let r = client.post(&client.url("newOrder"), Some(&replaces)).await;
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(r.json()["replaces"], json!(cert_id));
    let orders_url = format!("{account_url}/orders");
    let orders = client.post(&orders_url, None).await.json()["orders"].clone();
    assert_problem(
        &client.post(&client.url("newOrder"), Some(&replaces)).await,
        409,
        "alreadyReplaced",
    );
    assert_eq!(
        client.post(&orders_url, None).await.json()["orders"],
        orders,
        "the refused order was not made"
    );

    // Key rollover: the new key signs for the account, the old one no longer does.
    let new_key = AccountKey::generate_p256();
    let key_change = client.url("keyChange");
    let inner = jws(
        &new_key,
        &json!({"alg": "ES256", "jwk": new_key.jwk(), "url": key_change}),
        &json!({"account": account_url, "oldKey": client.key.jwk()}).to_string(),
    );
    let r = client.post(&key_change, Some(&inner)).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = client.post(&account_url, None).await;
    assert_problem(&r, 400, "malformed");
    let mut rolled = env.client(new_key).await;
    rolled.kid = Some(account_url.clone());
    assert_eq!(rolled.post(&account_url, None).await.status, 200);

    // Deactivation: the account can do nothing afterwards.
    let r = rolled
        .post(&account_url, Some(&json!({"status": "deactivated"})))
        .await;
    assert_eq!(r.json()["status"], "deactivated");
    assert_problem(
        &rolled
            .post(
                &rolled.url("newOrder"),
                Some(&json!({"identifiers": [{"type": "dns", "value": "x.example.test"}]})),
            )
            .await,
        403,
        "unauthorized",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spiffe_svids_through_a_preauthorized_binding() {
    let env = AcmeEnv::start("require_eab = true");
    let work = env.dir.path();
    let (kid, hmac) = env.eab(
        "mesh",
        &[
            "--preauthorized",
            "--uri",
            "spiffe://cluster.local/ns/payments/*",
            "--profile",
            "spiffe",
        ],
    );
    let mut client = env.client(AccountKey::generate_p256()).await;
    assert_eq!(client.directory["meta"]["externalAccountRequired"], true);
    let r = client.new_account(&json!({})).await;
    assert_problem(&r, 400, "externalAccountRequired");
    let r = client.new_account_with_eab(&kid, &hmac).await;
    assert_eq!(r.status, 201, "{}", r.text());

    // cert-manager sends `"identifiers": null` for a URI-only Certificate.
    let r = client
        .post(
            &client.url("newOrder"),
            Some(&json!({"identifiers": null, "profile": "spiffe"})),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(r.json()["status"], "ready", "pre-authorized: no challenge");
    let finalize = r.json()["finalize"].as_str().expect("finalize").to_owned();
    openssl(
        work,
        &[
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            "s.key",
            "-subj",
            "/",
            "-addext",
            "subjectAltName=critical,URI:spiffe://cluster.local/ns/payments/sa/api",
            "-outform",
            "DER",
            "-out",
            "s.der",
        ],
    );
    let r = client
        .post(
            &finalize,
            Some(&json!({"csr": b64(&std::fs::read(work.join("s.der")).expect("csr"))})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let pem = client
        .post(r.json()["certificate"].as_str().expect("cert"), None)
        .await
        .text();
    std::fs::write(
        work.join("svid.pem"),
        pem.split_inclusive("-----END CERTIFICATE-----\n")
            .next()
            .expect("leaf"),
    )
    .expect("write");
    let dump = openssl(work, &["x509", "-in", "svid.pem", "-noout", "-text"]);
    assert!(
        dump.contains("URI:spiffe://cluster.local/ns/payments/sa/api"),
        "{dump}"
    );
    assert!(dump.contains("TLS Web Server Authentication, TLS Web Client Authentication"));

    // A URI outside the binding is a badCSR; a profile outside it is invalidProfile.
    let r = client
        .post(
            &client.url("newOrder"),
            Some(&json!({"identifiers": null, "profile": "spiffe"})),
        )
        .await;
    let finalize = r.json()["finalize"].as_str().expect("finalize").to_owned();
    openssl(
        work,
        &[
            "req",
            "-new",
            "-key",
            "s.key",
            "-subj",
            "/",
            "-addext",
            "subjectAltName=URI:spiffe://cluster.local/ns/billing/sa/api",
            "-outform",
            "DER",
            "-out",
            "o.der",
        ],
    );
    let store = env.store().await;
    let before = Snapshot::take(&store).await;
    assert_problem(
        &client
            .post(
                &finalize,
                Some(&json!({"csr": b64(&std::fs::read(work.join("o.der")).expect("csr"))})),
            )
            .await,
        400,
        "badCSR",
    );
    assert_problem(
        &client
            .post(
                &client.url("newOrder"),
                Some(&json!({"identifiers": null, "profile": "tls-server"})),
            )
            .await,
        400,
        "invalidProfile",
    );
    before
        .assert_unchanged(&store, "a SPIFFE ID outside the binding")
        .await;
    assert!(
        conformance::ledger::rows_naming(&store, "spiffe://cluster.local/ns/billing/sa/api")
            .await
            .is_empty()
    );

    // The EAB key cannot be used for a second account.
    let mut other = env.client(AccountKey::generate_p256()).await;
    assert_problem(
        &other.new_account_with_eab(&kid, &hmac).await,
        403,
        "unauthorized",
    );
    other.kid = None;
    assert_problem(
        &other
            .new_account(&json!({"onlyReturnExisting": true}))
            .await,
        400,
        "accountDoesNotExist",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_on_one_postgres_share_nonces_and_accounts() {
    let db = tokio::task::spawn_blocking(conformance::postgres::test_database)
        .await
        .expect("postgres");
    let a = AcmeEnv::start_with("", &["--database-url", &db.url]);
    // The second replica mounts the same CA material, as replicas mount one Secret.
    let b_dir = tempfile::tempdir().expect("tempdir");
    let out = conformance::process::output_within(
        std::process::Command::new("cp")
            .arg("-a")
            .arg(a.server.data_dir.join("ca"))
            .arg(b_dir.path().join("ca")),
        conformance::process::QUICK,
    );
    assert!(
        out.status.success(),
        "cp: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let b = conformance::server::CaServer::start(b_dir.path(), &["--database-url", &db.url]);
    let pem = std::fs::read_to_string(&a.bundle).expect("bundle");
    let https_b =
        conformance::acme::Https::new(b.https, &format!("localhost:{}", b.https.port()), &pem);

    // The directory advertises replica A's URLs; replica B checks JWS urls against its own
    // authority, so sign for B's URL when posting to B.
    let mut on_a = a.client(AccountKey::generate_p256()).await;
    let nonce_from_a = on_a.nonce().await;
    let url_b = format!("https://localhost:{}/acme/new-account", b.https.port());
    let body = jws(
        &on_a.key,
        &json!({"alg": "ES256", "nonce": nonce_from_a, "url": url_b, "jwk": on_a.key.jwk()}),
        "{}",
    )
    .to_string()
    .into_bytes();
    let r = https_b
        .request("POST", &url_b, Some("application/jose+json"), body.clone())
        .await;
    assert_eq!(
        r.status,
        201,
        "a nonce issued by replica A is accepted by replica B: {}",
        r.text()
    );
    let account_on_b = r.header("location").expect("location");
    let r = https_b
        .request("POST", &url_b, Some("application/jose+json"), body)
        .await;
    assert_problem(&r, 400, "badNonce");

    // The account exists for replica A too (same key → 200 with B's account id).
    let r = on_a.new_account(&json!({"onlyReturnExisting": true})).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.header("location")
            .and_then(|l| l.rsplit('/').next().map(str::to_owned)),
        account_on_b.rsplit('/').next().map(str::to_owned)
    );
    drop(b);
}

/// A certificate issued through ACME: its DER, its serial, and its key as PKCS#8 (to sign a JWS).
struct Issued {
    der: Vec<u8>,
    serial: Vec<u8>,
    key: Vec<u8>,
}

/// Orders `name` with `client`, validates it over http-01 and finalizes with a fresh P-256 key
/// kept in `<file>.key.pem`.
async fn issue(
    client: &mut AcmeClient,
    responder: &Http01Responder,
    work: &Path,
    file: &str,
    name: &str,
) -> Issued {
    let (_, order) = validated_order(client, responder, &[name]).await;
    let key = pkcs8_key(
        work,
        &format!("{file}.key"),
        &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"],
    );
    openssl(
        work,
        &[
            "req",
            "-new",
            "-key",
            &format!("{file}.key.pem"),
            "-subj",
            &format!("/CN={name}"),
            "-addext",
            &format!("subjectAltName=DNS:{name}"),
            "-outform",
            "DER",
            "-out",
            &format!("{file}.csr.der"),
        ],
    );
    let csr = std::fs::read(work.join(format!("{file}.csr.der"))).expect("csr");
    let r = client
        .post(
            order["finalize"].as_str().expect("finalize"),
            Some(&json!({"csr": b64(&csr)})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let pem = client
        .post(r.json()["certificate"].as_str().expect("cert"), None)
        .await
        .text();
    let leaf = format!("{file}.pem");
    std::fs::write(work.join(&leaf), &pem_blocks(&pem)[0]).expect("write");
    Issued {
        der: conformance::openssl::der_of(work, &leaf),
        serial: serial_of(work, &leaf),
        key,
    }
}

/// RFC 8555 §7.6 with the certificate's key (no account): the revocation reaches the ledger and
/// the very next CRL this replica serves (the CRL cache is invalidated, not waited out), with its
/// reason, and nothing else does; refused revocations change nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocation_by_the_certificates_own_key() {
    let env = AcmeEnv::start("");
    let work = env.dir.path();
    let responder = Http01Responder::start(env.http01_port).await;
    let mut client = env.client(AccountKey::generate_p256()).await;
    assert_eq!(client.new_account(&json!({})).await.status, 201);
    let lost = issue(&mut client, &responder, work, "lost", "lost.example.test").await;
    let kept = issue(&mut client, &responder, work, "kept", "kept.example.test").await;
    let store = env.store().await;
    // The CRL as served just before (this also fills the server's 5 s CRL cache).
    assert!(env.crl().entries.is_empty());

    // Someone holding only the certificate's key (no account) revokes it: keyCompromise.
    let mut holder = env.client(AccountKey::p256_from_pkcs8(&lost.key)).await;
    let url = holder.url("revokeCert");
    let r = holder
        .post(
            &url,
            Some(&json!({"certificate": b64(&lost.der), "reason": 1})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let row = ledger_row(&store, &lost.serial).await;
    assert_eq!(row.revocation_reason, Some(1));
    let crl = env.crl();
    assert_eq!(
        crl.reason_of(&lost.serial),
        Some("Key Compromise"),
        "{} not in the next CRL:\n{}",
        serial_hex(&lost.serial),
        crl.text
    );
    assert!(!crl.lists(&kept.serial), "{}", crl.text);
    assert_eq!(crl.entries.len(), 1, "{}", crl.text);

    // Again: alreadyRevoked. A stranger's key: unauthorized. An unaccepted reason code. None of
    // them changes the row (first revocation time and reason kept) or the CRL.
    let before = Snapshot::take(&store).await;
    assert_problem(
        &holder
            .post(&url, Some(&json!({"certificate": b64(&lost.der)})))
            .await,
        400,
        "alreadyRevoked",
    );
    let mut stranger = env.client(AccountKey::generate_p256()).await;
    for der in [&lost.der, &kept.der] {
        assert_problem(
            &stranger
                .post(&url, Some(&json!({"certificate": b64(der)})))
                .await,
            403,
            "unauthorized",
        );
    }
    assert_problem(
        &client
            .post(
                &url,
                Some(&json!({"certificate": b64(&kept.der), "reason": 7})),
            )
            .await,
        400,
        "badRevocationReason",
    );
    before.assert_unchanged(&store, "refused revocations").await;
    assert_eq!(
        ledger_row(&store, &lost.serial).await.revoked_at,
        row.revoked_at
    );
    assert_eq!(env.crl().entries, crl.entries);
}

/// RFC 8555 §7.6 with the account that ordered the certificate (kid-signed revokeCert, what
/// lego and certbot send): ledger and next CRL, with the reason given; another account is
/// refused and changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocation_by_the_ordering_account() {
    let env = AcmeEnv::start("");
    let work = env.dir.path();
    let responder = Http01Responder::start(env.http01_port).await;
    let mut client = env.client(AccountKey::generate_p256()).await;
    assert_eq!(client.new_account(&json!({})).await.status, 201);
    let old = issue(&mut client, &responder, work, "old", "old.example.test").await;
    let other = issue(&mut client, &responder, work, "other", "other.example.test").await;
    let store = env.store().await;
    assert!(env.crl().entries.is_empty());

    // Another registered account may not revoke it.
    let mut stranger = env.client(AccountKey::generate_p256()).await;
    assert_eq!(stranger.new_account(&json!({})).await.status, 201);
    let before = Snapshot::take(&store).await;
    let url = client.url("revokeCert");
    assert_problem(
        &stranger
            .post(
                &url,
                Some(&json!({"certificate": b64(&old.der), "reason": 4})),
            )
            .await,
        403,
        "unauthorized",
    );
    before
        .assert_unchanged(&store, "revocation by another account")
        .await;
    assert!(env.crl().entries.is_empty());

    // The ordering account: superseded (4).
    let r = client
        .post(
            &url,
            Some(&json!({"certificate": b64(&old.der), "reason": 4})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        ledger_row(&store, &old.serial).await.revocation_reason,
        Some(4)
    );
    assert!(ledger_row(&store, &other.serial).await.revoked_at.is_none());
    let crl = env.crl();
    assert_eq!(
        crl.reason_of(&old.serial),
        Some("Superseded"),
        "{} not in the next CRL:\n{}",
        serial_hex(&old.serial),
        crl.text
    );
    assert!(!crl.lists(&other.serial));
    assert_eq!(crl.entries.len(), 1, "{}", crl.text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alternate_chains_for_a_cross_signed_issuing_ca() {
    let mut env = AcmeEnv::start("");
    let work = env.dir.path().to_owned();
    let ca_dir = env.server.data_dir.join("ca");

    // A second root cross-signs the issuing CA (same subject and key), as during a root rotation.
    let (cross, alt_root) =
        conformance::openssl::cross_sign_issuing_ca(&work, &ca_dir, "Alternate Root CA");

    // A chain that does not start with the issuing CA is refused with a clear error, and the
    // CA does not load (here: `cert sign`, which loads the CA as `serve` does).
    let bad = ca_dir.join("alternate-chain-0-bad.pem");
    std::fs::write(&bad, &alt_root).expect("write");
    let store = env.store().await;
    let before = Snapshot::take(&store).await;
    conformance::openssl::p256_csr(&work, "probe", "/CN=probe.example.test", None);
    let out = conformance::server::run(&[
        "cert",
        "sign",
        "--data-dir",
        env.server.data_dir.to_str().expect("utf-8"),
        "--csr",
        work.join("probe.csr").to_str().expect("utf-8"),
        "--out",
        work.join("probe.crt").to_str().expect("utf-8"),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("alternate-chain-0-bad.pem") && stderr.contains("issuing CA"),
        "{stderr}"
    );
    assert!(!work.join("probe.crt").exists(), "nothing signed");
    before
        .assert_unchanged(&store, "cert sign with a bad alternate chain")
        .await;
    std::fs::remove_file(&bad).expect("remove");

    // The good chain: cross-signed issuing certificate, then the alternate root.
    std::fs::write(
        ca_dir.join("alternate-chain-1.pem"),
        format!("{cross}{alt_root}"),
    )
    .expect("write");
    env.restart();

    let mut client = env.client(AccountKey::generate_p256()).await;
    assert_eq!(client.new_account(&json!({})).await.status, 201);
    let responder = Http01Responder::start(env.http01_port).await;
    let (order_url, order) = validated_order(&mut client, &responder, &["alt.example.test"]).await;
    conformance::openssl::p256_csr(
        &work,
        "alt",
        "/CN=alt.example.test",
        Some("DNS:alt.example.test"),
    );
    openssl(
        &work,
        &[
            "req",
            "-in",
            "alt.csr",
            "-outform",
            "DER",
            "-out",
            "alt.csr.der",
        ],
    );
    let der = std::fs::read(work.join("alt.csr.der")).expect("csr");
    let r = client
        .post(
            order["finalize"].as_str().expect("finalize"),
            Some(&json!({"csr": b64(&der)})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let order = client.post(&order_url, None).await.json();
    let cert_url = order["certificate"]
        .as_str()
        .expect("certificate")
        .to_owned();

    let links = |r: &Response| -> Vec<String> {
        r.headers
            .get_all("link")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .filter(|v| v.contains("rel=\"alternate\""))
            .map(str::to_owned)
            .collect()
    };
    let default = client.post(&cert_url, None).await;
    assert_eq!(default.status, 200);
    assert_eq!(
        links(&default),
        vec![format!("<{cert_url}/1>;rel=\"alternate\"")],
        "the default chain points at the alternate"
    );
    let alternate = client.post(&format!("{cert_url}/1"), None).await;
    assert_eq!(alternate.status, 200, "{}", alternate.text());
    assert_eq!(
        alternate.header("content-type").as_deref(),
        Some("application/pem-certificate-chain")
    );
    assert_eq!(
        links(&alternate),
        vec![format!("<{cert_url}>;rel=\"alternate\"")]
    );
    // Same leaf; the alternate carries the cross-signed certificate, not the root.
    let leaf = |pem: &str| {
        pem.split_inclusive("-----END CERTIFICATE-----\n")
            .next()
            .map(str::to_owned)
    };
    assert_eq!(leaf(&default.text()), leaf(&alternate.text()));
    assert!(
        alternate.text().contains(cross.trim()),
        "{}",
        alternate.text()
    );
    assert!(!alternate.text().contains(alt_root.trim()));

    // Each chain verifies against its own root, and only against it.
    std::fs::write(work.join("alt-chain.pem"), alternate.text()).expect("write");
    std::fs::write(
        work.join("alt-leaf.pem"),
        leaf(&alternate.text()).expect("leaf"),
    )
    .expect("write");
    std::fs::write(work.join("default-chain.pem"), default.text()).expect("write");
    let (ok, text) = verify(&work, "alt-root.crt", Some("alt-chain.pem"), "alt-leaf.pem");
    assert!(ok, "{text}");
    let (ok, _) = verify(
        &work,
        "alt-root.crt",
        Some("default-chain.pem"),
        "alt-leaf.pem",
    );
    assert!(!ok, "the default chain does not lead to the alternate root");
    let (ok, text) = verify(
        &work,
        env.bundle.to_str().expect("utf-8"),
        Some("default-chain.pem"),
        "alt-leaf.pem",
    );
    assert!(ok, "{text}");

    // There is no second alternate.
    let r = client.post(&format!("{cert_url}/2"), None).await;
    assert_problem(&r, 404, "malformed");
}

/// An EC P-256 CSR for `name` (DER), its key kept as `<file>.key`.
fn ec_csr(dir: &Path, file: &str, name: &str) -> Vec<u8> {
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
            &format!("{file}.key"),
            "-subj",
            &format!("/CN={name}"),
            "-addext",
            &format!("subjectAltName=DNS:{name}"),
            "-outform",
            "DER",
            "-out",
            &format!("{file}.der"),
        ],
    );
    std::fs::read(dir.join(format!("{file}.der"))).expect("csr")
}

/// RFC 8555 §7.4: finalize is for ready orders only. A pending order, a finalized one and the
/// loser of two concurrent finalizes all answer orderNotReady; only one certificate is issued,
/// for the winner's key, and nobody else's CSR is ever answered with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finalize_is_for_ready_orders_only() {
    let env = AcmeEnv::start("");
    let work = env.dir.path();
    let store = env.store().await;
    let mut client = env.client(AccountKey::generate_p256()).await;
    assert_eq!(client.new_account(&json!({})).await.status, 201);
    let responder = Http01Responder::start(env.http01_port).await;

    // Pending: not ready.
    let r = client
        .post(
            &client.url("newOrder"),
            Some(&json!({"identifiers": [{"type": "dns", "value": "pending.example.test"}]})),
        )
        .await;
    assert_eq!(r.status, 201);
    let finalize = r.json()["finalize"].as_str().expect("finalize").to_owned();
    let csr = ec_csr(work, "pending", "pending.example.test");
    let before = certificate_count(&store).await;
    assert_problem(
        &client
            .post(&finalize, Some(&json!({"csr": b64(&csr)})))
            .await,
        403,
        "orderNotReady",
    );

    // Finalized once; a second CSR (another key) is refused and gets no certificate URL.
    let (_, order) = validated_order(&mut client, &responder, &["once.example.test"]).await;
    let finalize = order["finalize"].as_str().expect("finalize").to_owned();
    let first = ec_csr(work, "first", "once.example.test");
    let r = client
        .post(&finalize, Some(&json!({"csr": b64(&first)})))
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let second = ec_csr(work, "second", "once.example.test");
    let r = client
        .post(&finalize, Some(&json!({"csr": b64(&second)})))
        .await;
    let doc = assert_problem(&r, 403, "orderNotReady");
    assert!(doc.get("certificate").is_none(), "{doc}");
    assert_eq!(certificate_count(&store).await, before + 1);

    // Two finalizes at once, with different keys, over two connections.
    let (order_url, order) = validated_order(&mut client, &responder, &["race.example.test"]).await;
    let finalize = order["finalize"].as_str().expect("finalize").to_owned();
    let a = ec_csr(work, "race-a", "race.example.test");
    let b = ec_csr(work, "race-b", "race.example.test");
    let body_a = client
        .signed(&finalize, Some(&json!({"csr": b64(&a)})))
        .await;
    let body_b = client
        .signed(&finalize, Some(&json!({"csr": b64(&b)})))
        .await;
    let (http_a, http_b) = (env.https(), env.https());
    let (ra, rb) = tokio::join!(
        http_a.request(
            "POST",
            &finalize,
            Some("application/jose+json"),
            body_a.to_string().into_bytes()
        ),
        http_b.request(
            "POST",
            &finalize,
            Some("application/jose+json"),
            body_b.to_string().into_bytes()
        ),
    );
    let statuses = [ra.status, rb.status];
    assert!(
        statuses.contains(&200) && statuses.contains(&403),
        "{statuses:?}: {} / {}",
        ra.text(),
        rb.text()
    );
    let (winner, loser) = if ra.status == 200 {
        ("race-a", &rb)
    } else {
        ("race-b", &ra)
    };
    assert_problem(loser, 403, "orderNotReady");
    assert_eq!(
        certificate_count(&store).await,
        before + 2,
        "one certificate for the race"
    );

    let order = client.post(&order_url, None).await.json();
    assert_eq!(order["status"], "valid");
    let cert_url = order["certificate"]
        .as_str()
        .expect("certificate")
        .to_owned();
    let pem = client.post(&cert_url, None).await.text();
    std::fs::write(work.join("race.pem"), &pem).expect("write");
    let cert_key = openssl(work, &["x509", "-in", "race.pem", "-noout", "-pubkey"]);
    let winner_key = openssl(work, &["pkey", "-in", &format!("{winner}.key"), "-pubout"]);
    assert_eq!(
        cert_key, winner_key,
        "the certificate certifies the winner's key"
    );
}

/// Every answer under /acme/ is a problem document or a resource, with a Replay-Nonce.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_methods_and_unknown_paths_answer_problems() {
    let env = AcmeEnv::start("");
    let http = env.https();
    for (method, path, status) in [
        ("GET", "/acme/new-order", 405),
        ("PUT", "/acme/new-account", 405),
        ("DELETE", "/acme/directory", 405),
        ("POST", "/acme/directory", 405),
        ("GET", "/acme/order/x/finalize", 405),
        ("GET", "/acme/nope", 404),
        ("POST", "/acme/order/x/finalize/extra", 404),
        ("GET", "/acme", 404),
    ] {
        let r = http
            .request(method, path, Some("application/jose+json"), b"{}".to_vec())
            .await;
        assert_eq!(r.status, status, "{method} {path}: {}", r.text());
        assert_eq!(
            r.header("content-type").as_deref(),
            Some("application/problem+json"),
            "{method} {path}"
        );
        assert_eq!(r.json()["status"], status, "{method} {path}");
        assert!(
            r.header("replay-nonce").is_some(),
            "{method} {path} carries a nonce"
        );
    }
}
