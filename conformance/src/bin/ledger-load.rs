//! Ledger benchmark: seeds a ledger with N certificates through the store's own write path
//! (`Ledger::insert_certificates`, the call the group-commit writer makes, in its batch size),
//! then times the reports' hot query: the first page of "expiring within 7 days".
//!
//! The mix imitates a year of a cluster: 5 % long-lived TLS certificates (10 k requesters, 90-day
//! certificates, 5 per requester over the year), 95 % SPIFFE SVIDs (24-hour certificates, 5 k
//! workloads, ~190 each over the year), in time order, so most rows are expired or superseded and
//! only the latest of each lineage is current — what a real ledger looks like.
//!
//! Usage: ledger-load --database-url sqlite:///tmp/ledger.db --rows 1000000 [--seed-only|--query-only]
//! Prints JSON lines.

use std::time::Instant;

use ca_store::{DatabaseUrl, ExpiryQuery, NewCertificate, Protocol, Requester};
use serde_json::json;

fn arg(name: &str, default: &str) -> String {
    let mut it = std::env::args().skip_while(|a| a != name);
    it.next();
    it.next().unwrap_or_else(|| default.to_owned())
}

const BATCH: usize = 2_000;

fn row(i: u64, now: i64, total: u64) -> NewCertificate {
    // Rows are generated in time order (oldest first) so renewals supersede older rows.
    let t = now - 365 * 86_400 + (i as i64) * (365 * 86_400) / total as i64;
    let long_lived = i.is_multiple_of(20);
    let (profile, name, lifetime, ns, identity) = if long_lived {
        let n = (i / 20) % 10_000;
        (
            "tls-server",
            format!("svc-{n}.ns-{}.svc.cluster.local", n % 50),
            90 * 86_400,
            format!("ns-{}", n % 50),
            format!("https://ca.example/acme/acct/{}", n % 50),
        )
    } else {
        let n = i % 5_000;
        (
            "spiffe",
            format!("spiffe://cluster.local/ns/ns-{}/sa/w-{n}", n % 50),
            86_400,
            format!("ns-{}", n % 50),
            format!("kubernetes/ns-{}/w-{n}", n % 50),
        )
    };
    let mut serial = vec![0x40];
    serial.extend_from_slice(&i.to_be_bytes());
    serial.extend_from_slice(&[0x5a; 8]);
    let spiffe = name.starts_with("spiffe://");
    NewCertificate {
        serial,
        issuer_id: "bench-issuer".into(),
        profile: profile.into(),
        subject: if spiffe {
            String::new()
        } else {
            format!("CN={name}")
        },
        common_name: (!spiffe).then(|| name.clone()),
        dns_names: if spiffe { vec![] } else { vec![name.clone()] },
        ip_addresses: vec![],
        uris: if spiffe { vec![name.clone()] } else { vec![] },
        emails: vec![],
        spiffe_id: spiffe.then(|| name.clone()),
        key_algorithm: "ECDSA-P256".into(),
        not_before: t - 60,
        not_after: t + lifetime,
        requester: Requester {
            protocol: if spiffe {
                Protocol::Vault
            } else {
                Protocol::Acme
            },
            identity,
            namespace: Some(ns),
            service_account: None,
            detail: Default::default(),
        },
        request_id: format!("bench-{i}"),
        created_at: t,
        // A realistic 500-byte DER-sized blob (the ledger never parses it).
        der: vec![0x30; 500],
        crl_shard: None,
        workload_namespace: None,
    }
}

#[tokio::main]
async fn main() {
    let url = DatabaseUrl::new(arg("--database-url", "sqlite:///tmp/ledger-bench.db"));
    let total: u64 = arg("--rows", "1000000").parse().unwrap_or(1_000_000);
    let store = ca_store::open(&url)
        .await
        .unwrap_or_else(|e| panic!("open: {e}"));
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let query_only = std::env::args().any(|a| a == "--query-only");
    let seed_only = std::env::args().any(|a| a == "--seed-only");

    if !query_only {
        let started = Instant::now();
        let mut batch = Vec::with_capacity(BATCH);
        for i in 0..total {
            batch.push(row(i, now, total));
            if batch.len() == BATCH || i + 1 == total {
                store
                    .insert_certificates(&batch)
                    .await
                    .unwrap_or_else(|e| panic!("insert: {e}"));
                batch.clear();
            }
        }
        let secs = started.elapsed().as_secs_f64();
        println!(
            "{}",
            json!({"label": "seed", "backend": format!("{:?}", store.backend()), "rows": total,
                   "seconds": (secs * 10.0).round() / 10.0, "rows_per_second": (total as f64 / secs).round()})
        );
    }
    if seed_only {
        store.close().await;
        return;
    }

    // First page of "expiring within 7 days" (what `ledger expiring --within 7d` and
    // GET /v1/ledger/certificates?within=168h run), 50 times; median and worst.
    let query = ExpiryQuery {
        not_after_from: Some(now),
        not_after_until: Some(now + 7 * 86_400),
        exclude_superseded: true,
        limit: 100,
        ..ExpiryQuery::default()
    };
    let mut times = Vec::new();
    let mut rows = 0;
    for _ in 0..50 {
        let started = Instant::now();
        rows = store
            .expiring(&query)
            .await
            .unwrap_or_else(|e| panic!("query: {e}"))
            .len();
        times.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    times.sort_by(f64::total_cmp);
    let summary = store
        .summary(now)
        .await
        .unwrap_or_else(|e| panic!("summary: {e}"));
    println!(
        "{}",
        json!({"label": "first page, expiring within 7 days", "backend": format!("{:?}", store.backend()),
               "rows_returned": rows, "median_ms": (times[25] * 100.0).round() / 100.0,
               "max_ms": (times[49] * 100.0).round() / 100.0,
               "ledger_total": summary.total, "active": summary.active, "superseded": summary.superseded})
    );
    store.close().await;
}
