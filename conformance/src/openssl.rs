//! The `openssl` and `curl` command-line tools as independent implementations: key and CSR
//! generation, certificate inspection and path validation, HTTPS fetches with a given trust anchor.

use std::path::Path;
use std::process::Command;

use crate::process::{QUICK, output_within};

/// Runs a command (bounded by [`QUICK`]), panicking with its output if it fails; returns stdout.
pub fn run(cmd: &mut Command) -> String {
    let out = output_within(cmd, QUICK);
    assert!(
        out.status.success(),
        "{} failed:\n{}{}",
        crate::process::describe(cmd),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `openssl <args>` in `dir`.
pub fn openssl(dir: &Path, args: &[&str]) -> String {
    run(Command::new("openssl").current_dir(dir).args(args))
}

/// Writes an ECDSA P-256 key and a CSR for `subject` with `san` (e.g. `DNS:a,URI:spiffe://…`).
pub fn p256_csr(dir: &Path, name: &str, subject: &str, san: Option<&str>) {
    openssl(
        dir,
        &[
            "ecparam",
            "-name",
            "prime256v1",
            "-genkey",
            "-noout",
            "-out",
            &format!("{name}.key"),
        ],
    );
    let mut args = vec![
        "req".to_owned(),
        "-new".into(),
        "-key".into(),
        format!("{name}.key"),
        "-subj".into(),
        subject.into(),
        "-out".into(),
        format!("{name}.csr"),
    ];
    if let Some(san) = san {
        args.push("-addext".into());
        args.push(format!("subjectAltName={san}"));
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    openssl(dir, &args);
}

/// `openssl verify -CAfile <roots> -untrusted <chain> <leaf>`; returns whether it succeeded and
/// openssl's output.
pub fn verify(dir: &Path, roots: &str, untrusted: Option<&str>, leaf: &str) -> (bool, String) {
    let mut cmd = Command::new("openssl");
    cmd.current_dir(dir).args(["verify", "-CAfile", roots]);
    if let Some(chain) = untrusted {
        cmd.args(["-untrusted", chain]);
    }
    cmd.arg(leaf);
    let out = output_within(&mut cmd, QUICK);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// A serial as the ledger stores it (the magnitude, no DER sign byte), from any hex spelling:
/// `openssl -serial` output (`serial=00AB…`), Vault's `ab:cd:…`, plain hex.
pub fn serial_bytes(hex: &str) -> Vec<u8> {
    let hex = hex.trim().trim_start_matches("serial=");
    let digits: String = hex.chars().filter(char::is_ascii_hexdigit).collect();
    assert!(
        !digits.is_empty() && digits.len().is_multiple_of(2),
        "not a hex serial: {hex:?}"
    );
    let bytes: Vec<u8> = (0..digits.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&digits[i..i + 2], 16).unwrap_or_else(|e| panic!("{e}")))
        .collect();
    let skip = bytes.iter().take_while(|b| **b == 0).count();
    bytes[skip.min(bytes.len() - 1)..].to_vec()
}

/// Upper-case hex of a serial as the ledger stores it, as openssl prints CRL entries (without
/// the sign byte; [`crate::crl`] strips it too).
pub fn serial_hex(serial: &[u8]) -> String {
    serial.iter().map(|b| format!("{b:02X}")).collect()
}

/// The serial of the first certificate in a PEM file (`dir`-relative or absolute), as the
/// ledger stores it.
pub fn serial_of(dir: &Path, pem_file: &str) -> Vec<u8> {
    serial_bytes(&openssl(
        dir,
        &["x509", "-in", pem_file, "-noout", "-serial"],
    ))
}

/// The DER of the first certificate in a PEM file, as openssl re-encodes it.
pub fn der_of(dir: &Path, pem_file: &str) -> Vec<u8> {
    let out = output_within(
        Command::new("openssl")
            .current_dir(dir)
            .args(["x509", "-in", pem_file, "-outform", "DER"]),
        QUICK,
    );
    assert!(
        out.status.success(),
        "openssl x509 -outform DER {pem_file}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// The certificates of a PEM text, each as its own PEM block (with the trailing newline).
pub fn pem_blocks(pem: &str) -> Vec<String> {
    pem.split_inclusive("-----END CERTIFICATE-----\n")
        .filter(|b| b.contains("-----BEGIN CERTIFICATE-----"))
        .map(|b| b.trim_start().to_owned())
        .collect()
}

/// `openssl x509 -noout -text` of a PEM file.
pub fn x509_text(dir: &Path, file: &str) -> String {
    openssl(dir, &["x509", "-in", file, "-noout", "-text"])
}

/// HTTPS GET with curl trusting only `cacert`; returns (status code, body).
pub fn curl_https(url: &str, cacert: &Path) -> (u16, String) {
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "--max-time", "20", "--cacert"])
        .arg(cacert)
        .args(["-w", "\n%{http_code}", url]);
    let out = output_within(&mut cmd, QUICK);
    assert!(
        out.status.success(),
        "curl {url} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    parse_curl(&out.stdout)
}

/// Plain HTTP GET with curl; returns (status code, body).
pub fn curl_http(url: &str) -> (u16, String) {
    let out = output_within(
        Command::new("curl").args(["-sS", "--max-time", "20", "-w", "\n%{http_code}", url]),
        QUICK,
    );
    assert!(
        out.status.success(),
        "curl {url} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    parse_curl(&out.stdout)
}

fn parse_curl(stdout: &[u8]) -> (u16, String) {
    let text = String::from_utf8_lossy(stdout);
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    (code.trim().parse().unwrap_or(0), body.to_owned())
}

/// Generates a private key with `genpkey_args` (e.g. `["-algorithm", "RSA", …]`), writes it as
/// PEM to `<name>.pem` and returns its PKCS#8 DER (ring reads only PKCS#8).
pub fn pkcs8_key(dir: &Path, name: &str, genpkey_args: &[&str]) -> Vec<u8> {
    let pem = format!("{name}.pem");
    let der = format!("{name}.p8.der");
    let mut args = vec!["genpkey"];
    args.extend_from_slice(genpkey_args);
    args.extend(["-out", &pem]);
    openssl(dir, &args);
    openssl(
        dir,
        &[
            "pkcs8", "-topk8", "-nocrypt", "-in", &pem, "-outform", "DER", "-out", &der,
        ],
    );
    std::fs::read(dir.join(der)).unwrap_or_else(|e| panic!("{e}"))
}

/// A new root `CN=<root_cn>` (files `alt-root.crt`/`.key` in `dir`) cross-signs the issuing CA in
/// `ca_dir`: same subject, key and key identifier, as during a root rotation. Returns the
/// cross-signed certificate and the root, as PEM.
pub fn cross_sign_issuing_ca(dir: &Path, ca_dir: &Path, root_cn: &str) -> (String, String) {
    let subject = format!("/CN={root_cn}");
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
            "alt-root.key",
            "-subj",
            &subject,
            "-days",
            "3650",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
            "-out",
            "alt-root.crt",
        ],
    );
    let issuing_crt = ca_dir.join("issuing.crt").display().to_string();
    let issuing_key = ca_dir.join("issuing.key").display().to_string();
    openssl(
        dir,
        &[
            "x509",
            "-x509toreq",
            "-in",
            &issuing_crt,
            "-signkey",
            &issuing_key,
            "-out",
            "cross.csr",
        ],
    );
    // The cross-signed certificate keeps the issuing certificate's key identifier, so clients
    // match it to the leaves' authority key identifier.
    let ski = openssl(
        dir,
        &[
            "x509",
            "-in",
            &issuing_crt,
            "-noout",
            "-ext",
            "subjectKeyIdentifier",
        ],
    );
    let ski = ski.lines().last().unwrap_or_default().trim().to_owned();
    std::fs::write(
        dir.join("cross.ext"),
        format!(
            "basicConstraints=critical,CA:TRUE,pathlen:1\nkeyUsage=critical,keyCertSign,cRLSign\n\
             subjectKeyIdentifier={ski}\nauthorityKeyIdentifier=keyid\n"
        ),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "cross.csr",
            "-CA",
            "alt-root.crt",
            "-CAkey",
            "alt-root.key",
            "-set_serial",
            "7",
            "-days",
            "365",
            "-extfile",
            "cross.ext",
            "-out",
            "cross.crt",
        ],
    );
    let read =
        |f: &str| std::fs::read_to_string(dir.join(f)).unwrap_or_else(|e| panic!("{f}: {e}"));
    (read("cross.crt"), read("alt-root.crt"))
}
