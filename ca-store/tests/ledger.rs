//! The ledger against both real backends: an SQLite file and a real PostgreSQL server
//! (see `conformance::postgres`). Each scenario is one async function run on both.

use std::collections::BTreeMap;
use std::sync::Arc;

use ca_store::writer::LedgerWriter;
use ca_store::{DatabaseUrl, Error, ExpiryQuery, Ledger, NewCertificate, Protocol, Requester};

fn cert(serial: u32, not_after: i64, namespace: &str, profile: &str) -> NewCertificate {
    let mut detail = BTreeMap::new();
    detail.insert("order".to_owned(), format!("order-{serial}"));
    NewCertificate {
        serial: [0x42, 0, 0, 0, 0]
            .iter()
            .copied()
            .chain(serial.to_be_bytes())
            .collect(),
        issuer_id: "issuer-a".into(),
        profile: profile.into(),
        subject: format!("CN=svc-{serial}"),
        common_name: Some(format!("svc-{serial}")),
        dns_names: vec![format!("svc-{serial}.{namespace}.svc")],
        ip_addresses: vec!["10.0.0.1".into()],
        uris: vec![format!(
            "spiffe://cluster.local/ns/{namespace}/sa/svc-{serial}"
        )],
        emails: vec![],
        spiffe_id: Some(format!(
            "spiffe://cluster.local/ns/{namespace}/sa/svc-{serial}"
        )),
        key_algorithm: "ECDSA-P256".into(),
        not_before: not_after - 86_400,
        not_after,
        requester: Requester {
            protocol: Protocol::Acme,
            identity: "https://ca/acme/acct/1".into(),
            namespace: Some(namespace.into()),
            service_account: Some("cert-manager".into()),
            detail,
        },
        request_id: format!("req-{serial}"),
        created_at: 1_700_000_000,
        der: vec![0x30, 0x03, 0x02, 0x01, serial as u8],
    }
}

async fn round_trip(ledger: Arc<dyn Ledger>) {
    let c = cert(1, 2_000_000_000, "default", "spiffe");
    ledger
        .insert_certificates(std::slice::from_ref(&c))
        .await
        .expect("insert");
    let got = ledger
        .certificate_by_serial(&c.serial)
        .await
        .expect("read")
        .expect("present");
    assert_eq!(got.certificate, c, "every field survives the round trip");
    assert_eq!(got.revoked_at, None);
    assert!(
        ledger
            .certificate_by_serial(b"nope")
            .await
            .expect("read")
            .is_none()
    );
}

async fn serials_are_unique(ledger: Arc<dyn Ledger>) {
    let c = cert(7, 2_000_000_000, "default", "tls-server");
    ledger
        .insert_certificates(std::slice::from_ref(&c))
        .await
        .expect("first insert");
    let again = ledger.insert_certificates(std::slice::from_ref(&c)).await;
    assert!(matches!(again, Err(Error::AlreadyExists)), "{again:?}");

    // A batch containing a duplicate writes nothing at all.
    let fresh = cert(8, 2_000_000_000, "default", "tls-server");
    let batch = vec![fresh.clone(), c];
    assert!(ledger.insert_certificates(&batch).await.is_err());
    assert!(
        ledger
            .certificate_by_serial(&fresh.serial)
            .await
            .expect("read")
            .is_none(),
        "a rejected batch must not be partially written"
    );
}

async fn expiry_ordered_reads(ledger: Arc<dyn Ledger>) {
    // 60 certificates with not_after values in scrambled order, two namespaces, two profiles.
    let base = 1_900_000_000;
    let rows: Vec<NewCertificate> = (0..60u32)
        .map(|i| {
            let offset = i64::from((i * 37) % 60) * 3600;
            let ns = if i % 2 == 0 { "team-a" } else { "team-b" };
            let profile = if i % 3 == 0 { "spiffe" } else { "tls-server" };
            cert(100 + i, base + offset, ns, profile)
        })
        .collect();
    ledger.insert_certificates(&rows).await.expect("insert 60");

    // Window [base + 10h, base + 40h): 30 certificates, ascending not_after.
    let q = ExpiryQuery {
        not_after_from: Some(base + 10 * 3600),
        not_after_until: Some(base + 40 * 3600),
        limit: 1000,
        ..ExpiryQuery::default()
    };
    let page = ledger.expiring(&q).await.expect("query");
    assert_eq!(page.len(), 30);
    assert!(
        page.windows(2)
            .all(|w| w[0].certificate.not_after <= w[1].certificate.not_after)
    );
    assert_eq!(page[0].certificate.not_after, base + 10 * 3600);

    // Filters.
    let team_a = ledger
        .expiring(&ExpiryQuery {
            namespace: Some("team-a".into()),
            limit: 1000,
            ..ExpiryQuery::default()
        })
        .await
        .expect("namespace filter");
    assert_eq!(team_a.len(), 30);
    assert!(
        team_a
            .iter()
            .all(|r| r.certificate.requester.namespace.as_deref() == Some("team-a"))
    );
    let spiffe = ledger
        .expiring(&ExpiryQuery {
            profile: Some("spiffe".into()),
            limit: 1000,
            ..ExpiryQuery::default()
        })
        .await
        .expect("profile filter");
    assert_eq!(spiffe.len(), 20);

    // Cursor pagination visits every row exactly once, in order.
    let mut seen = Vec::new();
    let mut q = ExpiryQuery {
        limit: 7,
        ..ExpiryQuery::default()
    };
    loop {
        let page = ledger.expiring(&q).await.expect("page");
        let Some(last) = page.last() else { break };
        q.after = Some((last.certificate.not_after, last.id));
        seen.extend(page.into_iter().map(|r| r.certificate.not_after));
    }
    assert_eq!(seen.len(), 60);
    assert!(seen.windows(2).all(|w| w[0] <= w[1]));
}

async fn group_commit_records_everything(ledger: Arc<dyn Ledger>) {
    let writer = LedgerWriter::spawn(Arc::clone(&ledger));
    let mut tasks = Vec::new();
    for i in 0..300u32 {
        let writer = writer.clone();
        tasks.push(tokio::spawn(async move {
            writer
                .record(cert(
                    10_000 + i,
                    2_000_000_000 + i64::from(i),
                    "load",
                    "spiffe",
                ))
                .await
        }));
    }
    // One duplicate among the concurrent writes fails alone.
    let dup = writer.record(cert(10_000, 2_000_000_000, "load", "spiffe"));
    let mut ok = 0;
    for t in tasks {
        if t.await.expect("join").is_ok() {
            ok += 1;
        }
    }
    let dup_result = dup.await;
    assert_eq!(
        ok + usize::from(dup_result.is_ok()),
        300,
        "exactly one of the two writes of serial 10000 fails"
    );
    writer.close().await;
    let all = ledger
        .expiring(&ExpiryQuery {
            namespace: Some("load".into()),
            limit: 1000,
            ..ExpiryQuery::default()
        })
        .await
        .expect("read");
    assert_eq!(all.len(), 300, "every acknowledged write is in the ledger");
    assert!(matches!(
        writer.record(cert(99_999, 1, "load", "spiffe")).await,
        Err(Error::WriterClosed)
    ));
}

async fn retention_drops_der_but_keeps_rows(ledger: Arc<dyn Ledger>) {
    let old = cert(500, 1_000, "retention", "tls-server");
    let fresh = cert(501, 2_000_000_000, "retention", "tls-server");
    ledger
        .insert_certificates(&[old.clone(), fresh.clone()])
        .await
        .expect("insert");
    assert_eq!(
        ledger.forget_expired_der(1_500).await.expect("retention"),
        1
    );
    let trimmed = ledger
        .certificate_by_serial(&old.serial)
        .await
        .expect("read")
        .expect("row kept");
    assert!(trimmed.certificate.der.is_empty(), "DER dropped");
    assert_eq!(
        trimmed.certificate.dns_names, old.dns_names,
        "metadata kept"
    );
    let kept = ledger
        .certificate_by_serial(&fresh.serial)
        .await
        .expect("read")
        .expect("row");
    assert_eq!(kept.certificate.der, fresh.der);
    assert_eq!(
        ledger.forget_expired_der(1_500).await.expect("again"),
        0,
        "idempotent"
    );
}

async fn sqlite() -> (tempfile::TempDir, Arc<dyn Ledger>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = DatabaseUrl::sqlite_file(&dir.path().join("ledger.db"));
    let ledger = ca_store::open(&url).await.expect("open sqlite");
    assert_eq!(ledger.backend(), ca_store::Backend::Sqlite);
    (dir, ledger)
}

async fn postgres() -> (conformance::postgres::TestDatabase, Arc<dyn Ledger>) {
    let db = tokio::task::spawn_blocking(conformance::postgres::test_database)
        .await
        .expect("start postgres");
    let ledger = ca_store::open(&DatabaseUrl::new(db.url.clone()))
        .await
        .expect("open postgres");
    assert_eq!(ledger.backend(), ca_store::Backend::Postgres);
    (db, ledger)
}

macro_rules! on_both_backends {
    ($($scenario:ident),* $(,)?) => {
        mod sqlite_backend {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() {
                    let (_dir, ledger) = sqlite().await;
                    super::$scenario(ledger).await;
                }
            )*
        }
        mod postgres_backend {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() {
                    let (_db, ledger) = postgres().await;
                    super::$scenario(ledger).await;
                }
            )*
        }
    };
}

on_both_backends!(
    round_trip,
    serials_are_unique,
    expiry_ordered_reads,
    group_commit_records_everything,
    retention_drops_der_but_keeps_rows
);

#[tokio::test]
async fn migrations_are_idempotent_on_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = DatabaseUrl::sqlite_file(&dir.path().join("ledger.db"));
    let first = ca_store::open(&url).await.expect("open");
    first
        .insert_certificates(&[cert(1, 5, "x", "ca")])
        .await
        .expect("insert");
    first.close().await;
    let second = ca_store::open(&url).await.expect("reopen");
    assert!(
        second
            .certificate_by_serial(&cert(1, 5, "x", "ca").serial)
            .await
            .expect("read")
            .is_some()
    );
}
