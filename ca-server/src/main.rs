//! The `ca-server` command line: `serve`, `init`, and `cert sign` for operators.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use ca_server::config::{Config, LogFormat};
use ca_server::issuer::{
    CertificateAuthority, CertificateRequest, Profile, Subject, csr, hierarchy,
};
use ca_server::report;
use ca_server::server::{Runtime, serve};
use ca_store::{Protocol, Requester};
use clap::{Args, Parser, Subcommand};

/// mimalloc instead of glibc's malloc: a signing allocates and frees many small buffers across
/// threads (TLS records, DER, PEM, JSON), where glibc's arenas spent ~12 % of the server's CPU.
/// Measured in `docs/benchmarks.md` (sign: 133–156 µs → 119–125 µs per stored signature).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "ca-server",
    version,
    about = "In-cluster private CA for Kubernetes"
)]
struct Cli {
    #[command(flatten)]
    global: GlobalArgs,
    #[command(subcommand)]
    command: Command,
}

/// Settings shared by every command; each overrides the config file.
#[derive(Args)]
struct GlobalArgs {
    /// TOML configuration file.
    #[arg(long, global = true, env = "CA_SERVER_CONFIG")]
    config: Option<PathBuf>,
    /// Data directory (CA material, embedded ledger).
    #[arg(long, global = true, env = "CA_SERVER_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Ledger database URL (`sqlite://…` or `postgres://…`).
    #[arg(
        long,
        global = true,
        env = "CA_SERVER_DATABASE_URL",
        hide_env_values = true
    )]
    database_url: Option<String>,
    /// Log format.
    #[arg(long, global = true, env = "CA_SERVER_LOG_FORMAT")]
    log_format: Option<LogFormat>,
    /// Log filter, e.g. `info` or `ca_server=debug`.
    #[arg(long, global = true, env = "CA_SERVER_LOG")]
    log_level: Option<String>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server (initialises the data directory on first run).
    Serve(ServeArgs),
    /// Create a root and issuing CA, or adopt an existing CA.
    Init(InitArgs),
    /// Certificate operations.
    #[command(subcommand)]
    Cert(CertCommand),
    /// ACME administration.
    #[command(subcommand)]
    Acme(AcmeCommand),
    /// Expiry reports over the ledger, and observed certificates.
    #[command(subcommand)]
    Ledger(LedgerCommand),
    /// Vault API tokens.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Issuing CAs: list, rotate, CSRs for an outside root, install what it signs, activate.
    #[command(subcommand)]
    Ca(CaCommand),
    /// Print the trust bundle: every root trusted now (for GitOps: commit what this prints).
    Bundle(BundleArgs),
    /// Copy the CA material and (SQLite) a consistent snapshot of the ledger into a new
    /// directory, while the server runs. PostgreSQL ledgers: pg_dump (docs/backup.md).
    Backup(BackupArgs),
    /// Restore a backup into an empty data directory (and, for SQLite, a new ledger), then check
    /// it opens as `serve` would.
    Restore(RestoreArgs),
}

#[derive(Args)]
struct BackupArgs {
    /// The directory to create (must not exist).
    #[arg(long)]
    out: PathBuf,
}

#[derive(Args)]
struct RestoreArgs {
    /// A directory made by `ca-server backup`.
    #[arg(long)]
    from: PathBuf,
}

#[derive(Subcommand)]
enum CaCommand {
    /// The issuers: id, name, subject, validity, and which one signs (default), is scheduled
    /// (next) or neither (standby).
    List,
    /// Prepare the next issuing CA now, signed by the root this deployment holds (ca/root.key or
    /// --root-key), and make it the default at --activate-at (default: at once). Without the root
    /// key, prints a CSR for the offline root instead (as `ca csr`).
    Rotate(RotateArgs),
    /// A new key (kept sealed in the database) and a CSR for an issuing CA, printed for an outside
    /// root (Vault's, an offline root) to sign; then `ca install-intermediate`.
    Csr(CsrArgs),
    /// Install an issuing CA signed for a key from `ca csr`: every replica can use it at once.
    InstallIntermediate(InstallArgs),
    /// Make an issuer the default now (id or name); replicas follow within seconds.
    Activate(ActivateArgs),
}

#[derive(Args)]
struct RotateArgs {
    /// The root's key (default: <data-dir>/ca/root.key).
    #[arg(long)]
    root_key: Option<PathBuf>,
    /// When the new issuer becomes the default (RFC 3339). Default: now.
    #[arg(long)]
    activate_at: Option<String>,
}

#[derive(Args)]
struct CsrArgs {
    /// Common name of the new issuing CA (default: the current one's with the next generation).
    #[arg(long)]
    common_name: Option<String>,
    /// A name for the new issuer (Vault's issuer_name), set when it is installed.
    #[arg(long)]
    name: Option<String>,
    /// Write the CSR here instead of standard output.
    #[arg(long)]
    out: Option<PathBuf>,
}

#[derive(Args)]
struct InstallArgs {
    /// The signed certificate (PEM), optionally followed by its parents up to the root.
    #[arg(long)]
    cert: PathBuf,
    /// Its parents up to the root (PEM), when not in --cert.
    #[arg(long)]
    chain: Option<PathBuf>,
    /// Another chain for the same key, e.g. cross-signed by a second root (repeatable).
    #[arg(long)]
    alternate_chain: Vec<PathBuf>,
    /// A name for the issuer (Vault's issuer_name).
    #[arg(long)]
    name: Option<String>,
    /// `now`, an RFC 3339 time, or omit to install without activating (`ca activate` later).
    #[arg(long)]
    activate: Option<String>,
}

#[derive(Args)]
struct ActivateArgs {
    /// Issuer id or name.
    issuer: String,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum BundleFormat {
    /// Concatenated PEM certificates.
    Pem,
    /// A SPIFFE bundle (JWK set).
    Spiffe,
    /// A ConfigMap `ca-server-trust-bundle` with key `bundle.pem` (trust-manager source).
    Configmap,
    /// A `ClusterTrustBundle` (certificates.k8s.io/v1beta1) named `ca-server-trust-bundle`.
    ClusterTrustBundle,
}

#[derive(Args)]
struct BundleArgs {
    /// Output form.
    #[arg(long, value_enum, default_value = "pem")]
    format: BundleFormat,
    /// Namespace of the ConfigMap.
    #[arg(long, default_value = "ca-system")]
    namespace: String,
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Mint a new root token (no TTL) and print it once. For recovery, or after the initial one
    /// was revoked; revoke it again (`vault token revoke -self`) when done.
    Root,
}

#[derive(Subcommand)]
enum LedgerCommand {
    /// Current certificates expiring within a window (default 30 days), earliest first.
    Expiring(ReportArgs),
    /// Certificates matching the filters, earliest expiry first (no window by default).
    Search(ReportArgs),
    /// One certificate by serial (hex, colons optional).
    Show(ShowArgs),
    /// Counts by state, and active certificates by origin, issuer, profile and namespace.
    Stats(StatsArgs),
    /// Record certificates issued elsewhere: files, directories (e.g. /etc/kubernetes/pki),
    /// kubeconfigs, and `tls:host:port` endpoints. Re-observing updates rather than duplicates.
    Observe(ObserveArgs),
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum Output {
    Table,
    Json,
    Csv,
}

#[derive(Args)]
struct ReportArgs {
    #[command(flatten)]
    filters: ca_server::report::Filters,
    /// Output format.
    #[arg(short, long, value_enum, default_value = "table")]
    output: Output,
    /// At most this many certificates.
    #[arg(long, default_value_t = 1000)]
    limit: usize,
}

#[derive(Args)]
struct ShowArgs {
    /// Serial number in hex (`1a:2b:…` or `1A2B…`).
    serial: String,
    /// Print the certificate as PEM instead of its details.
    #[arg(long)]
    pem: bool,
}

#[derive(Args)]
struct StatsArgs {
    /// Output format (table or json).
    #[arg(short, long, value_enum, default_value = "table")]
    output: Output,
}

#[derive(Args)]
struct ObserveArgs {
    /// Files, directories, kubeconfigs, or `tls:host:port`.
    #[arg(required = true)]
    targets: Vec<String>,
}

#[derive(Subcommand)]
enum AcmeCommand {
    /// External Account Binding keys.
    #[command(subcommand)]
    Eab(EabCommand),
}

#[derive(Subcommand)]
enum EabCommand {
    /// Create a key; prints the kid and the base64url MAC key once (give both to the client).
    Create(EabCreateArgs),
    /// List keys and what they are bound to (never prints MAC keys).
    List,
}

#[derive(Args)]
struct EabCreateArgs {
    /// Key identifier (default: random).
    #[arg(long)]
    kid: Option<String>,
    /// Names the account may order: exact, or `.suffix` (repeatable; default: server policy).
    #[arg(long = "name")]
    names: Vec<String>,
    /// URI SAN patterns the account's CSRs may carry, `*` as wildcard (repeatable).
    #[arg(long = "uri")]
    uris: Vec<String>,
    /// Authorizations are created valid: no challenges.
    #[arg(long)]
    preauthorized: bool,
    /// Profiles the account may use (repeatable; default: all offered).
    #[arg(long = "profile")]
    profiles: Vec<String>,
}

#[derive(Args)]
struct ServeArgs {
    /// HTTPS listen address.
    #[arg(long, env = "CA_SERVER_LISTEN")]
    listen: Option<SocketAddr>,
    /// Plain-HTTP listen address (optional).
    #[arg(long, env = "CA_SERVER_HTTP_LISTEN")]
    http_listen: Option<SocketAddr>,
    /// Extra names for the self-issued serving certificate (comma-separated in the environment).
    #[arg(long = "tls-name", env = "CA_SERVER_TLS_NAMES", value_delimiter = ',')]
    tls_names: Vec<String>,
    /// Serve this certificate chain (PEM) instead of a self-issued one.
    #[arg(long, env = "CA_SERVER_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// Private key for --tls-cert.
    #[arg(long, env = "CA_SERVER_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
}

#[derive(Args)]
struct InitArgs {
    /// Adopt this CA certificate (PEM; may be followed by its parents) instead of generating one.
    #[arg(long, requires = "import_key")]
    import_cert: Option<PathBuf>,
    /// The adopted CA's private key (PEM: PKCS#8, PKCS#1 or SEC1).
    #[arg(long, requires = "import_cert")]
    import_key: Option<PathBuf>,
    /// Parents of the adopted CA (PEM), nearest first.
    #[arg(long, requires = "import_cert")]
    import_chain: Option<PathBuf>,
    /// Organisation for generated CA subjects.
    #[arg(long, default_value = "ca-server")]
    organization: String,
    /// Write the generated root's key (and certificate) to this directory instead of
    /// ca/root.key: the root stays offline, rotation then makes CSRs for it to sign.
    #[arg(long, conflicts_with = "import_cert")]
    offline_root: Option<PathBuf>,
    /// Lifetime of the generated issuing CA (e.g. 8760h; default 5 years).
    #[arg(long, conflicts_with = "import_cert")]
    issuing_ttl: Option<String>,
}

#[derive(Subcommand)]
enum CertCommand {
    /// Sign a CSR as the operator and record it in the ledger. Names default to the CSR's.
    Sign(SignArgs),
    /// Revoke a certificate we issued; the next CRL lists it.
    Revoke(RevokeArgs),
}

#[derive(Args)]
struct RevokeArgs {
    /// Serial number in hex (`1a:2b:…` or `1A2B…`).
    serial: String,
    /// RFC 5280 CRLReason code (0 unspecified, 1 keyCompromise, 4 superseded, 5 cessationOfOperation…).
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(i32).range(0..=10))]
    reason: i32,
}

#[derive(Args)]
struct SignArgs {
    /// The CSR (PEM or DER file).
    #[arg(long)]
    csr: PathBuf,
    /// Issuance profile: tls-server, tls-client, tls-server-client, spiffe, ca.
    #[arg(long, default_value = "tls-server")]
    profile: Profile,
    /// Subject common name (default: the CSR's).
    #[arg(long)]
    common_name: Option<String>,
    /// Subject organisation (repeatable).
    #[arg(long)]
    organization: Vec<String>,
    /// DNS SAN (repeatable; replaces the CSR's names when any name flag is given).
    #[arg(long)]
    dns: Vec<String>,
    /// IP SAN (repeatable).
    #[arg(long)]
    ip: Vec<IpAddr>,
    /// URI SAN (repeatable), e.g. a SPIFFE ID.
    #[arg(long)]
    uri: Vec<String>,
    /// Lifetime, e.g. 24h or 30d (default: the profile's).
    #[arg(long)]
    ttl: Option<String>,
    /// Write the certificate chain (PEM) here instead of standard output.
    #[arg(long)]
    out: Option<PathBuf>,
}

fn load_config(global: &GlobalArgs) -> Result<Config> {
    let mut config = match &global.config {
        Some(path) => Config::from_file(path)?,
        None => Config::default(),
    };
    if let Some(dir) = &global.data_dir {
        config.data_dir = dir.clone();
    }
    if let Some(url) = &global.database_url {
        config.database_url = Some(url.clone());
    }
    if let Some(format) = global.log_format {
        config.log.format = format;
    }
    if let Some(level) = &global.log_level {
        config.log.level = level.clone();
    }
    Ok(config)
}

/// A log filter: levels (`error`, `warn`, `info`, `debug`, `trace`, `off`) or `target=level`,
/// comma-separated. Anything else is refused: `tracing` would read `warning` as a target name and
/// silence every log line, errors included.
fn log_filter(spec: &str) -> Result<tracing_subscriber::EnvFilter> {
    const LEVELS: [&str; 6] = ["error", "warn", "info", "debug", "trace", "off"];
    for directive in spec.split(',').map(str::trim).filter(|d| !d.is_empty()) {
        let level = directive.rsplit_once('=').map_or(directive, |(_, l)| l);
        if !LEVELS.contains(&level.to_ascii_lowercase().as_str()) {
            bail!(
                "log level {directive:?}: use error, warn, info, debug, trace or off, or target=level"
            );
        }
    }
    tracing_subscriber::EnvFilter::try_new(spec)
        .map_err(|e| anyhow::anyhow!("log level {spec:?}: {e}"))
}

fn init_logging(config: &Config, filter: tracing_subscriber::EnvFilter) {
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match config.log.format {
        LogFormat::Json => builder.json().flatten_event(true).init(),
        LogFormat::Text => builder.init(),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match load_config(&cli.global) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::from(2);
        }
    };
    let filter = match log_filter(&config.log.level) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::from(2);
        }
    };
    init_logging(&config, filter);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: starting the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    // The server reports a failed start in its log format (collectors read it); a command
    // reports once, in plain words.
    let serving = matches!(cli.command, Command::Serve(_));
    match runtime.block_on(run(cli.command, config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.downcast_ref::<ExitWith>().is_some() => {
            ExitCode::from(e.downcast_ref::<ExitWith>().map_or(1, |x| x.0))
        }
        Err(e) => {
            if serving {
                tracing::error!("{e:#}");
            } else {
                eprintln!("error: {e:#}");
            }
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command, mut config: Config) -> Result<()> {
    match command {
        Command::Serve(args) => {
            if let Some(listen) = args.listen {
                config.listen = listen;
            }
            if args.http_listen.is_some() {
                config.http_listen = args.http_listen;
            }
            config.tls.names.extend(args.tls_names);
            if args.tls_cert.is_some() {
                config.tls.cert_file = args.tls_cert;
                config.tls.key_file = args.tls_key;
            }
            serve(config).await
        }
        Command::Init(args) => init(&config, args).await,
        Command::Cert(CertCommand::Sign(args)) => sign(&config, args).await,
        Command::Acme(AcmeCommand::Eab(cmd)) => eab(&config, cmd).await,
        Command::Cert(CertCommand::Revoke(args)) => revoke(&config, args).await,
        Command::Ledger(cmd) => ledger(&config, cmd).await,
        Command::Token(TokenCommand::Root) => root_token(&config).await,
        Command::Ca(cmd) => ca_command(&config, cmd).await,
        Command::Bundle(args) => bundle(&config, args).await,
        Command::Backup(args) => {
            let m = ca_server::backup::backup(&config, &args.out).await?;
            println!(
                "backed up {} files ({} ledger) to {}",
                m.files.len(),
                m.database,
                args.out.display()
            );
            if m.database == "postgres" {
                eprintln!("the ledger is in PostgreSQL: back it up with pg_dump (docs/backup.md)");
            }
            Ok(())
        }
        Command::Restore(args) => {
            let m = ca_server::backup::restore(&config, &args.from).await?;
            println!(
                "restored the backup of {} into {}; the root token was not backed up: `ca-server token root` makes one",
                m.created_at,
                config.data_dir.display()
            );
            Ok(())
        }
    }
}

async fn ca_command(config: &Config, cmd: CaCommand) -> Result<()> {
    use ca_server::issuer::rotation;
    let runtime = Runtime::open(config).await?;
    let issuers = std::sync::Arc::clone(runtime.issuance.issuers());
    let result = async {
        match cmd {
            CaCommand::List => print_issuers(&issuers.current()),
            CaCommand::Rotate(args) => {
                let set = issuers.current();
                let key_path = rotation::root_key_path(&config.data_dir, args.root_key.as_deref());
                // The key must be the root the default issuer chains to; otherwise that root
                // signs a CSR.
                let root = rotation::RootSigner::load(&set, &key_path)?
                    .filter(|r| set.default_ca().chain().last() == Some(r.certificate()));
                match root {
                    Some(root) => {
                        let at = match &args.activate_at {
                            Some(t) => parse_time(t)?,
                            None => time::OffsetDateTime::now_utc(),
                        };
                        match rotation::prepare_successor(&issuers, &root, at).await? {
                            rotation::Prepared::Made(id) => {
                                println!(
                                    "prepared issuer {id}; it becomes the default at {}",
                                    at.format(&time::format_description::well_known::Rfc3339)
                                        .unwrap_or_default()
                                )
                            }
                            rotation::Prepared::Exists(id) => bail!(
                                "the default issuer already has a successor, {id}: activate it \
                                 (`ca-server ca activate {id}`) or wait for its schedule"
                            ),
                        }
                    }
                    None => {
                        let why = if key_path.exists() {
                            "the root key at {} is not the key of the root the default issuer \
                             chains to"
                        } else {
                            "no root key at {}"
                        };
                        eprintln!(
                            "{}: here is a CSR for that root to sign; install the result with \
                             `ca-server ca install-intermediate --cert …`",
                            why.replace("{}", &key_path.display().to_string())
                        );
                        let cn = next_common_name(&issuers.current());
                        let row = rotation::create_pending(&issuers, &cn, None).await?;
                        print!("{}", row.csr_pem);
                    }
                }
            }
            CaCommand::Csr(args) => {
                let cn = args
                    .common_name
                    .unwrap_or_else(|| next_common_name(&issuers.current()));
                let row = rotation::create_pending(&issuers, &cn, args.name).await?;
                match args.out {
                    Some(path) => {
                        std::fs::write(&path, &row.csr_pem)
                            .with_context(|| format!("writing {}", path.display()))?;
                        eprintln!("wrote the CSR (key {}) to {}", row.key_id, path.display());
                    }
                    None => print!("{}", row.csr_pem),
                }
            }
            CaCommand::InstallIntermediate(args) => {
                let read = |p: &PathBuf| {
                    std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))
                };
                let chain = args.chain.as_ref().map(read).transpose()?;
                let alternates: Vec<String> = args
                    .alternate_chain
                    .iter()
                    .map(read)
                    .collect::<Result<_>>()?;
                let activate_at = match args.activate.as_deref() {
                    None => None,
                    Some("now") => Some(time::OffsetDateTime::now_utc().unix_timestamp()),
                    Some(t) => Some(parse_time(t)?.unix_timestamp()),
                };
                let installed = rotation::install(
                    &issuers,
                    &read(&args.cert)?,
                    chain.as_deref(),
                    &alternates,
                    args.name,
                    activate_at,
                )
                .await?;
                println!(
                    "installed issuer {}{}",
                    installed.issuer_id,
                    if activate_at.is_some() {
                        " (activated)"
                    } else {
                        "; activate it with `ca-server ca activate`"
                    }
                );
            }
            CaCommand::Activate(args) => {
                let id = rotation::activate_now(&issuers, &args.issuer).await?;
                println!("issuer {id} is the default now; replicas follow within seconds");
            }
        }
        Ok(())
    }
    .await;
    runtime.close().await;
    result
}

fn parse_time(text: &str) -> Result<time::OffsetDateTime> {
    time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .with_context(|| format!("{text:?} is not an RFC 3339 time (2026-12-01T00:00:00Z)"))
}

fn next_common_name(set: &ca_server::issuer::set::IssuerSet) -> String {
    let current = report::ca_names(set)
        .remove(set.default_ca().issuer_id())
        .unwrap_or_else(|| "ca-server Issuing CA".into());
    ca_server::issuer::rotation::successor_common_name(&current, set.members().len() + 1)
}

fn print_issuers(set: &ca_server::issuer::set::IssuerSet) {
    let names = report::ca_names(set);
    println!(
        "{:<42} {:<8} {:<16} {:<22} {:<22} COMMON NAME",
        "ISSUER", "STATE", "NAME", "NOT BEFORE", "NOT AFTER"
    );
    let fmt = |t: time::OffsetDateTime| {
        t.format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default()
    };
    for m in set.members() {
        println!(
            "{:<42} {:<8} {:<16} {:<22} {:<22} {}",
            m.ca.issuer_id(),
            m.standing.as_str(),
            m.name.as_deref().unwrap_or("-"),
            fmt(m.ca.not_before()),
            fmt(m.ca.not_after()),
            names.get(m.ca.issuer_id()).map_or("", String::as_str)
        );
    }
}

async fn bundle(config: &Config, args: BundleArgs) -> Result<()> {
    let runtime = Runtime::open(config).await?;
    let set = runtime.issuance.issuers().current();
    runtime.close().await;
    let roots = set.roots(time::OffsetDateTime::now_utc());
    let pem = hierarchy::to_pem(&roots);
    match args.format {
        BundleFormat::Pem => print!("{pem}"),
        BundleFormat::Spiffe => println!(
            "{}",
            serde_json::to_string_pretty(&ca_server::trust::spiffe_bundle(&roots, set.sequence()))?
        ),
        BundleFormat::Configmap => println!(
            "{}",
            serde_json::to_string_pretty(&ca_server::trust::config_map(&args.namespace, &pem))?
        ),
        BundleFormat::ClusterTrustBundle => println!(
            "{}",
            serde_json::to_string_pretty(&ca_server::trust::cluster_trust_bundle(&pem))?
        ),
    }
    Ok(())
}

async fn root_token(config: &Config) -> Result<()> {
    let runtime = Runtime::open(config).await?;
    let auth = ca_server::auth::Auth::new(std::sync::Arc::clone(&runtime.store), runtime.seal()?);
    let minted = auth.mint_root().await;
    runtime.close().await;
    let (token, caller) = minted.map_err(|e| anyhow::anyhow!("minting a root token: {e}"))?;
    eprintln!(
        "minted a root token (accessor {}); it is shown once",
        caller.accessor
    );
    println!("{token}");
    Ok(())
}

async fn revoke(config: &Config, args: RevokeArgs) -> Result<()> {
    let serial = report::parse_serial(&args.serial)
        .with_context(|| format!("{:?} is not a hex serial number", args.serial))?;
    if args.reason == 7 {
        bail!("reason 7 is unused in RFC 5280");
    }
    let store = open_ledger(config).await?;
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let result = store.revoke(&serial, now, args.reason).await;
    store.close().await;
    if result? {
        println!("revoked {}", report::colon_hex(&serial));
        Ok(())
    } else {
        bail!(
            "no unrevoked certificate with serial {} was issued here",
            report::colon_hex(&serial)
        )
    }
}

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// Opens the ledger, naming it (password redacted) when that fails.
async fn open_ledger(config: &Config) -> Result<std::sync::Arc<dyn ca_store::Store>> {
    let url = config.database_url();
    ca_store::open(&url)
        .await
        .with_context(|| format!("opening the ledger at {url}"))
}

/// An exit status to end with, after the command has said what it had to.
#[derive(Debug)]
struct ExitWith(u8);

impl std::fmt::Display for ExitWith {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "exit status {}", self.0)
    }
}

impl std::error::Error for ExitWith {}

/// The issuers, for naming them in reports: all of them when the seal key is here to open the
/// ones the database holds, else the data directory's; None on a host without CA files.
async fn report_issuers(
    config: &Config,
    store: &std::sync::Arc<dyn ca_store::Store>,
) -> Option<std::sync::Arc<ca_server::issuer::set::IssuerSet>> {
    use ca_server::issuer::set::Issuers;
    let ca = CertificateAuthority::load(&config.data_dir, config.issuer_settings()).ok()?;
    let seal = ca_server::seal::Seal::load(&config.data_dir)
        .ok()
        .flatten()
        .map(std::sync::Arc::new);
    match Issuers::load(&ca, config.issuer_settings(), store.clone(), seal).await {
        Ok(issuers) => Some(issuers.current()),
        Err(_) => Some(Issuers::single(ca, store.clone()).current()),
    }
}

async fn ledger(config: &Config, cmd: LedgerCommand) -> Result<()> {
    let store = open_ledger(config).await?;
    // The CA files name our issuers in reports; a ledger-only host (no CA files) still works.
    let issuers = report_issuers(config, &store).await;
    let names = issuers.as_deref().map(report::ca_names).unwrap_or_default();
    let authorities = |now| {
        issuers
            .as_deref()
            .map(|set| report::authorities(set, now))
            .unwrap_or_default()
    };
    let result = async {
        match cmd {
            LedgerCommand::Expiring(mut args) => {
                args.filters
                    .within
                    .get_or_insert(Duration::from_secs(30 * 86_400));
                let now = now();
                let items = report_items(store.as_ref(), &args, now, &names).await?;
                print_report(&items, &authorities(now), args.output);
            }
            LedgerCommand::Search(args) => {
                let now = now();
                let items = report_items(store.as_ref(), &args, now, &names).await?;
                print_report(&items, &[], args.output);
            }
            LedgerCommand::Show(args) => {
                let serial = report::parse_serial(&args.serial)
                    .with_context(|| format!("{:?} is not a hex serial number", args.serial))?;
                let rows = store
                    .expiring(&ca_store::ExpiryQuery {
                        serial: Some(serial),
                        include_revoked: true,
                        limit: 100,
                        ..Default::default()
                    })
                    .await?;
                if rows.is_empty() {
                    bail!("no certificate with serial {} in the ledger", args.serial);
                }
                let now = now();
                for row in rows {
                    if args.pem {
                        if row.certificate.der.is_empty() {
                            bail!("the certificate's DER was dropped by retention");
                        }
                        print!(
                            "{}",
                            hierarchy::pem_block("CERTIFICATE", &row.certificate.der)
                        );
                    } else {
                        let item = report::item(&row, now, &names);
                        println!("{}", serde_json::to_string_pretty(&item)?);
                    }
                }
            }
            LedgerCommand::Stats(args) => {
                let summary = store.summary(now()).await?;
                match args.output {
                    Output::Json => println!("{}", serde_json::to_string_pretty(&summary)?),
                    Output::Csv => print!("{}", stats_csv(&summary, &names)),
                    Output::Table => print_stats(&summary, &names),
                }
            }
            LedgerCommand::Observe(args) => {
                let now = now();
                let found = ca_server::observe::collect(&args.targets, now).await;
                for problem in &found.problems {
                    eprintln!("warning: {}", problem.message);
                }
                let outcome = store.record_observed(&found.certificates, now).await?;
                println!(
                    "observed {} certificates: {} new, {} updated, {} issued by this CA",
                    found.certificates.len(),
                    outcome.inserted,
                    outcome.updated,
                    outcome.already_issued
                );
                match found.exit_code() {
                    0 => {}
                    code => return Err(ExitWith(code).into()),
                }
            }
        }
        Ok::<(), anyhow::Error>(())
    }
    .await;
    store.close().await;
    result
}

async fn report_items(
    store: &dyn ca_store::Store,
    args: &ReportArgs,
    now: i64,
    names: &std::collections::BTreeMap<String, String>,
) -> Result<Vec<report::Item>> {
    let mut query = args.filters.to_query(now);
    query.limit = 1000;
    let mut items = Vec::new();
    while items.len() < args.limit {
        let rows = store.expiring(&query).await?;
        let Some(last) = rows.last() else { break };
        query.after = Some((last.certificate.not_after, last.id));
        items.extend(rows.iter().map(|r| report::item(r, now, names)));
    }
    items.truncate(args.limit);
    Ok(items)
}

fn print_report(items: &[report::Item], authorities: &[report::AuthorityItem], output: Output) {
    match output {
        Output::Table => print!("{}", report::table(items, authorities)),
        Output::Csv => print!("{}", report::csv(items)),
        Output::Json => println!(
            "{}",
            serde_json::to_string_pretty(&report::json(items, authorities)).unwrap_or_default()
        ),
    }
}

/// `ledger stats -o csv`: one row per group of active certificates.
fn stats_csv(
    s: &ca_store::LedgerSummary,
    names: &std::collections::BTreeMap<String, String>,
) -> String {
    let mut out = String::from("origin,issuer,profile,namespace,active,earliest_not_after\r\n");
    for g in &s.groups {
        let earliest = time::OffsetDateTime::from_unix_timestamp(g.earliest_not_after)
            .ok()
            .and_then(|t| {
                t.format(&time::format_description::well_known::Rfc3339)
                    .ok()
            })
            .unwrap_or_default();
        let fields = [
            g.origin.as_str().to_owned(),
            names.get(&g.issuer_id).unwrap_or(&g.issuer_id).clone(),
            g.profile.clone(),
            g.namespace.clone(),
            g.active.to_string(),
            earliest,
        ];
        let line: Vec<String> = fields.iter().map(|f| report::csv_field(f)).collect();
        out.push_str(&line.join(","));
        out.push_str("\r\n");
    }
    out
}

fn print_stats(s: &ca_store::LedgerSummary, names: &std::collections::BTreeMap<String, String>) {
    println!("total        {}", s.total);
    println!("active       {}", s.active);
    println!("expired      {}", s.expired);
    println!("revoked      {}", s.revoked);
    println!("superseded   {}", s.superseded);
    println!("observed     {}", s.observed);
    if let Some(t) = s.earliest_not_after {
        println!(
            "earliest     {} ({})",
            report::kubeadm_date(t),
            report::residual(t - now())
        );
    }
    println!();
    println!(
        "{:<9} {:<28} {:<18} {:<20} {:>8}   EARLIEST EXPIRY",
        "ORIGIN", "ISSUER", "PROFILE", "NAMESPACE", "ACTIVE"
    );
    for g in &s.groups {
        println!(
            "{:<9} {:<28} {:<18} {:<20} {:>8}   {}",
            g.origin.as_str(),
            names.get(&g.issuer_id).unwrap_or(&g.issuer_id),
            g.profile,
            if g.namespace.is_empty() {
                "-"
            } else {
                &g.namespace
            },
            g.active,
            report::kubeadm_date(g.earliest_not_after)
        );
    }
}

async fn eab(config: &Config, cmd: EabCommand) -> Result<()> {
    use ca_store::acme::EabKeyRow;
    use ring::rand::SecureRandom;
    let store = open_ledger(config).await?;
    match cmd {
        EabCommand::Create(args) => {
            let rng = ring::rand::SystemRandom::new();
            let mut key = [0u8; 32];
            rng.fill(&mut key)
                .map_err(|_| anyhow::anyhow!("no randomness"))?;
            let kid = match args.kid {
                Some(k) => k,
                None => {
                    let mut id = [0u8; 12];
                    rng.fill(&mut id)
                        .map_err(|_| anyhow::anyhow!("no randomness"))?;
                    ca_server::acme::jws::b64url(&id)
                }
            };
            let seal = ca_server::seal::Seal::load(&config.data_dir)?.ok_or_else(|| {
                anyhow::anyhow!(
                    "{} is missing: EAB keys are stored sealed with it (run this where the CA's \
                     data directory is, or pass --data-dir)",
                    ca_server::seal::key_path(&config.data_dir).display()
                )
            })?;
            seal.check_against(store.as_ref(), &config.data_dir).await?;
            let binding = ca_server::policy::EabBinding {
                names: args.names,
                uris: args.uris,
                preauthorized: args.preauthorized,
                profiles: args.profiles,
            };
            store
                .insert_eab_key(&EabKeyRow {
                    kid: kid.clone(),
                    hmac_key: seal.seal_bytes(&ca_server::acme::eab_purpose(&kid), &key),
                    policy: serde_json::to_string(&binding)?,
                    account_id: None,
                    created_at: time::OffsetDateTime::now_utc().unix_timestamp(),
                    revoked_at: None,
                })
                .await
                .map_err(|e| match e {
                    ca_store::Error::AlreadyExists => {
                        anyhow::anyhow!("an EAB key {kid:?} already exists")
                    }
                    e => e.into(),
                })?;
            println!("kid: {kid}");
            println!("hmac_key: {}", ca_server::acme::jws::b64url(&key));
        }
        EabCommand::List => {
            println!("{:<28} {:<24} {:<8} POLICY", "KID", "ACCOUNT", "REVOKED");
            for k in store.eab_keys().await? {
                println!(
                    "{:<28} {:<24} {:<8} {}",
                    k.kid,
                    k.account_id.as_deref().unwrap_or("-"),
                    if k.revoked_at.is_some() { "yes" } else { "no" },
                    k.policy
                );
            }
        }
    }
    store.close().await;
    Ok(())
}

async fn init(config: &Config, args: InitArgs) -> Result<()> {
    if !matches!(
        hierarchy::CaFiles::new(&config.data_dir).state(),
        hierarchy::CaState::Empty
    ) {
        bail!(
            "{} already holds CA material; refusing to replace it",
            config.data_dir.join("ca").display()
        );
    }
    {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&config.data_dir)
            .with_context(|| format!("creating {}", config.data_dir.display()))?;
    }
    // The database must not belong to another CA already. An embedded ledger this command
    // creates is removed again if the CA cannot be made (a key that does not match, …).
    let sqlite = ca_store::sqlite::file_path(&config.database_url())
        .filter(|_| config.database_url().backend().ok() == Some(ca_store::Backend::Sqlite));
    let created = sqlite.as_ref().filter(|p| !p.exists()).cloned();
    let store = open_ledger(config).await?;
    let in_use = !store.issuers().await?.is_empty() || !store.issued_issuer_ids().await?.is_empty();
    store.close().await;
    if in_use {
        bail!("the database already belongs to a CA; point --database-url at a new one");
    }
    let made = make_ca(config, &args);
    if made.is_err()
        && let Some(db) = created
    {
        for suffix in ["", "-wal", "-shm"] {
            let mut name = db.clone().into_os_string();
            name.push(suffix);
            let _ = std::fs::remove_file(std::path::PathBuf::from(name));
        }
    }
    made?;
    ca_server::seal::Seal::create(&config.data_dir)?;
    finish_init(config).await
}

/// Generates or imports the CA files (`init`'s middle step).
fn make_ca(config: &Config, args: &InitArgs) -> Result<()> {
    match (args.import_cert.clone(), args.import_key.clone()) {
        (Some(cert), Some(key)) => {
            let read = |p: &PathBuf| {
                std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))
            };
            let chain = args.import_chain.as_ref().map(read).transpose()?;
            hierarchy::import(
                &config.data_dir,
                &read(&cert)?,
                &read(&key)?,
                chain.as_deref(),
            )?;
            println!(
                "adopted the CA from {} into {}",
                cert.display(),
                config.data_dir.display()
            );
        }
        _ => {
            let mut opts = hierarchy::GenerateOptions {
                root_common_name: format!("{} Root CA", args.organization),
                issuing_common_name: format!("{} Issuing CA", args.organization),
                organization: args.organization.clone(),
                offline_root: args.offline_root.clone(),
                ..hierarchy::GenerateOptions::default()
            };
            if let Some(ttl) = &args.issuing_ttl {
                let d = ca_server::duration::parse(ttl)?;
                if d < Duration::from_secs(10) {
                    bail!("issuing TTL {ttl:?}: an issuing CA lives 10 seconds at least");
                }
                opts.issuing_lifetime = time::Duration::try_from(d)
                    .map_err(|_| anyhow::anyhow!("issuing TTL {ttl:?} is too long"))?;
            }
            hierarchy::generate(&config.data_dir, &opts)?;
            println!(
                "created a root and issuing CA in {}",
                config.data_dir.display()
            );
        }
    }
    Ok(())
}

/// Registers the CA with the database and makes the one root token (`init`'s last step).
async fn finish_init(config: &Config) -> Result<()> {
    let runtime = Runtime::open(config).await?;
    let auth = ca_server::auth::Auth::new(std::sync::Arc::clone(&runtime.store), runtime.seal()?);
    let created = ca_server::server::create_root_token_once(config, &auth).await;
    runtime.close().await;
    created?;
    println!(
        "the Vault API root token is in {}",
        config.data_dir.join("root-token").display()
    );
    Ok(())
}

async fn sign(config: &Config, args: SignArgs) -> Result<()> {
    let bytes =
        std::fs::read(&args.csr).with_context(|| format!("reading {}", args.csr.display()))?;
    let verified = match std::str::from_utf8(&bytes) {
        Ok(text) if text.contains("-----BEGIN") => csr::parse_pem(text)?,
        _ => csr::parse_der(&bytes)?,
    };
    let mut req = CertificateRequest::new(verified.public_key.clone(), args.profile);
    req.subject = Subject {
        common_name: args.common_name.or(verified.common_name.clone()),
        organization: args.organization,
        ..Subject::default()
    };
    if args.dns.is_empty() && args.ip.is_empty() && args.uri.is_empty() {
        req.dns_names = verified.dns_names;
        req.ip_addresses = verified.ip_addresses;
        req.uris = verified.uris;
    } else {
        req.dns_names = args.dns;
        req.ip_addresses = args.ip;
        req.uris = args.uri;
    }
    if let Some(ttl) = args.ttl {
        req.lifetime = Some(ca_server::duration::parse(&ttl)?);
    }
    let runtime = Runtime::open(config).await?;
    let operator = std::env::var("USER").unwrap_or_else(|_| "operator".into());
    let requester = Requester::new(Protocol::Cli, operator);
    let result = runtime
        .issuance
        .issue(&req, &requester, &uuid::Uuid::new_v4().to_string())
        .await;
    runtime.close().await;
    let signed = match result {
        Ok(s) => s,
        Err(e) => bail!("{e}"),
    };
    for warning in &signed.warnings {
        eprintln!("warning: {warning}");
    }
    let mut pem = hierarchy::to_pem(std::slice::from_ref(&signed.der));
    pem.push_str(&hierarchy::to_pem(&signed.chain));
    match args.out {
        Some(path) => {
            std::fs::write(&path, pem).with_context(|| format!("writing {}", path.display()))?
        }
        None => print!("{pem}"),
    }
    Ok(())
}
