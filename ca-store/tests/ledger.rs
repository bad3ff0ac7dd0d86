//! The ledger against both real backends: an SQLite file and a real PostgreSQL server
//! (see `conformance::postgres`). Each scenario is one async function run on both.

use std::collections::BTreeMap;
use std::sync::Arc;

use ca_store::writer::LedgerWriter;
use ca_store::{
    DatabaseUrl, Error, ExpiryQuery, Ledger, NewCertificate, ObserveOutcome, ObservedCertificate,
    Protocol, Requester, Store,
};

/// A valid ACME account with no contact and no binding.
fn account(id: &str, key_thumbprint: &str) -> ca_store::acme::AccountRow {
    ca_store::acme::AccountRow {
        id: id.into(),
        key_thumbprint: key_thumbprint.into(),
        jwk: "{}".into(),
        status: "valid".into(),
        contact: "[]".into(),
        eab_kid: None,
        created_at: 1,
    }
}

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
        crl_shard: Some(serial % 4),
        workload_namespace: Some("payments".into()),
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
    let failed = ledger.insert_certificates(&batch).await;
    assert!(matches!(failed, Err(Error::AlreadyExists)), "{failed:?}");
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

    // Window [base + 10h, base + 40h]: both ends included (a certificate expiring exactly at
    // the end of `--within` is within it): 31 certificates, ascending not_after.
    let q = ExpiryQuery {
        not_after_from: Some(base + 10 * 3600),
        not_after_until: Some(base + 40 * 3600),
        limit: 1000,
        ..ExpiryQuery::default()
    };
    let page = ledger.expiring(&q).await.expect("query");
    assert_eq!(page.len(), 31);
    assert_eq!(
        page.last().map(|r| r.certificate.not_after),
        Some(base + 40 * 3600)
    );
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
        let (task_writer, ledger) = (writer.clone(), Arc::clone(&ledger));
        tasks.push(tokio::spawn(async move {
            let c = cert(10_000 + i, 2_000_000_000 + i64::from(i), "load", "spiffe");
            let serial = c.serial.clone();
            let result = task_writer.record(c).await;
            // Acknowledged means committed: readable now, from another connection, before
            // anything is flushed at close.
            if result.is_ok() {
                assert!(
                    ledger
                        .certificate_by_serial(&serial)
                        .await
                        .expect("read")
                        .is_some(),
                    "serial {i} acknowledged before it was committed"
                );
            }
            result
        }));
        // One duplicate among the concurrent writes (it may share a batch with its original or
        // with others): it fails alone, nobody else's write with it.
        if i == 150 {
            let writer = writer.clone();
            tasks.push(tokio::spawn(async move {
                writer
                    .record(cert(10_000, 2_000_000_000, "load", "spiffe"))
                    .await
            }));
        }
    }
    let (mut ok, mut duplicates) = (0, 0);
    for t in tasks {
        match t.await.expect("join") {
            Ok(()) => ok += 1,
            Err(Error::AlreadyExists) => duplicates += 1,
            Err(e) => panic!("a write failed for another reason: {e}"),
        }
    }
    assert_eq!(
        (ok, duplicates),
        (300, 1),
        "exactly one of the two writes of serial 10000 fails"
    );
    let load = ExpiryQuery {
        namespace: Some("load".into()),
        limit: 1000,
        ..ExpiryQuery::default()
    };
    let all = ledger.expiring(&load).await.expect("read");
    assert_eq!(
        all.len(),
        300,
        "every acknowledged write is in the ledger before close"
    );
    writer.close().await;
    assert!(matches!(
        writer.record(cert(99_999, 1, "load", "spiffe")).await,
        Err(Error::WriterClosed)
    ));
    assert_eq!(ledger.expiring(&load).await.expect("read").len(), 300);
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

fn renewal(of: &NewCertificate, serial: u32, not_after: i64) -> NewCertificate {
    let mut c = of.clone();
    c.serial = [0x43, 0, 0, 0, 0]
        .iter()
        .copied()
        .chain(serial.to_be_bytes())
        .collect();
    c.not_before = not_after - 86_400;
    c.not_after = not_after;
    c.der = vec![0x30, 0x04, 0x02, 0x02, 0x43, serial as u8];
    c.created_at += 1;
    c
}

async fn superseded_certificates_leave_reports(ledger: Arc<dyn Ledger>) {
    let first = cert(700, 1_900_000_000, "renew", "tls-server");
    let other = cert(701, 1_900_000_100, "renew", "tls-server");
    ledger
        .insert_certificates(&[first.clone(), other.clone()])
        .await
        .expect("insert");
    // Same requester, profile and names (in another order, other case): a renewal.
    let mut second = renewal(&first, 702, 1_900_500_000);
    second.dns_names.reverse();
    second.dns_names = second.dns_names.iter().map(|n| n.to_uppercase()).collect();
    // Same names but another profile: not a renewal of `first`.
    let mut client = renewal(&first, 703, 1_900_600_000);
    client.profile = "tls-client".into();
    ledger
        .insert_certificates(&[second.clone(), client.clone()])
        .await
        .expect("insert renewal");
    ledger
        .revoke(&first.serial, 1_800_000_000, 4)
        .await
        .expect("revoke superseded");

    let current = ledger
        .expiring(&ExpiryQuery {
            namespace: Some("renew".into()),
            exclude_superseded: true,
            limit: 100,
            ..ExpiryQuery::default()
        })
        .await
        .expect("current");
    let serials: Vec<_> = current
        .iter()
        .map(|r| r.certificate.serial.clone())
        .collect();
    assert_eq!(
        serials,
        vec![
            other.serial.clone(),
            second.serial.clone(),
            client.serial.clone()
        ],
        "the renewed certificate is not reported; other names and other profiles are"
    );
    let old = ledger
        .certificate_by_serial(&first.serial)
        .await
        .expect("read")
        .expect("kept");
    assert!(
        old.superseded_at.is_some(),
        "the old row is marked, not deleted"
    );
    // CRLs still list a revoked certificate after it was renewed.
    let revoked = ledger
        .expiring(&ExpiryQuery {
            namespace: Some("renew".into()),
            revoked_only: true,
            limit: 100,
            ..ExpiryQuery::default()
        })
        .await
        .expect("revoked");
    assert_eq!(revoked.len(), 1);
    assert_eq!(revoked[0].certificate.serial, first.serial);
}

async fn report_filters(ledger: Arc<dyn Ledger>) {
    let rows: Vec<NewCertificate> = (0..12u32)
        .map(|i| {
            cert(
                800 + i,
                1_950_000_000 + i64::from(i),
                if i < 6 { "pay" } else { "web" },
                "spiffe",
            )
        })
        .collect();
    ledger.insert_certificates(&rows).await.expect("insert");
    let find = |q: ExpiryQuery| {
        let ledger = Arc::clone(&ledger);
        async move {
            ledger
                .expiring(&ExpiryQuery { limit: 100, ..q })
                .await
                .expect("query")
                .into_iter()
                .map(|r| r.certificate.common_name.unwrap_or_default())
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(
        find(ExpiryQuery {
            spiffe_prefix: Some("spiffe://cluster.local/ns/pay/".into()),
            ..ExpiryQuery::default()
        })
        .await
        .len(),
        6
    );
    // `_` and `%` in a prefix are literal, not wildcards.
    assert!(
        find(ExpiryQuery {
            spiffe_prefix: Some("spiffe://cluster.local/ns/pa_/".into()),
            ..ExpiryQuery::default()
        })
        .await
        .is_empty()
    );
    // SAN filters match whole names: svc-801 does not match svc-8010-style names.
    assert_eq!(
        find(ExpiryQuery {
            san: Some("svc-801.pay.svc".into()),
            ..ExpiryQuery::default()
        })
        .await,
        vec!["svc-801".to_owned()]
    );
    assert_eq!(
        find(ExpiryQuery {
            san: Some("spiffe://cluster.local/ns/web/sa/svc-811".into()),
            ..ExpiryQuery::default()
        })
        .await,
        vec!["svc-811".to_owned()]
    );
    assert!(
        find(ExpiryQuery {
            san: Some("svc-80".into()),
            ..ExpiryQuery::default()
        })
        .await
        .is_empty(),
        "no substring matches"
    );
    assert_eq!(
        find(ExpiryQuery {
            requester: Some("https://ca/acme/acct/1".into()),
            namespace: Some("web".into()),
            ..ExpiryQuery::default()
        })
        .await
        .len(),
        6
    );
    assert!(
        find(ExpiryQuery {
            origin: Some(ca_store::Origin::Observed),
            namespace: Some("web".into()),
            ..ExpiryQuery::default()
        })
        .await
        .is_empty()
    );
}

fn observed(
    source: &str,
    name: &str,
    serial: u32,
    der_tag: u8,
    not_after: i64,
) -> ObservedCertificate {
    let mut c = cert(serial, not_after, "kube-system", "tls-server");
    c.requester = Requester::new(Protocol::Observed, source);
    c.issuer_id = "kubernetes".into();
    c.subject = format!("CN={name}");
    c.der = vec![0x30, 0x03, 0x04, 0x01, der_tag];
    ObservedCertificate {
        certificate: c,
        source: source.into(),
        name: name.into(),
    }
}

async fn observations_update_rather_than_duplicate(ledger: Arc<dyn Ledger>) {
    let ours = cert(900, 1_960_000_000, "kube-system", "tls-server");
    ledger
        .insert_certificates(std::slice::from_ref(&ours))
        .await
        .expect("issue");
    let apiserver = observed(
        "file:/pki/apiserver.crt",
        "apiserver",
        901,
        1,
        1_960_000_000,
    );
    // Another CA's certificate whose serial equals one of ours: both are kept.
    let mut colliding = observed(
        "file:/pki/front-proxy-client.crt",
        "front-proxy-client",
        900,
        2,
        1_960_000_500,
    );
    colliding.certificate.serial = ours.serial.clone();
    // Seeing our own certificate on an endpoint does not add a row.
    let mut seen_ours = observed("tls:127.0.0.1:6443", "127.0.0.1:6443", 900, 0, 0);
    seen_ours.certificate = ours.clone();

    let first = ledger
        .record_observed(
            &[apiserver.clone(), colliding.clone(), seen_ours.clone()],
            1_700_000_000,
        )
        .await
        .expect("observe");
    assert_eq!(
        first,
        ObserveOutcome {
            inserted: 2,
            updated: 0,
            already_issued: 1
        }
    );
    let again = ledger
        .record_observed(&[apiserver.clone(), colliding.clone()], 1_700_000_600)
        .await
        .expect("observe again");
    assert_eq!(
        again,
        ObserveOutcome {
            inserted: 0,
            updated: 2,
            already_issued: 0
        }
    );

    let observed_rows = ledger
        .expiring(&ExpiryQuery {
            origin: Some(ca_store::Origin::Observed),
            limit: 100,
            ..ExpiryQuery::default()
        })
        .await
        .expect("observed");
    assert_eq!(observed_rows.len(), 2, "no duplicates");
    assert_eq!(observed_rows[0].name, "apiserver");
    assert_eq!(
        observed_rows[0].source.as_deref(),
        Some("file:/pki/apiserver.crt")
    );
    assert_eq!(observed_rows[0].observed_at, Some(1_700_000_600));
    assert_eq!(observed_rows[0].fingerprint.len(), 32);

    // kubeadm renewed the file: the old certificate is superseded by the new one.
    let renewed = observed(
        "file:/pki/apiserver.crt",
        "apiserver",
        902,
        3,
        1_990_000_000,
    );
    ledger
        .record_observed(std::slice::from_ref(&renewed), 1_700_001_000)
        .await
        .expect("observe renewal");
    let current = ledger
        .expiring(&ExpiryQuery {
            origin: Some(ca_store::Origin::Observed),
            exclude_superseded: true,
            limit: 100,
            ..ExpiryQuery::default()
        })
        .await
        .expect("current");
    let names: Vec<(&str, i64)> = current
        .iter()
        .map(|r| (r.name.as_str(), r.certificate.not_after))
        .collect();
    assert_eq!(
        names,
        vec![
            ("front-proxy-client", 1_960_000_500),
            ("apiserver", 1_990_000_000)
        ]
    );
    // Our own certificate is still found by serial, the observed namesake is not.
    let by_serial = ledger
        .certificate_by_serial(&ours.serial)
        .await
        .expect("read")
        .expect("ours");
    assert_eq!(by_serial.origin, ca_store::Origin::Issued);
    assert_eq!(by_serial.certificate.der, ours.der);
}

async fn summary_and_metrics_snapshot(ledger: Arc<dyn Ledger>) {
    let now = 1_800_000_000;
    let mut rows = vec![
        cert(1000, now + 3_600, "a", "spiffe"),      // ≤ 1 h left
        cert(1001, now + 20 * 3_600, "a", "spiffe"), // ≤ 1 d
        cert(1002, now + 20 * 86_400, "b", "tls-server"),
        cert(1003, now - 10, "b", "tls-server"), // expired
    ];
    rows[2].not_before = now - 10 * 86_400; // 30-day lifetime: tracked
    rows[3].not_before = now - 30 * 86_400;
    let renewed = renewal(&rows[1], 1004, now + 23 * 3_600);
    ledger.insert_certificates(&rows).await.expect("insert");
    ledger
        .insert_certificates(std::slice::from_ref(&renewed))
        .await
        .expect("renew");
    ledger
        .revoke(&rows[0].serial, now - 5, 1)
        .await
        .expect("revoke");

    let summary = ledger.summary(now).await.expect("summary");
    assert_eq!(summary.total, 5);
    assert_eq!(summary.active, 2, "renewal and the tls-server certificate");
    assert_eq!(summary.expired, 1);
    assert_eq!(summary.revoked, 1);
    assert_eq!(summary.superseded, 1);
    assert_eq!(summary.earliest_not_after, Some(now + 23 * 3_600));
    assert_eq!(summary.groups.len(), 2);

    let snapshot = ledger
        .metrics_snapshot(&ca_store::SnapshotQuery {
            now,
            bounds: vec![0, 3_600, 86_400, 7 * 86_400, 30 * 86_400],
            tracked_min_lifetime: 3 * 86_400,
            tracked_expired_grace: 86_400,
            tracked_limit: 100,
        })
        .await
        .expect("snapshot");
    let mut cells: Vec<(String, usize, u64)> = snapshot
        .cells
        .iter()
        .map(|c| (c.profile.clone(), c.bucket, c.count))
        .collect();
    cells.sort();
    assert_eq!(
        cells,
        vec![("spiffe".to_owned(), 2, 1), ("tls-server".to_owned(), 4, 1)]
    );
    let spiffe = snapshot
        .cells
        .iter()
        .find(|c| c.profile == "spiffe")
        .expect("cell");
    assert_eq!(spiffe.remaining_sum, 23 * 3_600);
    // Both long-lived certificates, the expired one included (nobody renewed it).
    let tracked: Vec<i64> = snapshot.tracked.iter().map(|t| t.not_after).collect();
    assert_eq!(tracked, vec![now - 10, now + 20 * 86_400]);
    assert_eq!(snapshot.tracked[1].name, "svc-1002");
    assert!(!snapshot.tracked_truncated);
    let capped = ledger
        .metrics_snapshot(&ca_store::SnapshotQuery {
            now,
            bounds: vec![],
            tracked_min_lifetime: 3 * 86_400,
            tracked_expired_grace: 86_400,
            tracked_limit: 1,
        })
        .await
        .expect("capped");
    assert_eq!(capped.tracked.len(), 1);
    assert!(capped.tracked_truncated);
}

async fn nonce_batches_redeem_each_nonce_once(store: Arc<dyn Store>) {
    let batch = vec![
        ("n1".to_owned(), 2_000_000_000),
        ("n2".to_owned(), 2_000_000_000),
        ("n1".to_owned(), 2_000_000_000),
    ];
    assert_eq!(
        store.redeem_nonces(&batch).await.expect("redeem"),
        vec![true, true, false],
        "a nonce repeated within one batch succeeds once"
    );
    assert_eq!(
        store
            .redeem_nonces(&[("n2".to_owned(), 2_000_000_000), ("n3".to_owned(), 1)])
            .await
            .expect("redeem again"),
        vec![false, true]
    );
    // Through the batching task, concurrently: each nonce exactly once.
    let redeemer = ca_store::writer::NonceRedeemer::spawn(store.clone());
    let mut tasks = Vec::new();
    for i in 0..200u32 {
        let redeemer = redeemer.clone();
        tasks.push(tokio::spawn(async move {
            redeemer
                .redeem(&format!("c{}", i % 100), 2_000_000_000)
                .await
        }));
    }
    let mut fresh = 0;
    for t in tasks {
        if t.await.expect("join").expect("redeem") {
            fresh += 1;
        }
    }
    assert_eq!(fresh, 100, "100 distinct nonces, each redeemed twice");
}

/// Orders and authorizations read back exactly as written, and a write is visible to the next
/// read at once (on SQLite these reads run on the calling thread, beside the sqlx writer).
async fn acme_orders_round_trip(store: Arc<dyn Store>) {
    use ca_store::acme::{AuthorizationRow, OrderRow};
    store
        .insert_account(&account("acct", "tp"))
        .await
        .expect("account");
    let order = OrderRow {
        id: "o1".into(),
        account_id: "acct".into(),
        status: "pending".into(),
        expires: 2_000_000_000,
        identifiers: r#"[{"type":"dns","value":"a.test"}]"#.into(),
        profile: "default".into(),
        not_before: Some(10),
        not_after: None,
        error: None,
        certificate_serial: None,
        replaces: Some("ari-id".into()),
        created_at: 5,
    };
    let authz = |id: &str, value: &str, wildcard: i64| AuthorizationRow {
        id: id.into(),
        order_id: "o1".into(),
        account_id: "acct".into(),
        identifier_type: "dns".into(),
        identifier_value: value.into(),
        wildcard,
        status: "pending".into(),
        expires: 2_000_000_001,
        challenges: format!(r#"[{{"token":"{id}"}}]"#),
    };
    let authzs = vec![authz("z2", "b.test", 1), authz("z1", "a.test", 0)];
    store.insert_order(&order, &authzs).await.expect("order");
    let bare = OrderRow {
        id: "o2".into(),
        not_before: None,
        replaces: None,
        ..order.clone()
    };
    store
        .insert_order(&bare, &[])
        .await
        .expect("order without authorizations");

    let (read, read_authzs) = store
        .order_with_authorizations("o1")
        .await
        .expect("read")
        .expect("found");
    assert_eq!(read, order);
    assert_eq!(
        read_authzs,
        vec![authzs[1].clone(), authzs[0].clone()],
        "ordered by id"
    );
    assert_eq!(
        store.order_with_authorizations("o2").await.expect("read"),
        Some((bare, vec![]))
    );
    assert_eq!(
        store.order_with_authorizations("none").await.expect("read"),
        None
    );
    assert_eq!(
        store.authorization("z2").await.expect("read"),
        Some(authzs[0].clone())
    );
    assert_eq!(store.authorization("none").await.expect("read"), None);

    let mut valid = authzs[0].clone();
    valid.status = "valid".into();
    valid.challenges = "[]".into();
    assert!(
        store
            .update_authorization(&valid, "pending")
            .await
            .expect("update")
    );
    assert_eq!(
        store.authorization("z2").await.expect("read"),
        Some(valid.clone())
    );
    let mut done = order.clone();
    done.status = "valid".into();
    done.certificate_serial = Some(vec![1, 2, 3]);
    done.error = Some("{}".into());
    assert!(store.update_order(&done, "pending").await.expect("update"));
    let (read, read_authzs) = store
        .order_with_authorizations("o1")
        .await
        .expect("read")
        .expect("found");
    assert_eq!(read, done, "the write is visible to the next read");
    assert_eq!(read_authzs, vec![authzs[1].clone(), valid]);
}

async fn sqlite() -> (tempfile::TempDir, Arc<dyn Store>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = DatabaseUrl::sqlite_file(&dir.path().join("ledger.db"));
    let ledger = ca_store::open(&url).await.expect("open sqlite");
    assert_eq!(ledger.backend(), ca_store::Backend::Sqlite);
    (dir, ledger)
}

async fn postgres() -> (conformance::postgres::TestDatabase, Arc<dyn Store>) {
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
    retention_drops_der_but_keeps_rows,
    superseded_certificates_leave_reports,
    report_filters,
    observations_update_rather_than_duplicate,
    summary_and_metrics_snapshot,
    nonce_batches_redeem_each_nonce_once,
    acme_orders_round_trip,
);

/// Certificates commit with `synchronous = FULL` (on disk before the writer answers), protocol
/// state with NORMAL, however the switch is sent: a trigger on each table records the writer
/// connection's setting at the moment its row is written.
#[tokio::test]
async fn sqlite_certificates_commit_durably_and_protocol_state_does_not() {
    use sqlx::Connection;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("ledger.db");
    let ledger = ca_store::open(&DatabaseUrl::sqlite_file(&path))
        .await
        .expect("open");
    let mut probe = sqlx::SqliteConnection::connect(&format!("sqlite://{}", path.display()))
        .await
        .expect("probe connection");
    for statement in [
        "CREATE TABLE sync_log (what TEXT, level INTEGER)",
        "CREATE TRIGGER cert_sync AFTER INSERT ON certificates BEGIN \
         INSERT INTO sync_log SELECT 'certificate', synchronous FROM pragma_synchronous; END",
        "CREATE TRIGGER order_sync AFTER INSERT ON acme_orders BEGIN \
         INSERT INTO sync_log SELECT 'order', synchronous FROM pragma_synchronous; END",
        "CREATE TRIGGER revocation_sync AFTER UPDATE OF revoked_at ON certificates BEGIN \
         INSERT INTO sync_log SELECT 'revocation', synchronous FROM pragma_synchronous; END",
        "CREATE TRIGGER account_sync AFTER INSERT ON acme_accounts BEGIN \
         INSERT INTO sync_log SELECT 'account', synchronous FROM pragma_synchronous; END",
    ] {
        sqlx::query(statement)
            .execute(&mut probe)
            .await
            .expect("probe schema");
    }
    let order = |id: &str| ca_store::acme::OrderRow {
        id: id.into(),
        account_id: "acct".into(),
        status: "pending".into(),
        expires: 2_000_000_000,
        identifiers: "[]".into(),
        profile: "default".into(),
        not_before: None,
        not_after: None,
        error: None,
        certificate_serial: None,
        replaces: None,
        created_at: 1,
    };
    ledger
        .insert_account(&account("acct", "tp"))
        .await
        .expect("account");
    // Several rounds: statements are cached after the first, and the switch must still happen.
    for i in 0..3u32 {
        ledger
            .insert_certificates(&[cert(10 + i, 5, "x", "ca")])
            .await
            .expect("certificate");
        ledger
            .insert_order(&order(&format!("o{i}")), &[])
            .await
            .expect("order");
    }
    // A failed certificate insert (duplicate serial) must not leave the connection FULL for
    // protocol state, nor NORMAL for the next certificate.
    assert!(matches!(
        ledger.insert_certificates(&[cert(10, 5, "x", "ca")]).await,
        Err(Error::AlreadyExists)
    ));
    ledger
        .insert_order(&order("after-failure"), &[])
        .await
        .expect("order");
    ledger
        .insert_certificates(&[cert(20, 5, "x", "ca")])
        .await
        .expect("certificate after a failure");
    // A revocation is on disk before it is acknowledged too (a CRL must not forget it), and the
    // protocol state written after it on the same connection (an account) is not.
    assert!(
        ledger
            .revoke(&cert(20, 5, "x", "ca").serial, 1_800_000_000, 1)
            .await
            .expect("revoke")
    );
    ledger
        .insert_account(&account("after-revocation", "tp2"))
        .await
        .expect("account");
    let log: Vec<(String, i64)> = sqlx::query_as("SELECT what, level FROM sync_log ORDER BY rowid")
        .fetch_all(&mut probe)
        .await
        .expect("log");
    // pragma_synchronous: 1 = NORMAL, 2 = FULL.
    let expected: Vec<(String, i64)> = [
        ("account", 1),
        ("certificate", 2),
        ("order", 1),
        ("certificate", 2),
        ("order", 1),
        ("certificate", 2),
        ("order", 1),
        ("order", 1),
        ("certificate", 2),
        ("revocation", 2),
        ("account", 1),
    ]
    .iter()
    .map(|(w, l)| ((*w).to_owned(), *l))
    .collect();
    assert_eq!(log, expected);
}

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
