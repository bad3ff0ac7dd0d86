//! The expiry ledger end to end: observed kubeadm certificates, the `ledger` reports in their
//! three formats, superseded certificates, the `/v1/ledger` API behind token policies, `/metrics`,
//! revocation from the CLI reaching the CRL, and pkilint's `lint_crl` on that CRL.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Output;

use conformance::acme::{Https, Response};
use conformance::kubeadm;
use conformance::openssl::{curl_http, openssl, p256_csr};
use conformance::server::{CaServer, run};
use serde_json::{Value, json};

fn ok(out: Output) -> String {
    assert!(
        out.status.success(),
        "ca-server failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn ledger(data: &Path, args: &[&str]) -> String {
    let mut all = vec!["--data-dir", data.to_str().expect("utf-8 path"), "ledger"];
    all.extend_from_slice(args);
    ok(run(&all))
}

/// Rows in the ledger (`ledger stats`).
fn ledger_total(data: &Path) -> u64 {
    conformance::vault::ledger_total(data, &[])
}

fn report(data: &Path, args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.extend_from_slice(&["-o", "json"]);
    serde_json::from_str(&ledger(data, &all)).expect("JSON report")
}

fn names(report: &Value) -> Vec<String> {
    report["certificates"]
        .as_array()
        .expect("certificates[]")
        .iter()
        .map(|c| c["name"].as_str().unwrap_or_default().to_owned())
        .collect()
}

/// Signs a CSR with the operator CLI; returns the serial (colon hex).
fn cli_sign(data: &Path, dir: &Path, name: &str, args: &[&str]) -> String {
    p256_csr(dir, name, &format!("/CN={name}"), None);
    let out = dir.join(format!("{name}.pem"));
    let csr = dir.join(format!("{name}.csr"));
    let mut all = vec![
        "--data-dir",
        data.to_str().expect("utf-8"),
        "cert",
        "sign",
        "--csr",
        csr.to_str().expect("utf-8"),
        "--out",
        out.to_str().expect("utf-8"),
    ];
    all.extend_from_slice(args);
    ok(run(&all));
    let text = openssl(
        dir,
        &["x509", "-in", &format!("{name}.pem"), "-noout", "-serial"],
    );
    let hex = text
        .trim()
        .trim_start_matches("serial=")
        .to_ascii_lowercase();
    let mut bytes: Vec<String> = (0..hex.len())
        .step_by(2)
        .map(|i| hex[i..i + 2].to_owned())
        .collect();
    // openssl prints the DER integer, sign byte included; the ledger stores the magnitude.
    while bytes.len() > 1 && bytes[0] == "00" {
        bytes.remove(0);
    }
    bytes.join(":")
}

/// pkilint's RFC 5280 CRL linter on a DER CRL: no findings at NOTICE or above.
fn assert_lint_clean(crl: &Path) {
    let lint = std::env::var("CA_TEST_LINT_CRL").unwrap_or_else(|_| "lint_crl".into());
    let out = conformance::process::output_within(
        std::process::Command::new(&lint)
            .args([
                "lint",
                "-t",
                "CRL",
                "-p",
                "PKIX",
                "-s",
                "NOTICE",
                "--document-format",
                "DER",
            ])
            .arg(crl),
        conformance::process::QUICK,
    );
    let findings = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && findings.trim().is_empty(),
        "lint_crl {}: {findings}{}",
        crl.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn kubeadm_node_observed_reported_and_renewed() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let data = tmp.path().join("data");
    let etc = tmp.path().join("etc-kubernetes");
    ok(run(&["--data-dir", data.to_str().expect("utf-8"), "init"]));
    kubeadm::tree(&etc, 365);

    let out = ledger(&data, &["observe", etc.to_str().expect("utf-8")]);
    assert!(
        out.contains("observed 14 certificates: 14 new, 0 updated"),
        "{out}"
    );
    // Everything shows up; kubeadm's names; the CAs carry profile `ca`.
    let all = report(&data, &["search"]);
    let expected: BTreeSet<String> = kubeadm::LEAVES
        .iter()
        .map(|(path, ..)| path.replace('/', "-"))
        .chain(kubeadm::CAS.iter().map(|(path, _)| path.replace('/', "-")))
        .chain(
            kubeadm::KUBECONFIGS
                .iter()
                .map(|(file, _)| (*file).to_owned()),
        )
        .collect();
    assert_eq!(names(&all).into_iter().collect::<BTreeSet<_>>(), expected);
    let apiserver = all["certificates"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["name"] == "apiserver"))
        .expect("apiserver")
        .clone();
    assert_eq!(apiserver["caName"], "kubernetes");
    assert_eq!(apiserver["externallyManaged"], true);
    assert_eq!(apiserver["profile"], "tls-server");
    assert!(
        apiserver["sans"]
            .as_array()
            .expect("sans")
            .contains(&json!("127.0.0.1"))
    );
    let residual = apiserver["residualTime"].as_i64().expect("residualTime");
    assert!(
        (364 * 86_400..=365 * 86_400).contains(&residual),
        "{residual}"
    );
    let etcd_ca = all["certificates"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["name"] == "etcd-ca"))
        .expect("etcd-ca");
    assert_eq!(etcd_ca["profile"], "ca");
    let admin = all["certificates"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["name"] == "admin.conf"))
        .expect("admin.conf");
    assert_eq!(admin["profile"], "tls-client");
    assert!(
        admin["source"]
            .as_str()
            .unwrap_or_default()
            .starts_with("kubeconfig:"),
        "{admin}"
    );

    // Re-observing updates rather than duplicates.
    let out = ledger(&data, &["observe", etc.to_str().expect("utf-8")]);
    assert!(out.contains("0 new, 14 updated"), "{out}");
    assert_eq!(names(&report(&data, &["search"])).len(), 14);

    // kubeadm renews the apiserver certificate: the old one is superseded, not reported.
    kubeadm::leaf(
        &etc.join("pki"),
        "apiserver",
        "kube-apiserver",
        "ca",
        "serverAuth",
        200,
    );
    let out = ledger(
        &data,
        &["observe", etc.join("pki").to_str().expect("utf-8")],
    );
    assert!(out.contains("1 new"), "{out}");
    let within = report(&data, &["expiring", "--within", "300d"]);
    let found: Vec<&Value> = within["certificates"]
        .as_array()
        .expect("certificates")
        .iter()
        .filter(|c| c["name"] == "apiserver")
        .collect();
    assert_eq!(found.len(), 1, "only the renewed apiserver certificate");
    let residual = found[0]["residualTime"].as_i64().expect("residualTime");
    assert!(
        (199 * 86_400..=200 * 86_400).contains(&residual),
        "the renewed certificate's 200 days: {residual}"
    );
    assert_eq!(
        names(&within).len(),
        1,
        "only the renewed certificate expires within 300 days: {within}"
    );
    let with_old = report(
        &data,
        &["search", "--include-superseded", "--san", "kube-apiserver"],
    );
    assert_eq!(names(&with_old), vec!["apiserver", "apiserver"]);
    let superseded = with_old["certificates"]
        .as_array()
        .expect("certificates")
        .iter()
        .filter(|c| !c["supersededAt"].is_null())
        .count();
    assert_eq!(superseded, 1, "the old certificate is marked superseded");

    // Our own certificates sit beside them; the origin filter separates the two.
    cli_sign(
        &data,
        tmp.path(),
        "web",
        &["--dns", "web.team-a.svc", "--ttl", "10d"],
    );
    let soon = report(&data, &["expiring"]);
    assert_eq!(names(&soon), vec!["web"], "30 days by default");
    assert_eq!(soon["kind"], "CertificateExpirationInfo");
    let authorities = soon["certificateAuthorities"].as_array().expect("CAs");
    assert_eq!(authorities.len(), 2, "our issuing CA and root");
    assert!(names(&report(&data, &["expiring", "--origin", "observed"])).is_empty());

    // The table follows kubeadm; the CSV has a header and RFC 3339 times.
    let table = ledger(&data, &["expiring", "--within", "300d"]);
    let mut lines = table.lines();
    let header = lines.next().unwrap_or_default();
    assert!(header.starts_with("CERTIFICATE "), "{table}");
    assert!(header.contains("RESIDUAL TIME") && header.contains("CERTIFICATE AUTHORITY"));
    let web = table
        .lines()
        .find(|l| l.starts_with("web "))
        .expect("web row");
    assert!(web.contains(" 9d ") || web.contains(" 10d "), "{web}");
    let api = table
        .lines()
        .find(|l| l.starts_with("apiserver "))
        .expect("apiserver row");
    assert!(api.contains("kubernetes") && api.contains(" yes "), "{api}");
    assert!(table.contains("CERTIFICATE AUTHORITY   EXPIRES"), "{table}");
    let csv = ledger(&data, &["expiring", "--within", "300d", "-o", "csv"]);
    let rows: Vec<&str> = csv.lines().collect();
    assert!(
        rows[0].starts_with("name,serial,not_before,not_after,residual_seconds,issuer,profile")
    );
    assert_eq!(rows.len(), 3, "{csv}");
    assert!(rows.iter().any(|r| r.starts_with("apiserver,")
        && r.contains("T")
        && r.ends_with(|c: char| c.is_ascii_hexdigit())));

    let stats: Value =
        serde_json::from_str(&ledger(&data, &["stats", "-o", "json"])).expect("stats");
    assert_eq!(stats["observed"], 15);
    assert_eq!(stats["superseded"], 1);
    assert_eq!(stats["active"], 15, "14 observed current + web");

    // show: one certificate by serial, also as PEM that openssl reads back.
    let serial = within["certificates"][0]["serial"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let shown: Value = serde_json::from_str(&ledger(&data, &["show", &serial])).expect("show");
    assert_eq!(shown["serial"], serial);
    let pem = ledger(&data, &["show", &serial, "--pem"]);
    std::fs::write(tmp.path().join("shown.pem"), &pem).expect("write");
    let text = openssl(
        tmp.path(),
        &["x509", "-in", "shown.pem", "-noout", "-subject"],
    );
    assert!(text.contains("kube-apiserver"), "{text}");
    let missing = run(&[
        "--data-dir",
        data.to_str().expect("utf-8"),
        "ledger",
        "show",
        "ab:cd",
    ]);
    assert!(!missing.status.success());
    assert!(
        String::from_utf8_lossy(&missing.stderr).contains("ab:cd"),
        "{}",
        String::from_utf8_lossy(&missing.stderr)
    );
}

/// The Vault-style HTTP client for `/v1/…` with a token.
struct Api {
    http: Https,
}

impl Api {
    async fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Response {
        let mut headers = vec![];
        if let Some(t) = token {
            headers.push(("x-vault-token", t));
        }
        let body = body.map(|b| b.to_string().into_bytes()).unwrap_or_default();
        self.http
            .request_with(method, &format!("/v1/{path}"), &headers, None, body)
            .await
    }
}

fn metric_lines<'a>(text: &'a str, name: &str) -> Vec<&'a str> {
    text.lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .collect()
}

fn metric_value(line: &str) -> f64 {
    line.rsplit(' ')
        .next()
        .and_then(|v| v.parse().ok())
        .unwrap_or(f64::NAN)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ledger_api_metrics_revocation_and_crl() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let data = dir.join("data");
    let server = CaServer::start(&data, &[]);
    let root = std::fs::read_to_string(data.join("root-token"))
        .expect("root token")
        .trim()
        .to_owned();
    let (code, bundle) = curl_http(&format!("{}/ca/bundle.pem", server.http_url()));
    assert_eq!(code, 200);
    let api = Api {
        http: Https::new(
            server.https,
            &format!("localhost:{}", server.https.port()),
            &bundle,
        ),
    };

    // A long-lived certificate, then its renewal (same names): only the renewal is current.
    let first = cli_sign(
        &data,
        dir,
        "web",
        &["--dns", "web.team-a.svc", "--ttl", "30d"],
    );
    let renewed = cli_sign(
        &data,
        dir,
        "web2",
        &[
            "--common-name",
            "web",
            "--dns",
            "web.team-a.svc",
            "--ttl",
            "30d",
        ],
    );
    // A short-lived SVID: counted, never its own series.
    cli_sign(
        &data,
        dir,
        "svid",
        &[
            "--profile",
            "spiffe",
            "--uri",
            "spiffe://cluster.local/ns/team-a/sa/web",
            "--ttl",
            "1h",
        ],
    );
    // A Vault issuance and a refused one, for the event counters.
    p256_csr(
        dir,
        "vault",
        "/CN=api.team-b.svc",
        Some("DNS:api.team-b.svc"),
    );
    let csr = std::fs::read_to_string(dir.join("vault.csr")).expect("csr");
    let signed = api
        .call(
            "POST",
            "pki_int/sign-verbatim",
            Some(&root),
            Some(json!({"csr": csr, "ttl": "100h"})),
        )
        .await;
    assert_eq!(signed.status, 200, "{}", signed.text());
    let before = ledger_total(&data);
    let refused = api
        .call(
            "POST",
            "pki_int/sign-verbatim",
            Some(&root),
            Some(json!({"csr": "not a CSR"})),
        )
        .await;
    assert_eq!(refused.status, 400);
    assert_eq!(ledger_total(&data), before, "a refused CSR writes nothing");

    // A TLS endpoint we did not issue: observed like a blackbox probe.
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            "ingress.key",
            "-out",
            "ingress.crt",
            "-subj",
            "/CN=ingress.example.test",
            "-days",
            "200",
            "-addext",
            "subjectAltName=DNS:ingress.example.test",
        ],
    );
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let mut s_server = std::process::Command::new("openssl")
        .current_dir(dir)
        .args([
            "s_server",
            "-accept",
            &format!("127.0.0.1:{port}"),
            "-cert",
            "ingress.crt",
            "-key",
            "ingress.key",
            "-www",
            "-quiet",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("openssl s_server");
    conformance::tools::wait_for_port(([127, 0, 0, 1], port).into());
    let endpoint = format!("tls:127.0.0.1:{port}");
    let mut observe = std::process::Command::new(conformance::server::binary());
    observe
        .args([
            "--data-dir",
            data.to_str().expect("utf-8"),
            "ledger",
            "observe",
            &endpoint,
        ])
        .env("CA_SERVER_LOG", "warn");
    let observed =
        conformance::process::output_within(&mut observe, std::time::Duration::from_secs(60));
    let _ = s_server.kill();
    let _ = s_server.wait();
    let out = ok(observed);
    assert!(out.contains("1 new"), "{out}");

    // The HTTP API: a token needs a policy that grants it.
    let denied = api.call("GET", "ledger/certificates", None, None).await;
    assert_eq!(denied.status, 403, "{}", denied.text());
    assert!(denied.json()["errors"].is_array());
    for (name, policy) in [
        (
            "ledger-reader",
            "path \"ledger/*\" {\n  capabilities = [\"read\"]\n}\n",
        ),
        (
            "pki-only",
            "path \"pki_int/*\" {\n  capabilities = [\"read\"]\n}\n",
        ),
    ] {
        let r = api
            .call(
                "PUT",
                &format!("sys/policy/{name}"),
                Some(&root),
                Some(json!({ "policy": policy })),
            )
            .await;
        assert!(r.status < 300, "{name}: {} {}", r.status, r.text());
    }
    let token_for = |policy: &'static str| {
        let api = &api;
        let root = root.clone();
        async move {
            let r = api
                .call(
                    "POST",
                    "auth/token/create",
                    Some(&root),
                    Some(json!({"policies": [policy]})),
                )
                .await;
            assert_eq!(r.status, 200, "{}", r.text());
            r.json()["auth"]["client_token"]
                .as_str()
                .expect("token")
                .to_owned()
        }
    };
    let reader = token_for("ledger-reader").await;
    let other = token_for("pki-only").await;
    let r = api
        .call("GET", "ledger/certificates", Some(&other), None)
        .await;
    assert_eq!(
        r.status, 403,
        "a token without the ledger policy is refused"
    );
    let r = api
        .call("GET", "pki_int/roles/none", Some(&other), None)
        .await;
    assert_ne!(
        r.status,
        403,
        "the control: the same token is valid where its policy grants: {}",
        r.text()
    );
    let r = api
        .call(
            "GET",
            "ledger/certificates?within=744h",
            Some(&reader),
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let body = r.json();
    let items = body["data"]["certificates"]
        .as_array()
        .expect("certificates")
        .clone();
    let serials: Vec<&str> = items.iter().filter_map(|c| c["serial"].as_str()).collect();
    assert!(
        serials.contains(&renewed.as_str()),
        "{renewed} (first {first}) not in {serials:?}"
    );
    assert!(
        !serials.contains(&first.as_str()),
        "the superseded certificate is not reported"
    );
    assert!(
        items
            .iter()
            .any(|c| c["spiffeId"] == "spiffe://cluster.local/ns/team-a/sa/web")
    );
    assert!(
        !items.iter().any(|c| c["source"] == json!(endpoint)),
        "200 days is outside 744h"
    );
    // Cursor pagination visits the same certificates one page at a time.
    let mut paged = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("ledger/certificates?within=744h&limit=1&cursor={c}"),
            None => "ledger/certificates?within=744h&limit=1".to_owned(),
        };
        let page = api.call("GET", &path, Some(&reader), None).await.json();
        for c in page["data"]["certificates"].as_array().expect("page") {
            paged.push(c["serial"].as_str().unwrap_or_default().to_owned());
        }
        match page["data"]["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    assert_eq!(
        paged,
        serials.iter().map(|s| s.to_string()).collect::<Vec<_>>()
    );
    let r = api
        .call(
            "GET",
            "ledger/certificates?within=soon",
            Some(&reader),
            None,
        )
        .await;
    assert_eq!(r.status, 400);
    assert!(r.text().contains("within"), "{}", r.text());
    let r = api
        .call(
            "GET",
            "ledger/certificates?origin=observed&include_expired=true",
            Some(&reader),
            None,
        )
        .await;
    let observed = r.json()["data"]["certificates"]
        .as_array()
        .expect("observed")
        .clone();
    assert_eq!(observed.len(), 1);
    assert_eq!(observed[0]["name"], format!("127.0.0.1:{port}"));
    let summary = api
        .call("GET", "ledger/summary", Some(&reader), None)
        .await
        .json();
    assert_eq!(summary["data"]["superseded"], 1, "{summary}");
    assert_eq!(summary["data"]["observed"], 1);
    assert!(
        summary["data"]["groups"]
            .as_array()
            .expect("groups")
            .iter()
            .any(|g| g["profile"] == "spiffe" && g["active"] == 1)
    );

    // /metrics: one series per current long-lived certificate, SVIDs only in aggregates.
    let (code, text) = curl_http(&format!("{}/metrics", server.http_url()));
    assert_eq!(code, 200);
    let web: Vec<&str> = metric_lines(&text, "ca_certificate_not_after_timestamp_seconds")
        .into_iter()
        .filter(|l| l.contains("name=\"web\""))
        .collect();
    assert_eq!(web.len(), 1, "{text}");
    let renewed_row = items
        .iter()
        .find(|c| c["serial"] == json!(renewed))
        .expect("renewed");
    let expected_not_after = time::OffsetDateTime::parse(
        renewed_row["expirationDate"].as_str().unwrap_or_default(),
        &time::format_description::well_known::Rfc3339,
    )
    .expect("rfc3339")
    .unix_timestamp();
    assert_eq!(metric_value(web[0]) as i64, expected_not_after);
    assert!(web[0].contains("requester=\""));
    assert!(
        !metric_lines(&text, "ca_certificate_not_after_timestamp_seconds")
            .iter()
            .any(|l| l.contains("spiffe")),
        "short-lived certificates get no per-certificate series"
    );
    assert!(
        metric_lines(&text, "ca_certificate_not_after_timestamp_seconds")
            .iter()
            .any(|l| l.contains("origin=\"observed\"") && l.contains(&format!("127.0.0.1:{port}")))
    );
    let active: Vec<&str> = metric_lines(&text, "ca_certificates_active")
        .into_iter()
        .filter(|l| l.contains("profile=\"spiffe\""))
        .collect();
    assert_eq!(active.len(), 1);
    assert_eq!(metric_value(active[0]), 1.0);
    let le_1h = text
        .lines()
        .find(|l| {
            l.starts_with("ca_certificate_remaining_lifetime_seconds_bucket")
                && l.contains("le=\"3600.0\"")
                && l.contains("profile=\"spiffe\"")
        })
        .expect("1h bucket");
    assert_eq!(metric_value(le_1h), 1.0);
    // Buckets cumulate once: +Inf equals _count (the mesh-layer alert reads these).
    let spiffe_sample = |prefix: &str| {
        text.lines()
            .find(|l| l.starts_with(prefix) && l.contains("profile=\"spiffe\""))
            .map(metric_value)
            .unwrap_or_else(|| panic!("no {prefix} for spiffe in\n{text}"))
    };
    assert_eq!(
        spiffe_sample("ca_certificate_remaining_lifetime_seconds_count"),
        1.0
    );
    let inf = text
        .lines()
        .find(|l| {
            l.starts_with("ca_certificate_remaining_lifetime_seconds_bucket")
                && l.contains("le=\"+Inf\"")
                && l.contains("profile=\"spiffe\"")
        })
        .map(metric_value)
        .expect("+Inf bucket");
    assert_eq!(inf, 1.0);
    // Without an OpenMetrics Accept header the exposition is text 0.0.4, which promtool accepts;
    // the issuer id is named by ca_issuer_info.
    let checked = conformance::process::output_with_input(
        std::process::Command::new("promtool").args(["check", "metrics"]),
        Some(text.as_bytes()),
        conformance::process::QUICK,
    );
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );
    assert!(
        checked.status.success() && !said.contains("error"),
        "promtool check metrics: {said}"
    );
    assert!(
        text.lines().any(|l| l.starts_with("ca_issuer_info{")
            && l.contains("common_name=\"ca-server Issuing CA\"")),
        "{text}"
    );
    assert!(
        metric_lines(&text, "ca_issuer_not_after_timestamp_seconds")
            .iter()
            .any(|l| l.contains("role=\"root\""))
    );
    let issued = metric_lines(&text, "ca_issuance_total")
        .into_iter()
        .find(|l| l.contains("protocol=\"vault\"") && l.contains("result=\"issued\""))
        .expect("vault issued");
    assert_eq!(metric_value(issued), 1.0);
    let refused = metric_lines(&text, "ca_issuance_total")
        .into_iter()
        .find(|l| l.contains("protocol=\"vault\"") && l.contains("result=\"refused\""))
        .expect("vault refused");
    assert_eq!(metric_value(refused), 1.0);
    assert!(text.contains("ca_build_info{version="));
    assert!(
        !text.contains("# EOF"),
        "text 0.0.4 unless OpenMetrics is asked for"
    );
    let om = conformance::process::output_within(
        std::process::Command::new("curl")
            .args(["-sS", "-f", "--max-time", "20", "-H"])
            .arg(
                "Accept: application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5",
            )
            .arg(format!("{}/metrics", server.http_url())),
        conformance::process::QUICK,
    );
    assert!(
        om.status.success(),
        "{}",
        String::from_utf8_lossy(&om.stderr)
    );
    let om = String::from_utf8_lossy(&om.stdout);
    assert!(
        om.trim_end().ends_with("# EOF"),
        "OpenMetrics when asked: {om}"
    );
    assert!(om.contains("# TYPE ca_issuance counter"));

    // Revocation from the CLI reaches the ledger and, within seconds, the CRL.
    ok(run(&[
        "--data-dir",
        data.to_str().expect("utf-8"),
        "cert",
        "revoke",
        &renewed,
        "--reason",
        "4",
    ]));
    let shown = |serial: &str| -> Value {
        serde_json::from_str(&ledger(&data, &["show", serial])).expect("show")
    };
    let first_revocation = shown(&renewed);
    assert!(
        first_revocation["revocation"]["revokedAt"].is_string(),
        "{first_revocation}"
    );
    let again = run(&[
        "--data-dir",
        data.to_str().expect("utf-8"),
        "cert",
        "revoke",
        &renewed,
        "--reason",
        "1",
    ]);
    assert!(!again.status.success(), "revoking twice fails");
    assert_eq!(
        shown(&renewed),
        first_revocation,
        "the refused second revocation changed nothing (time, reason)"
    );
    let serial = conformance::openssl::serial_bytes(&renewed);
    let crl = conformance::crl::wait_listed(
        &server.http_url(),
        dir,
        &serial,
        std::time::Duration::from_secs(30),
    );
    assert_eq!(crl.reason_of(&serial), Some("Superseded"), "{}", crl.text);
    assert_eq!(crl.entries.len(), 1, "{}", crl.text);
    std::fs::copy(dir.join("fetched.crl"), dir.join("crl.der")).expect("copy");
    let r = api
        .call(
            "GET",
            "ledger/certificates?within=744h",
            Some(&reader),
            None,
        )
        .await
        .json();
    assert!(
        !r["data"]["certificates"]
            .as_array()
            .expect("c")
            .iter()
            .any(|c| c["serial"] == json!(renewed)),
        "revoked certificates leave the report unless asked for"
    );

    // pkilint's RFC 5280 CRL linter finds nothing to report.
    assert_lint_clean(&dir.join("crl.der"));
}

/// Serials listed by a DER CRL, as openssl prints them (upper-case hex, sign byte kept).
fn crl_serials(dir: &Path, file: &str) -> (BTreeSet<String>, String) {
    let text = openssl(
        dir,
        &["crl", "-inform", "DER", "-in", file, "-noout", "-text"],
    );
    let serials = text
        .lines()
        .filter_map(|l| l.trim().strip_prefix("Serial Number: "))
        .map(|s| s.trim().trim_start_matches("00").to_owned())
        .collect();
    (serials, text)
}

#[test]
fn sharded_crls_list_each_revocation_in_its_shard() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let config = dir.join("ca.toml");
    std::fs::write(
        &config,
        "[ca]\ncrl_urls = [\"http://ca.example/crl\"]\ncrl_shards = 4\n",
    )
    .expect("config");
    let config = config.to_str().expect("utf-8").to_owned();
    let data = dir.join("data");
    let server = CaServer::start(&data, &["--config", &config]);

    // Eight certificates; each names its shard in its CRL distribution point.
    let mut issued = Vec::new();
    for i in 0..8 {
        let name = format!("svc{i}");
        let serial = cli_sign(
            &data,
            dir,
            &name,
            &["--config", &config, "--dns", &format!("{name}.example")],
        );
        let text = openssl(
            dir,
            &["x509", "-in", &format!("{name}.pem"), "-noout", "-text"],
        );
        let shard: u32 = text
            .split("URI:http://ca.example/crl/")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|k| k.parse().ok())
            .unwrap_or_else(|| panic!("no shard in the CDP: {text}"));
        assert!(shard < 4);
        issued.push((serial, shard));
    }
    // Revoke three of them from the CLI.
    let revoked: Vec<(String, u32)> = issued.iter().take(3).cloned().collect();
    for (serial, _) in &revoked {
        ok(run(&[
            "--data-dir",
            data.to_str().expect("utf-8"),
            "cert",
            "revoke",
            serial,
        ]));
    }
    let upper = |s: &str| s.replace(':', "").to_ascii_uppercase();

    // Every shard lists exactly its own revocations (the refresher or the 5 s cache catches up).
    let fetch = |path: &str, file: &str| {
        let out = conformance::process::output_within(
            std::process::Command::new("curl")
                .args(["-sS", "-f", "--max-time", "10", "-o"])
                .arg(dir.join(file))
                .arg(format!("{}{path}", server.http_url())),
            conformance::process::QUICK,
        );
        assert!(
            out.status.success(),
            "GET {path}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    loop {
        fetch("/crl", "all.der");
        if crl_serials(dir, "all.der").0.len() == 3 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the complete CRL never listed all three"
        );
        std::thread::sleep(std::time::Duration::from_millis(300));
    }
    let (all, _) = crl_serials(dir, "all.der");
    assert_eq!(
        all,
        revoked
            .iter()
            .map(|(s, _)| upper(s).trim_start_matches("00").to_owned())
            .collect()
    );
    for shard in 0..4u32 {
        let file = format!("shard{shard}.der");
        fetch(&format!("/crl/{shard}"), &file);
        let (listed, text) = crl_serials(dir, &file);
        let expected: BTreeSet<String> = revoked
            .iter()
            .filter(|(_, k)| *k == shard)
            .map(|(s, _)| upper(s).trim_start_matches("00").to_owned())
            .collect();
        assert_eq!(listed, expected, "shard {shard}: {text}");
        assert!(text.contains("Issuing Distribution Point"), "{text}");
        assert!(
            text.contains(&format!("URI:http://ca.example/crl/{shard}")),
            "{text}"
        );
        assert_lint_clean(&dir.join(&file));
    }
    for bad in ["/crl/4096", "/crl/x"] {
        let (code, _) = curl_http(&format!("{}{bad}", server.http_url()));
        assert_eq!(code, 404, "{bad}");
    }
    let (code, metrics) = curl_http(&format!("{}/metrics", server.http_url()));
    assert_eq!(code, 200);
    assert!(metrics.contains("shard=\"all\""), "complete CRL gauge");
    assert!(metrics.contains("shard=\"3\""), "shard gauges");
}

#[test]
fn retention_schedule_drops_the_der_of_long_expired_certificates() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let data = dir.join("data");
    let data_arg = data.to_str().expect("utf-8").to_owned();
    ok(run(&["--data-dir", &data_arg, "init"]));

    // A certificate that expired in 2020 (made with rcgen: openssl 3.0 cannot backdate), observed.
    let mut params = rcgen::CertificateParams::new(vec!["old.example".to_owned()]).expect("params");
    params.not_before = rcgen::date_time_ymd(2020, 1, 1);
    params.not_after = rcgen::date_time_ymd(2020, 2, 1);
    let key = rcgen::KeyPair::generate().expect("key");
    let old = params.self_signed(&key).expect("self-signed");
    std::fs::write(dir.join("old.crt"), old.pem()).expect("write");
    let path = dir.join("old.crt");
    let out = ledger(&data, &["observe", path.to_str().expect("utf-8")]);
    assert!(out.contains("1 new"), "{out}");
    let found = report(&data, &["search", "--include-expired"]);
    let serial = found["certificates"][0]["serial"]
        .as_str()
        .expect("serial")
        .to_owned();
    assert!(ledger(&data, &["show", &serial, "--pem"]).contains("BEGIN CERTIFICATE"));
    // A current certificate of ours keeps its DER.
    let fresh = cli_sign(&data, dir, "fresh", &["--dns", "fresh.example"]);

    std::fs::write(
        dir.join("ca.toml"),
        "[retention]\ndrop_der_after = \"30d\"\ninterval = \"1h\"\n",
    )
    .expect("config");
    let config = dir.join("ca.toml");
    let _server = CaServer::start(&data, &["--config", config.to_str().expect("utf-8")]);
    // The schedule's first run happens at start-up.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    loop {
        let out = run(&["--data-dir", &data_arg, "ledger", "show", &serial, "--pem"]);
        if !out.status.success() {
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(err.contains("dropped by retention"), "{err}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "retention never dropped the DER"
        );
        std::thread::sleep(std::time::Duration::from_millis(300));
    }
    // The row itself stays for reports.
    let still = report(
        &data,
        &["search", "--include-expired", "--origin", "observed"],
    );
    assert_eq!(names(&still), vec!["old"]);
    assert!(ledger(&data, &["show", &fresh, "--pem"]).contains("BEGIN CERTIFICATE"));
}

/// `ledger observe` on bad input: one warning per file that is no certificate, directory
/// symlinks not followed (a loop would never end, `up -> ..` would find everything again under
/// longer names), kubeconfigs in any YAML style, and exit statuses that tell complete (0),
/// partial (3) and failed (1) runs apart.
#[test]
fn observe_tells_certificates_from_everything_else() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let data = tmp.path().join("data");
    ok(run(&["--data-dir", data.to_str().expect("utf-8"), "init"]));
    let dir = tmp.path().join("certs");
    std::fs::create_dir_all(dir.join("sub")).expect("mkdir");
    conformance::openssl::p256_csr(tmp.path(), "good", "/CN=good.example.test", None);
    openssl(
        tmp.path(),
        &[
            "x509", "-req", "-in", "good.csr", "-key", "good.key", "-days", "30", "-out",
            "good.crt",
        ],
    );
    let good = std::fs::read_to_string(tmp.path().join("good.crt")).expect("crt");
    std::fs::write(dir.join("good.crt"), &good).expect("write");
    // A kubeconfig in flow style, its certificate embedded.
    use base64::Engine as _;
    let embedded = base64::engine::general_purpose::STANDARD.encode(&good);
    std::fs::write(
        dir.join("flow.conf"),
        format!("{{apiVersion: v1, kind: Config, users: [{{name: u, user: {{client-certificate-data: {embedded}}}}}]}}\n"),
    )
    .expect("write");
    let observe = |targets: &[&Path]| {
        let mut args = vec![
            "--data-dir",
            data.to_str().expect("utf-8"),
            "ledger",
            "observe",
        ];
        args.extend(targets.iter().map(|t| t.to_str().expect("utf-8")));
        let out = run(&args);
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };

    let (code, stdout, stderr) = observe(&[&dir]);
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert!(stdout.contains("observed 2 certificates"), "{stdout}");
    let stats = || -> Value {
        serde_json::from_str(&ledger(&data, &["stats", "-o", "json"])).expect("stats")
    };
    let after_first = stats();
    // One certificate, found in two files: one row.
    assert_eq!(
        (&after_first["observed"], &after_first["total"]),
        (&json!(1), &json!(1)),
        "{after_first}"
    );

    // Bad files, each named once; loops and `up -> ..` not followed.
    let truncated: String = good.lines().take(5).collect::<Vec<_>>().join("\n");
    for (file, body) in [
        ("garbage.crt", "this is not a certificate\n".to_owned()),
        ("empty.pem", String::new()),
        ("truncated.pem", truncated),
        (
            "not-base64.pem",
            "-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n".to_owned(),
        ),
    ] {
        std::fs::write(dir.join("sub").join(file), body).expect("write");
    }
    std::os::unix::fs::symlink(".", dir.join("a")).expect("symlink");
    std::os::unix::fs::symlink(".", dir.join("b")).expect("symlink");
    std::os::unix::fs::symlink("..", dir.join("sub/up")).expect("symlink");
    let (code, stdout, stderr) = observe(&[&dir]);
    assert_eq!(code, Some(3), "partial: {stdout}{stderr}");
    assert!(
        stdout.contains("observed 2 certificates"),
        "found once each: {stdout}"
    );
    for file in [
        "garbage.crt",
        "empty.pem",
        "truncated.pem",
        "not-base64.pem",
        "/a:",
        "/b:",
        "sub/up:",
    ] {
        assert_eq!(
            stderr
                .lines()
                .filter(|l| l.starts_with("warning:") && l.contains(file))
                .count(),
            1,
            "{file}: {stderr}"
        );
    }

    let counts = |v: &Value| (v["observed"].clone(), v["total"].clone());
    assert_eq!(
        counts(&stats()),
        counts(&after_first),
        "a partial run re-observed the same certificate, added nothing"
    );

    // Nothing usable, or a target missing: 1, and nothing recorded.
    let (code, _, stderr) = observe(&[&dir.join("sub")]);
    assert_eq!(code, Some(1), "{stderr}");
    let (code, _, stderr) = observe(&[&dir.join("good.crt"), &tmp.path().join("missing")]);
    assert_eq!(code, Some(1), "{stderr}");
    assert_eq!(counts(&stats()), counts(&after_first));

    // stats as CSV is CSV.
    let csv = ledger(&data, &["stats", "-o", "csv"]);
    let mut lines = csv.lines();
    assert_eq!(
        lines.next(),
        Some("origin,issuer,profile,namespace,active,earliest_not_after")
    );
    let rows: Vec<&str> = lines.collect();
    assert!(!rows.is_empty(), "a data row: {csv}");
    assert!(rows.iter().all(|l| l.split(',').count() == 6), "{csv}");

    // An unknown log level is an error, not silence.
    let out = run(&[
        "--data-dir",
        data.to_str().expect("utf-8"),
        "--log-level",
        "warning",
        "ledger",
        "stats",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("log level \"warning\""));

    // A database that cannot be opened is named, and its cause said once.
    let out = run(&[
        "--database-url",
        "sqlite:///nonexistent-dir/ledger.db",
        "ledger",
        "stats",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("/nonexistent-dir/ledger.db"), "{err}");
    let cause_lines = err.lines().filter(|l| l.contains("error")).count();
    assert!((1..=2).contains(&cause_lines), "{err}");
    assert_eq!(
        err.matches("unable to open database file").count() + err.matches("No such file").count(),
        1,
        "the cause, once: {err}"
    );
}
