//! ACME load generator: concurrent full issuances against any RFC 8555 server.
//!
//! Each worker registers one account (reused), then loops: newOrder for its own name, fetch the
//! authorization, publish the http-01 key authorization on a real responder, answer the
//! challenge, wait for the authorization, finalize with its CSR, wait for the order, download the
//! certificate. Reports issuances per second and latency percentiles of whole issuances.
//!
//! Usage: acme-load --server https://localhost:8443/acme/directory --root bundle.pem
//!          --http01-port 5002 --csr-dir DIR [--account-key rsa|p256] [--workers 32]
//!          [--seconds 20] [--label ca-server]
//! `DIR` holds `w<N>.csr.der` for `w<N>.load.test` and, for `--account-key rsa` (the default:
//! cert-manager's and certbot's RS256 accounts), `w<N>.account.der`, an RSA key in PKCS#8 DER
//! (ring cannot generate RSA keys; see conformance/bench/acme.sh). `p256` gives each worker a
//! fresh ES256 account key, as lego and instant-acme use.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use conformance::acme::{AccountKey, AcmeClient, Http01Responder, Https, b64};
use serde_json::{Value, json};

struct Args {
    server: String,
    root: String,
    http01_port: u16,
    csr_dir: String,
    workers: usize,
    seconds: u64,
    label: String,
    rsa_accounts: bool,
}

fn parse_args() -> Args {
    let mut args = Args {
        server: String::new(),
        root: String::new(),
        http01_port: 5002,
        csr_dir: String::new(),
        workers: 32,
        seconds: 20,
        label: "server".into(),
        rsa_accounts: true,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--server" => args.server = value,
            "--root" => args.root = value,
            "--http01-port" => args.http01_port = value.parse().unwrap_or_else(|e| panic!("{e}")),
            "--csr-dir" => args.csr_dir = value,
            "--workers" => args.workers = value.parse().unwrap_or_else(|e| panic!("{e}")),
            "--seconds" => args.seconds = value.parse().unwrap_or_else(|e| panic!("{e}")),
            "--label" => args.label = value,
            "--account-key" => {
                args.rsa_accounts = match value.as_str() {
                    "rsa" => true,
                    "p256" => false,
                    other => panic!("--account-key {other}: rsa or p256"),
                }
            }
            other => panic!("unknown flag {other}"),
        }
    }
    assert!(
        !args.server.is_empty() && !args.root.is_empty() && !args.csr_dir.is_empty(),
        "--server, --root and --csr-dir are required"
    );
    args
}

/// Splits `https://host:port/path` into (socket address, authority, path).
fn split_url(url: &str) -> (SocketAddr, String, String) {
    let rest = url
        .strip_prefix("https://")
        .unwrap_or_else(|| panic!("{url} must be https"));
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    let (host, port) = authority.rsplit_once(':').unwrap_or((authority, "443"));
    let ip = if host == "localhost" {
        "127.0.0.1"
    } else {
        host
    };
    let addr: SocketAddr = format!("{ip}:{port}")
        .parse()
        .unwrap_or_else(|e| panic!("{e}"));
    (addr, authority.to_owned(), format!("/{path}"))
}

/// Time spent in each step of an issuance (microseconds, summed over all workers), and how often
/// a poll had to wait: where an issuance's latency goes.
static STEP_MICROS: [AtomicU64; 8] = [const { AtomicU64::new(0) }; 8];
const STEPS: [&str; 8] = [
    "new_order",
    "authz",
    "challenge",
    "authz_poll",
    "order_ready",
    "finalize",
    "order_valid",
    "download",
];
static POLL_WAITS: AtomicU64 = AtomicU64::new(0);
/// badNonce answers the clients retried (each server restart or stale nonce makes one).
static BAD_NONCE_RETRIES: AtomicU64 = AtomicU64::new(0);

fn step(i: usize, since: Instant) -> Instant {
    STEP_MICROS[i].fetch_add(since.elapsed().as_micros() as u64, Ordering::Relaxed);
    Instant::now()
}

async fn poll(client: &mut AcmeClient, url: &str, until: &[&str]) -> Value {
    for _ in 0..600 {
        let v = client.post(url, None).await.json();
        if until.iter().any(|s| v["status"] == *s) {
            return v;
        }
        POLL_WAITS.fetch_add(1, Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("{url} never reached {until:?}");
}

async fn issue(client: &mut AcmeClient, responder: &Http01Responder, name: &str, csr: &[u8]) {
    let t = Instant::now();
    let new_order = client.url("newOrder");
    let r = client
        .post(
            &new_order,
            Some(&json!({"identifiers": [{"type": "dns", "value": name}]})),
        )
        .await;
    assert_eq!(r.status, 201, "newOrder: {}", r.text());
    let order_url = r
        .header("location")
        .unwrap_or_else(|| panic!("no order location"));
    let order = r.json();
    let authz_url = order["authorizations"][0]
        .as_str()
        .unwrap_or_else(|| panic!("no authz"))
        .to_owned();
    let t = step(0, t);
    let authz = client.post(&authz_url, None).await.json();
    let mut t = step(1, t);
    if authz["status"] != "valid" {
        let ch = authz["challenges"]
            .as_array()
            .and_then(|c| c.iter().find(|c| c["type"] == "http-01"))
            .unwrap_or_else(|| panic!("no http-01"))
            .clone();
        let token = ch["token"].as_str().unwrap_or_default();
        responder.add(name, token, &client.key_authorization(token));
        let r = client
            .post(ch["url"].as_str().unwrap_or_default(), Some(&json!({})))
            .await;
        assert_eq!(r.status, 200, "challenge: {}", r.text());
        t = step(2, t);
        let a = poll(client, &authz_url, &["valid", "invalid"]).await;
        assert_eq!(a["status"], "valid", "{a}");
        t = step(3, t);
    }
    let order = poll(client, &order_url, &["ready", "invalid"]).await;
    let t = step(4, t);
    assert_eq!(order["status"], "ready", "{order}");
    let r = client
        .post(
            order["finalize"].as_str().unwrap_or_default(),
            Some(&json!({"csr": b64(csr)})),
        )
        .await;
    assert_eq!(r.status, 200, "finalize: {}", r.text());
    let t = step(5, t);
    let order = poll(client, &order_url, &["valid", "invalid"]).await;
    assert_eq!(order["status"], "valid", "{order}");
    let t = step(6, t);
    let r = client
        .post(order["certificate"].as_str().unwrap_or_default(), None)
        .await;
    assert_eq!(r.status, 200, "download: {}", r.text());
    step(7, t);
}

fn panic_text(e: tokio::task::JoinError) -> String {
    let payload = e.into_panic();
    payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| (*s).to_owned()))
        .unwrap_or_default()
}

#[tokio::main]
async fn main() {
    let args = parse_args();
    let root = std::fs::read_to_string(&args.root).unwrap_or_else(|e| panic!("{}: {e}", args.root));
    let (addr, authority, path) = split_url(&args.server);
    let responder = Arc::new(Http01Responder::start(args.http01_port).await);
    let deadline = Instant::now() + Duration::from_secs(args.seconds);
    let mut tasks = Vec::new();
    for w in 0..args.workers {
        let (root, authority, path, responder) = (
            root.clone(),
            authority.clone(),
            path.clone(),
            Arc::clone(&responder),
        );
        let csr = std::fs::read(format!("{}/w{w}.csr.der", args.csr_dir))
            .unwrap_or_else(|e| panic!("csr {w}: {e}"));
        let key = if args.rsa_accounts {
            let path = format!("{}/w{w}.account.der", args.csr_dir);
            let der = std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
            AccountKey::rsa_from_pkcs8(&der)
        } else {
            AccountKey::generate_p256()
        };
        tasks.push(tokio::spawn(async move {
            let http = Https::new(addr, &authority, &root);
            let mut client = AcmeClient::connect_at(http, key, &path).await;
            let r = client
                .new_account(&json!({"termsOfServiceAgreed": true}))
                .await;
            assert!(
                r.status == 201 || r.status == 200,
                "newAccount: {}",
                r.text()
            );
            let name = format!("w{w}.load.test");
            let mut latencies = Vec::new();
            while Instant::now() < deadline {
                let t0 = Instant::now();
                issue(&mut client, &responder, &name, &csr).await;
                latencies.push(t0.elapsed());
            }
            BAD_NONCE_RETRIES.fetch_add(client.bad_nonce_retries, Ordering::Relaxed);
            latencies
        }));
    }
    let started = Instant::now();
    let mut latencies: Vec<Duration> = Vec::new();
    for t in tasks {
        match t.await {
            Ok(l) => latencies.extend(l),
            Err(e) if e.is_panic() => {
                let text = panic_text(e);
                // A server that stops answering (the client's 60 s request timeout) is a
                // stall, which the bench scripts report as a timeout (exit 124, like
                // `timeout`), not as a refused request.
                if text.contains("timed out after") {
                    eprintln!("acme-load: the server stopped answering: {text}");
                    std::process::exit(124);
                }
                panic!("worker: {text}");
            }
            Err(e) => panic!("worker: {e}"),
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    latencies.sort();
    let pct = |p: f64| {
        latencies
            .get(((latencies.len() as f64 - 1.0) * p) as usize)
            .map(|d| d.as_secs_f64() * 1000.0)
            .unwrap_or(0.0)
    };
    let rate = latencies.len() as f64 / elapsed;
    let n = latencies.len().max(1) as f64;
    let steps: serde_json::Map<String, Value> = STEPS
        .iter()
        .zip(&STEP_MICROS)
        .map(|(name, micros)| {
            let ms = micros.load(Ordering::Relaxed) as f64 / n / 1000.0;
            ((*name).to_owned(), json!((ms * 100.0).round() / 100.0))
        })
        .collect();
    println!(
        "{}",
        json!({"label": args.label, "workers": args.workers, "issuances": latencies.len(), "seconds": elapsed,
            "issuances_per_second": rate, "p50_ms": pct(0.50), "p90_ms": pct(0.90), "p99_ms": pct(0.99),
            "mean_step_ms": steps, "poll_waits": POLL_WAITS.load(Ordering::Relaxed),
            "bad_nonce_retries": BAD_NONCE_RETRIES.load(Ordering::Relaxed)})
    );
}
