//! The `ca-server` command line: `serve`, `init`, and `cert sign` for operators.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use ca_server::config::{Config, LogFormat};
use ca_server::issuer::{CertificateRequest, Profile, Subject, csr, hierarchy};
use ca_server::server::{Runtime, serve};
use ca_store::{Protocol, Requester};
use clap::{Args, Parser, Subcommand};

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
}

#[derive(Subcommand)]
enum CertCommand {
    /// Sign a CSR as the operator and record it in the ledger. Names default to the CSR's.
    Sign(SignArgs),
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

fn init_logging(config: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_new(&config.log.level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
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
    init_logging(&config);
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
    match runtime.block_on(run(cli.command, config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("error: {e:#}");
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
        Command::Init(args) => init(&config, args),
        Command::Cert(CertCommand::Sign(args)) => sign(&config, args).await,
        Command::Acme(AcmeCommand::Eab(cmd)) => eab(&config, cmd).await,
    }
}

async fn eab(config: &Config, cmd: EabCommand) -> Result<()> {
    use ca_store::acme::EabKeyRow;
    use ring::rand::SecureRandom;
    let store = ca_store::open(&config.database_url()).await?;
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
            let binding = ca_server::policy::EabBinding {
                names: args.names,
                uris: args.uris,
                preauthorized: args.preauthorized,
                profiles: args.profiles,
            };
            store
                .insert_eab_key(&EabKeyRow {
                    kid: kid.clone(),
                    hmac_key: key.to_vec(),
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

fn init(config: &Config, args: InitArgs) -> Result<()> {
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("creating {}", config.data_dir.display()))?;
    match (args.import_cert, args.import_key) {
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
            let opts = hierarchy::GenerateOptions {
                root_common_name: format!("{} Root CA", args.organization),
                issuing_common_name: format!("{} Issuing CA", args.organization),
                organization: args.organization,
                ..hierarchy::GenerateOptions::default()
            };
            hierarchy::generate(&config.data_dir, &opts)?;
            println!(
                "created a root and issuing CA in {}",
                config.data_dir.display()
            );
        }
    }
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
    let chain = runtime.issuance.ca().chain().to_vec();
    runtime.close().await;
    let signed = match result {
        Ok(s) => s,
        Err(e) => bail!("{e}"),
    };
    for warning in &signed.warnings {
        eprintln!("warning: {warning}");
    }
    let mut pem = hierarchy::to_pem(std::slice::from_ref(&signed.der));
    pem.push_str(&hierarchy::to_pem(&chain));
    match args.out {
        Some(path) => {
            std::fs::write(&path, pem).with_context(|| format!("writing {}", path.display()))?
        }
        None => print!("{pem}"),
    }
    Ok(())
}
