//! Sign-endpoint load generator: many concurrent CSR signings, a distinct CSR per request (so no
//! server can cache verification results), against the Vault-compatible API or cfssl.
//!
//! Usage: sign-load --target vault|cfssl --url https://localhost:8443 --root bundle.pem
//!          [--token T] [--path pki_int/sign/bench] [--workers 64] [--seconds 20] [--csrs 60000]
//! Prints one JSON line: signings/s and latency percentiles.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use conformance::acme::Https;
use serde_json::json;

fn arg(name: &str, default: &str) -> String {
    let mut it = std::env::args().skip_while(|a| a != name);
    it.next();
    it.next().unwrap_or_else(|| default.to_owned())
}

fn csr(i: usize) -> String {
    let name = format!("w{i}.bench.svc.cluster.local");
    let mut params =
        rcgen::CertificateParams::new(vec![name.clone()]).unwrap_or_else(|e| panic!("{e}"));
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    let key = rcgen::KeyPair::generate().unwrap_or_else(|e| panic!("{e}"));
    params
        .serialize_request(&key)
        .unwrap_or_else(|e| panic!("{e}"))
        .pem()
        .unwrap_or_else(|e| panic!("{e}"))
}

#[tokio::main]
async fn main() {
    let target = arg("--target", "vault");
    let url = arg("--url", "https://localhost:8443");
    let root = std::fs::read_to_string(arg("--root", "bundle.pem"))
        .unwrap_or_else(|e| panic!("root: {e}"));
    let token = arg("--token", "");
    let path = arg("--path", "pki_int/sign/bench");
    let workers: usize = arg("--workers", "64").parse().unwrap_or(64);
    let seconds: u64 = arg("--seconds", "20").parse().unwrap_or(20);
    let count: usize = arg("--csrs", "60000").parse().unwrap_or(60_000);

    // Distinct CSRs, made before the clock starts.
    let started = Instant::now();
    let csrs: Arc<Vec<String>> = Arc::new((0..count).map(csr).collect());
    eprintln!("generated {count} CSRs in {:?}", started.elapsed());

    let authority = url
        .trim_start_matches("https://")
        .trim_end_matches('/')
        .to_owned();
    let (host, port) = authority.rsplit_once(':').unwrap_or((&authority, "443"));
    let ip = if host == "localhost" {
        "127.0.0.1"
    } else {
        host
    };
    let addr: SocketAddr = format!("{ip}:{port}")
        .parse()
        .unwrap_or_else(|e| panic!("{e}"));
    let next = Arc::new(AtomicUsize::new(0));
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let mut tasks = Vec::new();
    for _ in 0..workers {
        let (csrs, next, root, authority, token, path, target) = (
            Arc::clone(&csrs),
            Arc::clone(&next),
            root.clone(),
            authority.clone(),
            token.clone(),
            path.clone(),
            target.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let http = Https::new(addr, &authority, &root);
            let mut latencies = Vec::new();
            while Instant::now() < deadline {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(csr) = csrs.get(i) else { break };
                let t0 = Instant::now();
                let r = if target == "cfssl" {
                    let body = json!({"certificate_request": csr}).to_string().into_bytes();
                    http.request("POST", "/api/v1/cfssl/sign", Some("application/json"), body)
                        .await
                } else {
                    let body = json!({"csr": csr, "ttl": "24h"}).to_string().into_bytes();
                    http.request_with(
                        "POST",
                        &format!("/v1/{path}"),
                        &[("x-vault-token", token.as_str())],
                        None,
                        body,
                    )
                    .await
                };
                assert_eq!(r.status, 200, "{}", r.text());
                latencies.push(t0.elapsed());
            }
            latencies
        }));
    }
    let run_start = Instant::now();
    let mut latencies = Vec::new();
    for t in tasks {
        latencies.extend(t.await.unwrap_or_else(|e| panic!("{e}")));
    }
    let elapsed = run_start.elapsed().as_secs_f64();
    latencies.sort();
    let pct = |p: f64| {
        latencies
            .get(((latencies.len() as f64 - 1.0) * p) as usize)
            .map(|d| d.as_secs_f64() * 1000.0)
            .unwrap_or(0.0)
    };
    println!(
        "{}",
        json!({"target": target, "workers": workers, "signings": latencies.len(), "seconds": elapsed,
            "signings_per_second": latencies.len() as f64 / elapsed, "p50_ms": pct(0.5), "p99_ms": pct(0.99),
            "exhausted_csrs": latencies.len() >= count})
    );
}
