//! Real third-party programs the tests drive: lego, certbot, pebble-challtestsrv. They are
//! installed by `conformance/run.sh`; a missing tool fails the test (it is never skipped).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Finds a tool: `CA_TEST_<NAME>` (upper case, `-` → `_`), else `PATH`.
pub fn tool(name: &str) -> PathBuf {
    let var = format!("CA_TEST_{}", name.to_ascii_uppercase().replace('-', "_"));
    if let Ok(path) = std::env::var(&var) {
        return PathBuf::from(path);
    }
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(name))
            .find(|p| p.is_file())
    });
    found.unwrap_or_else(|| {
        panic!("{name} is not installed (set {var} or run conformance/run.sh, which installs it)")
    })
}

/// Waits until something accepts TCP connections on `addr`.
pub fn wait_for_port(addr: SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
        assert!(Instant::now() < deadline, "nothing listens on {addr}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `pebble-challtestsrv` as a real DNS server on loopback: A records answer 127.0.0.1 for any
/// name, TXT records are set through its management API.
pub struct ChallTestSrv {
    child: Child,
    /// DNS (UDP and TCP).
    pub dns: SocketAddr,
    /// Management HTTP API.
    pub management: SocketAddr,
}

impl ChallTestSrv {
    /// Starts it on free loopback ports, with its own challenge responders off.
    pub fn start() -> Self {
        let dns: SocketAddr = format!("127.0.0.1:{}", crate::free_udp_tcp_port())
            .parse()
            .unwrap_or_else(|e| panic!("{e}"));
        let management: SocketAddr = format!("127.0.0.1:{}", crate::free_port())
            .parse()
            .unwrap_or_else(|e| panic!("{e}"));
        let child = Command::new(tool("pebble-challtestsrv"))
            .args([
                "-dns01",
                &dns.to_string(),
                "-management",
                &management.to_string(),
            ])
            .args([
                "-http01",
                "",
                "-https01",
                "",
                "-tlsalpn01",
                "",
                "-defaultIPv6",
                "",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("starting pebble-challtestsrv: {e}"));
        wait_for_port(management);
        wait_for_port(dns);
        Self {
            child,
            dns,
            management,
        }
    }

    fn post(&self, path: &str, body: &serde_json::Value) {
        let out = crate::process::output_within(
            Command::new("curl")
                .args([
                    "-sS",
                    "-f",
                    "--max-time",
                    "10",
                    "-X",
                    "POST",
                    "-d",
                    &body.to_string(),
                ])
                .arg(format!("http://{}{path}", self.management)),
            crate::process::QUICK,
        );
        assert!(
            out.status.success(),
            "challtestsrv {path}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Publishes a TXT record (`host` is a FQDN with the trailing dot).
    pub fn set_txt(&self, host: &str, value: &str) {
        self.post(
            "/set-txt",
            &serde_json::json!({"host": host, "value": value}),
        );
    }

    /// A shell script usable as lego's exec provider and as certbot's manual hooks.
    pub fn hook_script(&self, dir: &std::path::Path) -> PathBuf {
        let path = dir.join("dns-hook.sh");
        let mgmt = self.management;
        let script = format!(
            "#!/bin/sh\n\
             # lego exec: $1=present|cleanup $2=FQDN $3=value; certbot: CERTBOT_DOMAIN, CERTBOT_VALIDATION\n\
             if [ -n \"$CERTBOT_DOMAIN\" ]; then\n\
               if [ -n \"$CERTBOT_AUTH_OUTPUT\" ]; then exit 0; fi\n\
               set -- present \"_acme-challenge.$CERTBOT_DOMAIN.\" \"$CERTBOT_VALIDATION\"\n\
             fi\n\
             case \"$1\" in\n\
               present) curl -sf --max-time 10 -X POST -d \"{{\\\"host\\\":\\\"$2\\\",\\\"value\\\":\\\"$3\\\"}}\" http://{mgmt}/set-txt ;;\n\
               cleanup) curl -sf --max-time 10 -X POST -d \"{{\\\"host\\\":\\\"$2\\\"}}\" http://{mgmt}/clear-txt ;;\n\
             esac\n"
        );
        std::fs::write(&path, script).unwrap_or_else(|e| panic!("{e}"));
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap_or_else(|e| panic!("chmod {}: {e}", path.display()));
        path
    }
}

impl Drop for ChallTestSrv {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
