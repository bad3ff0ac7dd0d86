//! Behaviour while something is wrong: slow or too many clients, a full server, the database gone
//! (PostgreSQL stopped) or locked (SQLite held by another process). Promises: bounded connections
//! and headers, 503 + `Retry-After` in each protocol's form instead of hangs, readiness failing
//! fast, nothing half-written, and service resuming by itself.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, Instant};

use conformance::acme::{Https, Response};
use conformance::postgres::EphemeralPostgres;
use conformance::server::CaServer;
use conformance::vault::{Vault, errors, ledger_total};
use serde_json::json;

fn config(dir: &Path, toml: &str) -> String {
    let path = dir.join("ca.toml");
    std::fs::write(&path, toml).expect("config");
    path.display().to_string()
}

/// Reads until EOF or `limit`; returns whether the peer closed the connection in time.
fn closed_within(stream: &mut TcpStream, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    let mut buf = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        stream.set_read_timeout(Some(left)).expect("timeout");
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
            Err(_) => return false,
        }
    }
}

/// Whether the peer closed the connection within `limit` without answering a byte (a served
/// request followed by an idle close does not count).
fn closed_unanswered(stream: &mut TcpStream, limit: Duration) -> bool {
    let mut buf = [0u8; 1];
    stream.set_read_timeout(Some(limit)).expect("timeout");
    match stream.read(&mut buf) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_headers_and_surplus_connections_are_cut_off() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let cfg = config(
        tmp.path(),
        "[limits]\nheader_read_timeout = \"1s\"\nmax_connections = 8\n",
    );
    let server = CaServer::start(&tmp.path().join("data"), &["--config", &cfg]);

    // Slow loris: headers a byte at a time, never finished. Closed after the header timeout.
    let mut slow: Vec<TcpStream> = (0..4)
        .map(|_| {
            let mut s = TcpStream::connect(server.http).expect("connect");
            s.write_all(b"GET /healthz HTTP/1.1\r\nHo").expect("write");
            s
        })
        .collect();
    for s in &mut slow {
        let _ = s.write_all(b"s");
        assert!(
            closed_within(s, Duration::from_secs(10)),
            "a slow client is cut off"
        );
    }
    // An idle keep-alive connection too.
    let mut idle = TcpStream::connect(server.http).expect("connect");
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .expect("write");
    assert!(
        closed_within(&mut idle, Duration::from_secs(10)),
        "idle keep-alive ends"
    );

    // Eight connections held open: the ninth is closed as it arrives; a slot frees, a client
    // gets in again. A server of its own, whose idle connections stay for 30 s: each held
    // connection has had a request answered (so it was surely accepted) and then sits idle in
    // its slot, however slowly a loaded machine runs.
    let cfg = config(
        tmp.path(),
        "[limits]\nheader_read_timeout = \"30s\"\nmax_connections = 8\n",
    );
    let server = CaServer::start(&tmp.path().join("data-cap"), &["--config", &cfg]);
    let held: Vec<TcpStream> = (0..8)
        .map(|_| {
            let mut s = TcpStream::connect(server.http).expect("connect");
            s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
                .expect("write");
            s.set_read_timeout(Some(Duration::from_secs(10)))
                .expect("timeout");
            let mut got = Vec::new();
            let mut buf = [0u8; 1024];
            while !got.windows(6).any(|w| w == b"\r\n\r\nok") {
                let n = s.read(&mut buf).expect("a held connection is answered");
                assert!(n > 0, "a held connection was closed: {got:?}");
                got.extend_from_slice(&buf[..n]);
            }
            s
        })
        .collect();
    let mut surplus = TcpStream::connect(server.http).expect("the kernel accepts");
    let _ = surplus.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(
        closed_unanswered(&mut surplus, Duration::from_secs(5)),
        "beyond the cap: closed at once, unanswered"
    );
    drop(held);
    let mut answered = false;
    for _ in 0..50 {
        let (code, _) = conformance::openssl::curl_http(&format!("{}/healthz", server.http_url()));
        if code == 200 {
            answered = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(answered, "served again once connections closed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_server_answers_503_in_each_protocol() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let cfg = config(tmp.path(), "[limits]\nmax_in_flight = 1\n");
    let server = CaServer::start(&tmp.path().join("data"), &["--config", &cfg]);
    let vault = Vault::connect(&server);

    // A request that takes long: a kubernetes login whose TokenReview goes to an "API server"
    // that accepts connections and never answers (the server gives up after 10 s).
    let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let silent_port = silent.local_addr().expect("addr").port();
    let bundle = conformance::openssl::curl_http(&format!("{}/ca/bundle.pem", server.http_url())).1;
    vault
        .root(
            "POST",
            "auth/kubernetes/config",
            json!({"kubernetes_host": format!("https://127.0.0.1:{silent_port}"), "kubernetes_ca_cert": bundle}),
        )
        .await;
    vault
        .root(
            "POST",
            "auth/kubernetes/role/any",
            json!({"bound_service_account_names": "*", "bound_service_account_namespaces": "*"}),
        )
        .await;
    let addr = server.https;
    let authority = format!("localhost:{}", server.https.port());
    let slow = tokio::spawn({
        let (authority, bundle) = (authority.clone(), bundle.clone());
        async move {
            Https::new(addr, &authority, &bundle)
                .request_with(
                    "POST",
                    "/v1/auth/kubernetes/login",
                    &[],
                    None,
                    json!({"role": "any", "jwt": "a.b.c"})
                        .to_string()
                        .into_bytes(),
                )
                .await
                .status
        }
    });
    // Wait until the slow login holds the only slot.
    let fresh = || Https::new(addr, &authority, &bundle);
    let mut busy: Option<Response> = None;
    // Poll until the slot is taken; on a loaded machine the slow login may take a while to
    // arrive, so the bound is the login itself (it holds the slot for 10 s once it does).
    for _ in 0..600 {
        if slow.is_finished() {
            break;
        }
        let r = fresh()
            .request("GET", "/v1/sys/health", None, Vec::new())
            .await;
        if r.status == 503 {
            busy = Some(r);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let busy = busy.expect("the Vault API sheds load while full");
    assert_eq!(busy.header("retry-after").as_deref(), Some("2"));
    assert_eq!(
        errors(&busy),
        vec!["the server is busy; retry shortly".to_owned()]
    );
    let acme = fresh()
        .request("GET", "/acme/directory", None, Vec::new())
        .await;
    assert_eq!(acme.status, 503);
    assert_eq!(
        acme.header("content-type").as_deref(),
        Some("application/problem+json")
    );
    assert_eq!(acme.header("retry-after").as_deref(), Some("1"));
    assert!(
        acme.header("replay-nonce").is_some(),
        "a nonce to retry with"
    );
    // Probes and public material are never shed.
    let (code, _) = conformance::openssl::curl_http(&format!("{}/healthz", server.http_url()));
    assert_eq!(code, 200);
    let slow = tokio::time::timeout(Duration::from_secs(30), slow)
        .await
        .expect("the server gives up on the API server after 10 s, not never");
    assert_eq!(
        slow.expect("login task"),
        503,
        "the API server never answered"
    );
    // Room again.
    assert_eq!(
        fresh()
            .request("GET", "/v1/sys/health", None, Vec::new())
            .await
            .status,
        200
    );
    drop(silent);
}

/// Issues through the Vault API; returns the status and, on success, the serial.
async fn issue(vault: &Vault, cn: &str) -> (u16, Option<String>, Duration, Option<String>) {
    let started = Instant::now();
    let r = vault
        .call(
            "POST",
            "pki_int/issue/web",
            Some(&vault.token),
            Some(json!({"common_name": cn})),
        )
        .await;
    let serial = r.json()["data"]["serial_number"]
        .as_str()
        .map(str::to_owned);
    (r.status, serial, started.elapsed(), r.header("retry-after"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgresql_outage_is_503_and_passes() {
    let pg = tokio::task::spawn_blocking(EphemeralPostgres::start)
        .await
        .expect("postgres");
    let tmp = tempfile::tempdir().expect("tempdir");
    let db_args = ["--database-url", pg.url.as_str()];
    let server = CaServer::start(&tmp.path().join("data"), &db_args);
    let vault = Vault::connect(&server);
    vault
        .root(
            "POST",
            "pki_int/roles/web",
            json!({"allowed_domains": "svc.cluster.local", "allow_subdomains": true, "key_type": "any"}),
        )
        .await;
    let mut issued = Vec::new();
    for i in 0..5 {
        let (status, serial, _, _) = issue(&vault, &format!("a{i}.svc.cluster.local")).await;
        assert_eq!(status, 200);
        issued.extend(serial);
    }

    pg.stop();
    // Past the caches' 2 s: every answer now needs the database.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    for i in 0..5 {
        let (status, serial, took, retry) = issue(&vault, &format!("b{i}.svc.cluster.local")).await;
        assert_eq!(
            (status, serial, retry.as_deref()),
            (503, None, Some("2")),
            "during the outage"
        );
        assert!(
            took < Duration::from_secs(5),
            "503 quickly, not a hang: {took:?}"
        );
    }
    // Timed by curl itself (the request, not starting curl), as kubelet's probe timeout is.
    let out = conformance::process::output_within(
        std::process::Command::new("curl")
            .args(["-sS", "--max-time", "10", "-o", "/dev/null"])
            .args(["-w", "%{http_code} %{time_total}"])
            .arg(format!("{}/readyz", server.http_url())),
        conformance::process::QUICK,
    );
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    let (code, took) = said.split_once(' ').expect("code and time");
    assert_eq!(code, "503", "{said}");
    let took: f64 = took.trim().parse().expect("seconds");
    assert!(
        took < 1.0,
        "readiness answers inside kubelet's 1 s: {took} s"
    );
    let (code, _) = conformance::openssl::curl_http(&format!("{}/healthz", server.http_url()));
    assert_eq!(code, 200, "liveness does not depend on the database");

    pg.start_again();
    let mut recovered = None;
    for i in 0..60 {
        let (status, serial, _, _) = issue(&vault, &format!("c{i}.svc.cluster.local")).await;
        if status == 200 {
            recovered = serial;
            break;
        }
        assert_eq!(status, 503, "only 503 until the database is back");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    issued.push(recovered.expect("service resumes by itself"));
    assert_eq!(
        ledger_total(&server.data_dir, &db_args),
        issued.len() as u64 + 1,
        "every certificate returned is recorded (plus the server's own), none from the outage"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_locked_sqlite_file_is_503_and_writes_nothing() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let server = CaServer::start(&tmp.path().join("data"), &[]);
    let vault = Vault::connect(&server);
    vault
        .root(
            "POST",
            "pki_int/roles/web",
            json!({"allowed_domains": "svc.cluster.local", "allow_subdomains": true, "key_type": "any"}),
        )
        .await;
    let before = ledger_total(&server.data_dir, &[]);
    // Another process holds the write lock (as a backup or a stray tool might).
    let db = server.data_dir.join("ledger.db");
    let mut holder = std::process::Command::new("python3")
        .arg("-c")
        .arg(format!(
            "import sqlite3, sys, time\nc = sqlite3.connect({:?}, isolation_level=None)\nc.execute('BEGIN EXCLUSIVE')\nprint('locked', flush=True)\nsys.stdin.read()\n",
            db.display().to_string()
        ))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3");
    // Read "locked" on a thread, so a holder that never gets the lock fails the test in 30 s.
    let mut stdout = holder.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = [0u8; 7];
        let _ = tx.send(stdout.read_exact(&mut line).map(|()| line));
    });
    match rx.recv_timeout(Duration::from_secs(30)) {
        Ok(Ok(line)) => assert_eq!(&line, b"locked\n"),
        other => {
            let _ = holder.kill();
            let _ = holder.wait();
            panic!("the lock holder never took the lock: {other:?}");
        }
    }
    let (status, serial, took, retry) = issue(&vault, "locked.svc.cluster.local").await;
    assert_eq!((status, serial, retry.as_deref()), (503, None, Some("2")));
    assert!(took < Duration::from_secs(5), "{took:?}");
    drop(holder.stdin.take());
    if conformance::process::wait_within(&mut holder, Duration::from_secs(30)).is_none() {
        let _ = holder.kill();
        let _ = holder.wait();
        panic!("the lock holder did not exit within 30 s of its stdin closing");
    }
    let (status, _, _, _) = issue(&vault, "after.svc.cluster.local").await;
    assert_eq!(status, 200);
    assert_eq!(
        ledger_total(&server.data_dir, &[]),
        before + 1,
        "nothing from the locked attempt"
    );
}

/// The ledger's disk fills, then has room again. The full disk is made with the server's
/// file-size limit (`prlimit`, `RLIMIT_FSIZE`): SQLite's writes past it fail as they do on a full
/// volume, which cannot be made here without privileges. In between, writes are refused with 503
/// in each protocol's form; everything that was acknowledged — certificates, tokens, ACME
/// accounts and orders — is there afterwards; and service resumes without a restart. (Before the
/// writer connection was replaced after failures, a transaction stranded by the full disk
/// swallowed every later write: accounts were answered 201 and then did not exist.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_is_503_and_nothing_acknowledged_is_lost() {
    use conformance::acme::{AccountKey, AcmeClient};
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut server = CaServer::start(&tmp.path().join("data"), &[]);
    let vault = Vault::connect(&server);
    vault
        .root(
            "POST",
            "pki_int/roles/web",
            json!({"allowed_domains": "svc.cluster.local", "allow_subdomains": true, "key_type": "any"}),
        )
        .await;
    let (_, bundle) =
        conformance::openssl::curl_http(&format!("{}/ca/bundle.pem", server.http_url()));
    let https = || {
        Https::new(
            server.https,
            &format!("localhost:{}", server.https.port()),
            &bundle,
        )
    };
    let mut orderer = AcmeClient::connect(https(), AccountKey::generate_p256()).await;
    let r = orderer
        .new_account(&json!({"termsOfServiceAgreed": true}))
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let new_order = orderer.url("newOrder");

    let prlimit = |fsize: &str| {
        let out = std::process::Command::new("prlimit")
            .args([
                "--pid",
                &server.pid().to_string(),
                &format!("--fsize={fsize}"),
            ])
            .output()
            .expect("prlimit (util-linux)");
        assert!(
            out.status.success(),
            "prlimit: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let size = |name: &str| {
        std::fs::metadata(server.data_dir.join(name))
            .map(|m| m.len())
            .unwrap_or(0)
    };
    let room = size("ledger.db").max(size("ledger.db-wal")) + 256 * 1024;
    prlimit(&format!("{room}:unlimited"));

    let (mut serials, mut tokens, mut accounts, mut orders) = (vec![], vec![], vec![], vec![]);
    let mut refused = 0;
    for i in 0..2_000 {
        if refused >= 12 {
            break;
        }
        let (status, serial, _, retry) = issue(&vault, &format!("full{i}.svc.cluster.local")).await;
        match status {
            200 => serials.push(serial.expect("serial")),
            503 => {
                assert!(retry.is_some(), "503 without Retry-After");
                refused += 1;
            }
            other => panic!("issue during a full disk: {other}"),
        }
        let r = vault
            .call(
                "POST",
                "auth/token/create",
                Some(&vault.token),
                Some(json!({"policies": ["default"]})),
            )
            .await;
        match r.status {
            200 => tokens.push(
                r.json()["auth"]["client_token"]
                    .as_str()
                    .expect("token")
                    .to_owned(),
            ),
            503 => refused += 1,
            other => panic!("token create during a full disk: {other} {}", r.text()),
        }
        let mut client = AcmeClient::connect(https(), AccountKey::generate_p256()).await;
        let r = client
            .new_account(&json!({"termsOfServiceAgreed": true}))
            .await;
        match r.status {
            201 => accounts.push(client),
            503 => refused += 1,
            other => panic!("newAccount during a full disk: {other} {}", r.text()),
        }
        let r = orderer
            .post(
                &new_order,
                Some(
                    &json!({"identifiers": [{"type": "dns", "value": format!("o{i}.full.test")}]}),
                ),
            )
            .await;
        match r.status {
            201 => orders.push(r.header("location").expect("order location")),
            503 => refused += 1,
            other => panic!("newOrder during a full disk: {other} {}", r.text()),
        }
    }
    eprintln!(
        "acknowledged while filling: {} certificates, {} tokens, {} accounts, {} orders; {refused} refused",
        serials.len(),
        tokens.len(),
        accounts.len(),
        orders.len()
    );
    assert!(refused >= 12, "the file-size limit never refused a write");
    assert!(
        !serials.is_empty() && !accounts.is_empty(),
        "nothing acknowledged before the disk filled"
    );

    // Room again: no restart, and every acknowledged write is there.
    prlimit("unlimited:unlimited");
    let (status, _, _, _) = issue(&vault, "after.svc.cluster.local").await;
    assert_eq!(status, 200, "issuance resumes without a restart");
    for serial in &serials {
        let r = vault
            .call("GET", &format!("pki_int/cert/{serial}"), None, None)
            .await;
        assert_eq!(
            r.status,
            200,
            "acknowledged certificate {serial}: {}",
            r.text()
        );
    }
    for token in &tokens {
        let r = vault
            .call("GET", "auth/token/lookup-self", Some(token), None)
            .await;
        assert_eq!(r.status, 200, "acknowledged token: {}", r.text());
    }
    for client in &mut accounts {
        let kid = client.kid.clone().expect("account URL");
        let r = client.post(&kid, None).await;
        assert_eq!(r.status, 200, "acknowledged account {kid}: {}", r.text());
    }
    for url in &orders {
        let r = orderer.post(url, None).await;
        assert_eq!(r.status, 200, "acknowledged order {url}: {}", r.text());
    }
    let r = AcmeClient::connect(https(), AccountKey::generate_p256())
        .await
        .new_account(&json!({"termsOfServiceAgreed": true}))
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    assert!(
        server.log().iter().all(|l| !l.contains("Safety level")),
        "the write connection was left inside a transaction"
    );
    assert_eq!(server.terminate().code(), Some(0));
}
