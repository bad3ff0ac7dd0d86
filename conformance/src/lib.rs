//! Test harness for end-to-end tests: the real `ca-server` binary as a child process
//! ([`server::CaServer`]), a real PostgreSQL ([`postgres::test_database`]), and the `openssl` CLI as
//! an independent X.509 implementation ([`openssl`]). Every external program runs with a time
//! limit ([`process`]); waits poll with a deadline ([`wait`]); the ledger ([`ledger`]) and the
//! published CRL ([`crl`]) are read back to prove what a response claims. Everything listens on
//! loopback only and is torn down on `Drop`.
#![warn(missing_docs)]

pub mod acme;
pub mod crl;
pub mod env;
pub mod kubeadm;
pub mod kubernetes;
pub mod ledger;
pub mod openssl;
pub mod postgres;
pub mod process;
pub mod server;
pub mod tools;
pub mod vault;
pub mod wait;

use std::path::PathBuf;

/// The workspace root (parent of this crate).
pub fn workspace_root() -> PathBuf {
    let here = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    here.parent().map(PathBuf::from).unwrap_or(here)
}

/// A free TCP port on 127.0.0.1 (bound, then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("no free port on 127.0.0.1: {e}"))
}

/// A port free for both UDP and TCP on 127.0.0.1 (for DNS servers).
pub fn free_udp_tcp_port() -> u16 {
    for _ in 0..100 {
        let port = free_port();
        if std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no port free for both UDP and TCP on 127.0.0.1")
}
