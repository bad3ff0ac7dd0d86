//! The alert rules in `deploy/prometheus/`: promtool's unit tests, and a real Prometheus scraping
//! a running ca-server and firing one of the rules on the ledger's data.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use conformance::openssl::{curl_http, p256_csr};
use conformance::server::{CaServer, run};
use serde_json::Value;

fn rules_dir() -> std::path::PathBuf {
    conformance::workspace_root().join("deploy/prometheus")
}

#[test]
fn alert_rules_pass_promtool_unit_tests() {
    for args in [
        vec!["check", "rules", "ca-server-rules.yaml"],
        vec!["test", "rules", "ca-server-rules.test.yaml"],
    ] {
        let out = conformance::process::output_within(
            Command::new("promtool")
                .current_dir(rules_dir())
                .args(&args),
            conformance::process::QUICK,
        );
        assert!(
            out.status.success(),
            "promtool {args:?}:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn prometheus_scrapes_the_server_and_fires_an_expiry_alert() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    // Track certificates living longer than an hour, so a 3-hour certificate gets a series.
    std::fs::write(
        dir.join("ca.toml"),
        "[metrics]\ntracked_min_lifetime = \"1h\"\n",
    )
    .expect("config");
    let config = dir.join("ca.toml");
    let data = dir.join("data");
    let server = CaServer::start(&data, &["--config", config.to_str().expect("utf-8")]);

    // A certificate with 3 hours left and no successor: CAServerCertificateExpiryCritical.
    p256_csr(dir, "e2e", "/CN=e2e.example", Some("DNS:e2e.example"));
    let csr = dir.join("e2e.csr");
    let out = run(&[
        "--config",
        config.to_str().expect("utf-8"),
        "--data-dir",
        data.to_str().expect("utf-8"),
        "cert",
        "sign",
        "--csr",
        csr.to_str().expect("utf-8"),
        "--ttl",
        "3h",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let port = conformance::free_port();
    std::fs::write(
        dir.join("prometheus.yml"),
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - {rules}\nscrape_configs:\n  - job_name: ca-server\n    static_configs:\n      - targets: ['{target}']\n",
            rules = rules_dir().join("ca-server-rules.yaml").display(),
            target = server.http,
        ),
    )
    .expect("prometheus.yml");
    let _prometheus = Killed(
        Command::new("prometheus")
            .current_dir(dir)
            .args([
                "--config.file=prometheus.yml",
                "--storage.tsdb.path=tsdb",
                &format!("--web.listen-address=127.0.0.1:{port}"),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prometheus (Debian package; conformance/run.sh installs it)"),
    );

    let deadline = Instant::now() + Duration::from_secs(90);
    let mut last = String::new();
    loop {
        assert!(
            Instant::now() < deadline,
            "no firing CAServerCertificateExpiryCritical for e2e.example; last /api/v1/alerts: {last}"
        );
        std::thread::sleep(Duration::from_secs(1));
        let url = format!("http://127.0.0.1:{port}/api/v1/alerts");
        let out = conformance::process::output_within(
            Command::new("curl").args(["-sf", "--max-time", "10", &url]),
            conformance::process::QUICK,
        );
        last = String::from_utf8_lossy(&out.stdout).into_owned();
        let Ok(doc) = serde_json::from_str::<Value>(&last) else {
            continue;
        };
        let firing = doc["data"]["alerts"].as_array().is_some_and(|alerts| {
            alerts.iter().any(|a| {
                a["labels"]["alertname"] == "CAServerCertificateExpiryCritical"
                    && a["labels"]["name"] == "e2e.example"
                    && a["labels"]["severity"] == "critical"
                    && a["state"] == "firing"
            })
        });
        if firing {
            break;
        }
    }
    // The server's own 7-day serving certificate is tracked too, and is not alerting.
    let (code, body) = curl_http(&format!(
        "http://127.0.0.1:{port}/api/v1/query?query=ca_certificate_not_after_timestamp_seconds"
    ));
    assert_eq!(code, 200);
    let doc: Value = serde_json::from_str(&body).expect("query JSON");
    let names: Vec<&str> = doc["data"]["result"]
        .as_array()
        .expect("result")
        .iter()
        .filter_map(|r| r["metric"]["name"].as_str())
        .collect();
    assert!(names.contains(&"e2e.example"), "{body}");
    assert!(names.contains(&"localhost"), "{body}");
    let alerts = last
        .matches("\"alertname\":\"CAServerCertificateExpiryCritical\"")
        .count();
    assert_eq!(alerts, 1, "only e2e.example is about to expire: {last}");
}
