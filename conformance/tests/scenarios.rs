//! Reliability scenarios, each a promise under load, short in CI and long from
//! `conformance/scenarios/run.sh` (which sets the knobs below and keeps the figures each prints
//! as one JSON line):
//!
//! - **crash safety**: SIGKILL under Vault and ACME load, repeatedly, on SQLite and PostgreSQL:
//!   every certificate a client received is in the ledger, no serial twice, SQLite's
//!   `integrity_check` ok, restart quick (`CRASH_ROUNDS`, `CRASH_SECONDS`, `CRASH_WORKERS`);
//! - **replicas**: three processes on one PostgreSQL started at once (concurrent migrations), an
//!   ACME client whose requests alternate between them completes orders, one replica killed
//!   mid-order and the client finishes on another; tokens, policies and EAB keys made on one
//!   work on the others; a revocation on one reaches the others' CRLs;
//! - **overload**: far more clients than `max_in_flight`: only 200 or 503 + `Retry-After`, peak
//!   memory bounded (`OVERLOAD_CLIENTS`, `OVERLOAD_SECONDS`).

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use conformance::acme::{AccountKey, AcmeClient, Https, b64};
use conformance::env::AcmeEnv;
use conformance::server::CaServer;
use conformance::vault::Vault;
use serde_json::json;

fn knob(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// One figure, as a JSON line the scenario script collects.
fn figure(scenario: &str, value: serde_json::Value) {
    println!("{}", json!({"scenario": scenario, "figures": value}));
}

fn serial_bytes(hex: &str) -> Vec<u8> {
    let hex: String = hex.chars().filter(|c| c.is_ascii_hexdigit()).collect();
    let bytes: Vec<u8> = (0..hex.len())
        .step_by(2)
        .filter_map(|i| u8::from_str_radix(&hex[i..i + 2], 16).ok())
        .collect();
    bytes.into_iter().skip_while(|b| *b == 0).collect()
}

fn csr_der(name: &str) -> Vec<u8> {
    let key = rcgen::KeyPair::generate().expect("key");
    let mut params = rcgen::CertificateParams::new(vec![name.to_owned()]).expect("params");
    // rcgen's default subject is a placeholder CN, which is no ordered identifier.
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.serialize_request(&key).expect("csr").der().to_vec()
}

type Received = Arc<Mutex<Vec<Vec<u8>>>>;

/// Issues through the Vault API until stopped; records the serials it received.
async fn vault_worker(
    http: Https,
    token: String,
    prefix: String,
    stop: Arc<AtomicBool>,
    got: Received,
) {
    let mut i = 0u64;
    while !stop.load(Ordering::Relaxed) {
        i += 1;
        let body = json!({"common_name": format!("{prefix}-{i}.crash.test")}).to_string();
        match http
            .try_request_with(
                "POST",
                "/v1/pki_int/issue/crash",
                &[("x-vault-token", &token)],
                None,
                body.into_bytes(),
            )
            .await
        {
            Ok(r) if r.status == 200 => {
                if let Some(serial) = r.json()["data"]["serial_number"].as_str() {
                    got.lock().expect("lock").push(serial_bytes(serial));
                }
            }
            Ok(_) => {}
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// Orders, finalizes and downloads through ACME (a pre-authorized account) until stopped;
/// records the serials of the certificates it downloaded.
async fn acme_worker(mut client: AcmeClient, prefix: String, stop: Arc<AtomicBool>, got: Received) {
    let mut i = 0u64;
    while !stop.load(Ordering::Relaxed) {
        i += 1;
        let name = format!("{prefix}-{i}.crash.test");
        let Ok(r) = client
            .try_post(
                &client.url("newOrder"),
                Some(&json!({"identifiers": [{"type": "dns", "value": name}]})),
            )
            .await
        else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let Some(finalize) = r.json()["finalize"].as_str().map(str::to_owned) else {
            continue;
        };
        let Ok(r) = client
            .try_post(&finalize, Some(&json!({"csr": b64(&csr_der(&name))})))
            .await
        else {
            continue;
        };
        let Some(cert_url) = r.json()["certificate"].as_str().map(str::to_owned) else {
            continue;
        };
        if let Ok(r) = client.try_post(&cert_url, None).await
            && r.status == 200
            && r.text().contains("BEGIN CERTIFICATE")
            && let Some(hex) = cert_url.rsplit('/').next()
        {
            got.lock().expect("lock").push(serial_bytes(hex));
        }
    }
}

/// One crash-safety run on the backend `db_args` names.
async fn crash_safety(label: &str, db_args: &[&str]) {
    let rounds = knob("CRASH_ROUNDS", 1);
    let seconds = knob("CRASH_SECONDS", 2);
    let workers = knob("CRASH_WORKERS", 4);
    let mut env = AcmeEnv::start_with("", db_args);
    let token = std::fs::read_to_string(env.server.data_dir.join("root-token"))
        .expect("root token")
        .trim()
        .to_owned();
    Vault::connect(&env.server)
        .root(
            "POST",
            "pki_int/roles/crash",
            json!({"allowed_domains": "crash.test", "allow_subdomains": true, "key_type": "any"}),
        )
        .await;
    let mut received: Vec<Vec<u8>> = Vec::new();
    let mut via_acme = 0;
    let mut restarts = Vec::new();
    for round in 0..rounds {
        let stop = Arc::new(AtomicBool::new(false));
        let got: Received = Arc::default();
        let got_acme: Received = Arc::default();
        let mut tasks = Vec::new();
        for w in 0..workers {
            tasks.push(tokio::spawn(vault_worker(
                env.https(),
                token.clone(),
                format!("v{round}-{w}"),
                Arc::clone(&stop),
                Arc::clone(&got),
            )));
            // Half as many ACME clients, each its own pre-authorized account.
            if w % 2 == 0 {
                let (kid, hmac) = env.eab(
                    &format!("crash-{round}-{w}"),
                    &["--preauthorized", "--name", ".crash.test"],
                );
                let mut client = env.client(AccountKey::generate_p256()).await;
                let r = client.new_account_with_eab(&kid, &hmac).await;
                assert_eq!(r.status, 201, "{}", r.text());
                tasks.push(tokio::spawn(acme_worker(
                    client,
                    format!("a{round}-{w}"),
                    Arc::clone(&stop),
                    Arc::clone(&got_acme),
                )));
            }
        }
        tokio::time::sleep(Duration::from_secs(seconds)).await;
        // Kill while requests are in flight, then let the clients notice.
        let took = tokio::task::block_in_place(|| env.kill_and_restart());
        stop.store(true, Ordering::Relaxed);
        for t in tasks {
            t.await.expect("a load worker panicked");
        }
        restarts.push(took.as_secs_f64());
        via_acme += got_acme.lock().expect("lock").len();
        received.extend(got.lock().expect("lock").drain(..));
        received.extend(got_acme.lock().expect("lock").drain(..));
    }

    // Every certificate a client received is recorded; none was handed out twice.
    let unique: HashSet<&Vec<u8>> = received.iter().collect();
    assert_eq!(unique.len(), received.len(), "a serial received twice");
    let url = match db_args {
        ["--database-url", url] => ca_store::DatabaseUrl::new(*url),
        _ => ca_store::DatabaseUrl::sqlite_file(&env.server.data_dir.join("ledger.db")),
    };
    let store = ca_store::open(&url).await.expect("ledger");
    let mut missing = 0;
    for serial in &received {
        let row = store.certificate_by_serial(serial).await.expect("read");
        if row.is_none_or(|r| r.certificate.der.is_empty()) {
            missing += 1;
        }
    }
    store.close().await;
    assert!(via_acme > 0, "the ACME load received certificates");
    assert!(
        received.len() > via_acme,
        "the Vault load received certificates"
    );
    assert_eq!(missing, 0, "certificates returned but not in the ledger");
    let integrity = if db_args.is_empty() {
        let out = conformance::process::output_within(
            std::process::Command::new("python3").arg("-c").arg(format!(
                "import sqlite3; print(sqlite3.connect({:?}).execute('PRAGMA integrity_check').fetchone()[0])",
                env.server.data_dir.join("ledger.db").display().to_string()
            )),
            Duration::from_secs(60),
        );
        let text = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        assert_eq!(text, "ok", "SQLite integrity_check");
        text
    } else {
        "n/a".into()
    };
    let slowest = restarts.iter().copied().fold(0.0, f64::max);
    assert!(slowest < 5.0, "restart took {slowest} s");
    figure(
        "crash-safety",
        json!({"backend": label, "kills": rounds, "received": received.len(), "received_via_acme": via_acme, "missing": missing,
               "integrity_check": integrity, "restart_seconds_max": slowest}),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_under_load_loses_nothing_on_sqlite() {
    crash_safety("sqlite", &[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_under_load_loses_nothing_on_postgres() {
    let db = tokio::task::spawn_blocking(conformance::postgres::test_database)
        .await
        .expect("postgres");
    crash_safety("postgres", &["--database-url", &db.url]).await;
}

/// An ACME request to replica `k`: the client's transport switched to it, the JWS url the
/// shared external URL (as behind one Service).
async fn on(
    client: &mut AcmeClient,
    replicas: &[Option<Https>],
    k: usize,
    url: &str,
    payload: Option<&serde_json::Value>,
) -> conformance::acme::Response {
    let n = replicas.len();
    let (mut k, mut tried) = (k % n, 0);
    while replicas[k].is_none() {
        k = (k + 1) % n;
        tried += 1;
        assert!(tried < n, "no replica left");
    }
    client.http = replicas[k].as_ref().map(Https::fresh).expect("replica");
    client
        .try_post(url, payload)
        .await
        .unwrap_or_else(|e| panic!("replica {k}: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_share_one_postgresql() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    // CA material made once, as for a Secret; a fresh database nobody has migrated yet.
    let seed = dir.join("seed");
    let out = conformance::server::run(&["--data-dir", seed.to_str().expect("utf-8"), "init"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let db = tokio::task::spawn_blocking(conformance::postgres::test_database)
        .await
        .expect("postgres");
    let responder_port = conformance::free_port();
    let cfg = dir.join("ca.toml");
    std::fs::write(
        &cfg,
        format!(
            "[acme]\nexternal_url = \"https://localhost:4430\"\n[acme.validation]\nhttp01_port = {responder_port}\ntimeout = \"8s\"\n"
        ),
    )
    .expect("config");
    let mut data_dirs = Vec::new();
    for r in 0..3 {
        let data = dir.join(format!("replica-{r}"));
        std::fs::create_dir_all(&data).expect("mkdir");
        let out = conformance::process::output_within(
            std::process::Command::new("cp")
                .arg("-a")
                .arg(seed.join("ca"))
                .arg(data.join("ca")),
            conformance::process::QUICK,
        );
        assert!(
            out.status.success(),
            "cp: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        data_dirs.push(data);
    }
    // All three at once: concurrent migrations and start-up checks.
    let started: Vec<std::thread::JoinHandle<CaServer>> = data_dirs
        .iter()
        .map(|data| {
            let (data, url, cfg) = (data.clone(), db.url.clone(), cfg.display().to_string());
            std::thread::spawn(move || {
                CaServer::start(&data, &["--database-url", &url, "--config", &cfg])
            })
        })
        .collect();
    let mut servers: Vec<Option<CaServer>> = started
        .into_iter()
        .map(|h| Some(h.join().expect("replica started")))
        .collect();
    let bundle = conformance::openssl::curl_http(&format!(
        "{}/ca/bundle.pem",
        servers[0].as_ref().expect("r0").http_url()
    ))
    .1;
    let https = |s: &CaServer| Https::new(s.https, "localhost:4430", &bundle);
    let mut replicas: Vec<Option<Https>> = servers.iter().map(|s| s.as_ref().map(https)).collect();

    // The root token was written by whichever replica made it; a policy written on one, a
    // token made on another, used on the third.
    let root = data_dirs
        .iter()
        .find_map(|d| std::fs::read_to_string(d.join("root-token")).ok())
        .expect("one replica wrote the root token")
        .trim()
        .to_owned();
    let vault_transports: Vec<Https> = servers.iter().flatten().map(https).collect();
    let vault_on = |k: usize| Vault {
        http: vault_transports[k].fresh(),
        token: root.clone(),
    };
    vault_on(0)
        .policy(
            "roles",
            "path \"pki_int/roles/*\" {\n  capabilities = [\"read\"]\n}\n",
        )
        .await;
    vault_on(0)
        .root("POST", "pki_int/roles/web", json!({"allowed_domains": "svc.cluster.local", "allow_subdomains": true, "key_type": "any"}))
        .await;
    let reader = vault_on(1).token_with(&["roles"]).await;
    let r = vault_on(2)
        .call("GET", "pki_int/roles/web", Some(&reader), None)
        .await;
    assert_eq!(
        r.status,
        200,
        "a token and policy from other replicas: {}",
        r.text()
    );

    // An EAB key made against the database through one replica's data directory binds an
    // account on another.
    let out = conformance::server::run(&[
        "--data-dir",
        data_dirs[0].to_str().expect("utf-8"),
        "--database-url",
        &db.url,
        "acme",
        "eab",
        "create",
        "--kid",
        "shared",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let hmac = text
        .lines()
        .find_map(|l| l.strip_prefix("hmac_key:"))
        .expect("hmac")
        .trim()
        .to_owned();

    // An ACME client alternating between replicas, with a real http-01 validation.
    let responder = conformance::acme::Http01Responder::start(responder_port).await;
    let mut client = AcmeClient::connect(
        replicas[1].as_ref().expect("r1").fresh(),
        AccountKey::generate_p256(),
    )
    .await;
    let binding = conformance::acme::eab(
        "shared",
        &hmac,
        &client.url("newAccount"),
        &client.key.jwk(),
        "HS256",
    );
    client.http = replicas[2].as_ref().expect("r2").fresh();
    let r = client
        .new_account(&json!({"externalAccountBinding": binding}))
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let mut turn = 0;
    let mut next = || {
        turn += 1;
        turn
    };
    let new_order = client.url("newOrder");
    let r = on(
        &mut client,
        &replicas,
        next(),
        &new_order,
        Some(&json!({"identifiers": [{"type": "ip", "value": "127.0.0.1"}]})),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let order = r.json();
    let order_url = r.header("location").expect("order");
    let authz_url = order["authorizations"][0]
        .as_str()
        .expect("authz")
        .to_owned();
    let authz = on(&mut client, &replicas, next(), &authz_url, None)
        .await
        .json();
    let challenge = authz["challenges"]
        .as_array()
        .expect("challenges")
        .iter()
        .find(|c| c["type"] == "http-01")
        .expect("http-01")
        .clone();
    let token = challenge["token"].as_str().expect("token");
    responder.add("127.0.0.1", token, &client.key_authorization(token));
    let r = on(
        &mut client,
        &replicas,
        next(),
        challenge["url"].as_str().expect("url"),
        Some(&json!({})),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let mut valid = false;
    for _ in 0..100 {
        let a = on(&mut client, &replicas, next(), &authz_url, None)
            .await
            .json();
        if a["status"] == "valid" {
            valid = true;
            break;
        }
        assert_eq!(a["status"], "pending", "{a}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(valid, "validated by whichever replica took the challenge");

    // One replica dies mid-order; the client finishes on the others.
    if let Some(mut dead) = servers[0].take() {
        dead.kill();
    }
    replicas[0] = None;
    let finalize = order["finalize"].as_str().expect("finalize").to_owned();
    let r = on(
        &mut client,
        &replicas,
        next(),
        &finalize,
        Some(&json!({"csr": b64(&csr_der_ip())})),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let o = on(&mut client, &replicas, next(), &order_url, None)
        .await
        .json();
    assert_eq!(o["status"], "valid");
    let pem = on(
        &mut client,
        &replicas,
        next(),
        o["certificate"].as_str().expect("cert"),
        None,
    )
    .await
    .text();
    // The certificate the surviving replicas handed out: this order's, chaining to the bundle,
    // and recorded in the shared ledger.
    let blocks = conformance::openssl::pem_blocks(&pem);
    assert_eq!(blocks.len(), 2, "{pem}");
    std::fs::write(dir.join("mid-order.pem"), &blocks[0]).expect("write");
    std::fs::write(dir.join("mid-order-chain.pem"), &blocks[1]).expect("write");
    std::fs::write(dir.join("bundle.pem"), &bundle).expect("write");
    let (ok, said) = conformance::openssl::verify(
        dir,
        "bundle.pem",
        Some("mid-order-chain.pem"),
        "mid-order.pem",
    );
    assert!(ok, "{said}");
    let san = conformance::openssl::openssl(
        dir,
        &[
            "x509",
            "-in",
            "mid-order.pem",
            "-noout",
            "-ext",
            "subjectAltName",
        ],
    );
    assert!(san.contains("IP Address:127.0.0.1"), "{san}");
    let serial = conformance::openssl::serial_of(dir, "mid-order.pem");
    let store = conformance::ledger::open(dir, &["--database-url", &db.url]).await;
    let row = conformance::ledger::row(&store, &serial).await;
    assert_eq!(
        row.certificate.der,
        conformance::openssl::der_of(dir, "mid-order.pem")
    );

    // Issue on the two living replicas; revoke on one; the other's CRL lists it.
    let mut serials = Vec::new();
    for k in [1, 2] {
        let r = vault_on(k)
            .root(
                "POST",
                "pki_int/issue/web",
                json!({"common_name": format!("r{k}.svc.cluster.local")}),
            )
            .await;
        serials.push(
            r.json()["data"]["serial_number"]
                .as_str()
                .expect("serial")
                .to_owned(),
        );
    }
    vault_on(1)
        .root(
            "POST",
            "pki_int/revoke",
            json!({"serial_number": serials[1]}),
        )
        .await;
    let wanted = conformance::openssl::serial_bytes(&serials[1]);
    let r2 = servers[2].as_ref().expect("r2").http_url();
    // Replica 2 sees the revocation within its CRL cache time (5 s).
    let crl = tokio::task::block_in_place(|| {
        conformance::crl::wait_listed(&r2, dir, &wanted, Duration::from_secs(30))
    });
    assert!(
        !crl.lists(&conformance::openssl::serial_bytes(&serials[0])),
        "only the revoked one: {}",
        crl.text
    );
    let listed = true;
    figure(
        "replicas",
        json!({"replicas": 3, "killed_mid_order": 1, "order": "valid", "crl_on_other_replica": listed}),
    );
    drop(servers);
}

fn csr_der_ip() -> Vec<u8> {
    let key = rcgen::KeyPair::generate().expect("key");
    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.subject_alt_names = vec![rcgen::SanType::IpAddress("127.0.0.1".parse().expect("ip"))];
    params.serialize_request(&key).expect("csr").der().to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overload_is_shed_with_503_and_bounded_memory() {
    let clients = knob("OVERLOAD_CLIENTS", 48);
    let seconds = knob("OVERLOAD_SECONDS", 2);
    let tmp = tempfile::tempdir().expect("tempdir");
    let cfg = tmp.path().join("ca.toml");
    std::fs::write(&cfg, "[limits]\nmax_in_flight = 4\n").expect("config");
    let server = CaServer::start(
        &tmp.path().join("data"),
        &["--config", cfg.to_str().expect("utf-8")],
    );
    let vault = Vault::connect(&server);
    vault
        .root("POST", "pki_int/roles/web", json!({"allowed_domains": "svc.cluster.local", "allow_subdomains": true, "key_type": "any"}))
        .await;
    let bundle = conformance::openssl::curl_http(&format!("{}/ca/bundle.pem", server.http_url())).1;
    let stop = Arc::new(AtomicBool::new(false));
    let outcomes: Arc<Mutex<Vec<(u16, bool, Duration)>>> = Arc::default();
    let mut tasks = Vec::new();
    for c in 0..clients {
        let http = Https::new(
            server.https,
            &format!("localhost:{}", server.https.port()),
            &bundle,
        );
        let (token, stop, outcomes) = (
            vault.token.clone(),
            Arc::clone(&stop),
            Arc::clone(&outcomes),
        );
        tasks.push(tokio::spawn(async move {
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                let started = std::time::Instant::now();
                let body =
                    json!({"common_name": format!("c{c}-{i}.svc.cluster.local")}).to_string();
                let r = http
                    .try_request_with(
                        "POST",
                        "/v1/pki_int/issue/web",
                        &[("x-vault-token", &token)],
                        None,
                        body.into_bytes(),
                    )
                    .await;
                if let Ok(r) = r {
                    let retry = r.header("retry-after").is_some();
                    outcomes
                        .lock()
                        .expect("lock")
                        .push((r.status, retry, started.elapsed()));
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.expect("a load worker panicked");
    }
    let status = std::fs::read_to_string(format!("/proc/{}/status", server.pid())).expect("status");
    let peak_kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .expect("VmHWM");
    let outcomes = outcomes.lock().expect("lock").clone();
    let ok: Vec<Duration> = outcomes
        .iter()
        .filter(|o| o.0 == 200)
        .map(|o| o.2)
        .collect();
    let shed = outcomes.iter().filter(|o| o.0 == 503).count();
    assert!(
        outcomes
            .iter()
            .all(|(s, retry, _)| *s == 200 || (*s == 503 && *retry)),
        "only 200, or 503 with Retry-After: {:?}",
        outcomes
            .iter()
            .filter(|o| o.0 != 200 && o.0 != 503)
            .take(5)
            .collect::<Vec<_>>()
    );
    assert!(
        !ok.is_empty() && shed > 0,
        "served some, shed some: {} / {shed}",
        ok.len()
    );
    assert!(peak_kib < 300 * 1024, "peak RSS {peak_kib} KiB");
    let mut sorted = ok.clone();
    sorted.sort();
    let p99 = sorted[(sorted.len() * 99 / 100).min(sorted.len() - 1)];
    figure(
        "overload",
        json!({"clients": clients, "max_in_flight": 4, "served": ok.len(), "shed_503": shed,
               "p99_ms_served": p99.as_secs_f64() * 1000.0, "peak_rss_kib": peak_kib}),
    );
}

/// A PostgreSQL outage under load: while the database is down the clients see only 503 with
/// `Retry-After`, the first within seconds of the outage; service comes back by itself; every
/// certificate a client received is in the ledger.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_outage_under_load() {
    let seconds = knob("OUTAGE_SECONDS", 4);
    let clients = knob("OUTAGE_CLIENTS", 8);
    let pg = tokio::task::spawn_blocking(conformance::postgres::EphemeralPostgres::start)
        .await
        .expect("postgres");
    let tmp = tempfile::tempdir().expect("tempdir");
    let server = CaServer::start(&tmp.path().join("data"), &["--database-url", &pg.url]);
    let vault = Vault::connect(&server);
    vault
        .root("POST", "pki_int/roles/web", json!({"allowed_domains": "svc.cluster.local", "allow_subdomains": true, "key_type": "any"}))
        .await;
    let bundle = conformance::openssl::curl_http(&format!("{}/ca/bundle.pem", server.http_url())).1;
    let begin = std::time::Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    // (time since begin, status, Retry-After present, serial)
    type Outcome = (Duration, u16, bool, Option<String>);
    let outcomes: Arc<Mutex<Vec<Outcome>>> = Arc::default();
    let mut tasks = Vec::new();
    for c in 0..clients {
        let http = Https::new(
            server.https,
            &format!("localhost:{}", server.https.port()),
            &bundle,
        );
        let (token, stop, outcomes) = (
            vault.token.clone(),
            Arc::clone(&stop),
            Arc::clone(&outcomes),
        );
        tasks.push(tokio::spawn(async move {
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                let body =
                    json!({"common_name": format!("o{c}-{i}.svc.cluster.local")}).to_string();
                if let Ok(r) = http
                    .try_request_with(
                        "POST",
                        "/v1/pki_int/issue/web",
                        &[("x-vault-token", &token)],
                        None,
                        body.into_bytes(),
                    )
                    .await
                {
                    let serial = r.json()["data"]["serial_number"]
                        .as_str()
                        .map(str::to_owned);
                    let retry = r.header("retry-after").is_some();
                    outcomes
                        .lock()
                        .expect("lock")
                        .push((begin.elapsed(), r.status, retry, serial));
                    if r.status == 503 {
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let down_at = begin.elapsed();
    tokio::task::block_in_place(|| pg.stop());
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    let up_at = begin.elapsed();
    tokio::task::block_in_place(|| pg.start_again());
    let mut recovered_at = None;
    for _ in 0..120 {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let ok_after = outcomes
            .lock()
            .expect("lock")
            .iter()
            .find(|o| o.0 > up_at && o.1 == 200)
            .map(|o| o.0);
        if ok_after.is_some() {
            recovered_at = ok_after;
            break;
        }
    }
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.expect("a load worker panicked");
    }
    let outcomes = outcomes.lock().expect("lock").clone();
    let recovered_at = recovered_at.expect("service came back by itself");
    // Requests answered after the stop (past those already committing) and before the restart
    // saw the database down.
    let during: Vec<&Outcome> = outcomes
        .iter()
        .filter(|o| o.0 > down_at + Duration::from_millis(500) && o.0 < up_at)
        .collect();
    assert!(
        !during.is_empty(),
        "requests were answered during the outage (down at {down_at:?}, up at {up_at:?}): {:?}",
        outcomes
            .iter()
            .map(|o| (o.0.as_millis(), o.1))
            .collect::<Vec<_>>()
    );
    assert!(
        during.iter().all(|o| o.1 == 503 && o.2 && o.3.is_none()),
        "only 503 + Retry-After while down: {:?}",
        during.iter().map(|o| o.1).collect::<Vec<_>>()
    );
    let first_503 = outcomes
        .iter()
        .find(|o| o.0 > down_at && o.1 == 503)
        .map(|o| o.0 - down_at)
        .expect("a 503");
    assert!(
        first_503 < Duration::from_secs(5),
        "first 503 after {first_503:?}"
    );
    let mut histogram = std::collections::BTreeMap::new();
    for o in &outcomes {
        *histogram.entry(o.1.to_string()).or_insert(0u64) += 1;
    }
    let received: Vec<Vec<u8>> = outcomes
        .iter()
        .filter_map(|o| o.3.as_deref().map(serial_bytes))
        .collect();
    let store = ca_store::open(&ca_store::DatabaseUrl::new(pg.url.clone()))
        .await
        .expect("ledger");
    let mut missing = 0;
    for serial in &received {
        if store
            .certificate_by_serial(serial)
            .await
            .expect("read")
            .is_none()
        {
            missing += 1;
        }
    }
    store.close().await;
    assert_eq!(missing, 0, "a certificate returned but not recorded");
    figure(
        "database-outage",
        json!({"clients": clients, "outage_seconds": seconds, "statuses": histogram,
               "first_503_after_ms": first_503.as_secs_f64() * 1000.0,
               "recovered_after_restart_ms": (recovered_at - up_at).as_secs_f64() * 1000.0,
               "received": received.len(), "missing": missing}),
    );
}
