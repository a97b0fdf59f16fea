//! The `vcnode` command line: `serve`, `doctor`, `jobs`, and developer tools.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::{Parser, Subcommand};
use vcnode::config::{Config, DestinationConfig, DestinationKind, PeerConfig, RouteConfig};
use vcnode::directory::Directory;
use vcnode::fixture::{mammogram, MammogramSpec};
use vcnode::queue::{Kind, LeaseQueue, ListFilter, Queue, Requeue, State};
use vcnode::web::auth::{AuthStore, Role, Secret};

#[derive(Debug, Parser)]
#[command(
    name = "vcnode",
    version,
    about = "DICOM node for AI-synthesized CESM recombined images"
)]
struct Cli {
    /// Configuration file (only the keys that differ from the embedded defaults are needed).
    #[arg(long, global = true, env = "VCNODE_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the node: the DIMSE storage SCP and the job queue.
    Serve,
    /// Print the torch version, whether CUDA is usable and the device inference would use.
    Doctor,
    /// List jobs and exports and their states; `jobs retry` queues dead jobs again.
    #[command(args_conflicts_with_subcommands = true)]
    Jobs {
        /// Only jobs in this state (queued, running, done, dead).
        #[arg(long)]
        state: Option<State>,
        #[command(subcommand)]
        action: Option<JobsAction>,
    },
    /// Exports (listed by `vcnode jobs`): `exports retry` queues dead exports again.
    Exports {
        #[command(subcommand)]
        action: ExportsAction,
    },
    /// Peers (AE titles allowed to send) in the node's directory: list, add, remove. A running
    /// node applies the change within a second.
    Peers {
        #[command(subcommand)]
        action: PeersAction,
    },
    /// Destinations in the node's directory: list, add, remove, or check them (C-ECHO, or a
    /// QIDO-RS request).
    Destinations {
        #[command(subcommand)]
        action: DestinationsAction,
    },
    /// Routes (whose results go where) in the node's directory: list, add, remove.
    Routes {
        #[command(subcommand)]
        action: RoutesAction,
    },
    /// Run the pipeline offline: LE files in, derived RC instances out.
    Process {
        /// LE DICOM files.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        #[arg(long)]
        out: PathBuf,
    },
    /// Pull a study from a DICOMweb PACS in [[sources]] and process it: asks the running node
    /// (POST /api/process), which retrieves the study's LE images, stores and queues them; the
    /// derived series goes where [[routes]] with from_ae = the source's name send it.
    Pull {
        /// The source's name in [[sources]].
        #[arg(long)]
        source: String,
        /// The Study Instance UID.
        #[arg(long)]
        study: String,
        /// The running node's HTTP address (default: http://127.0.0.1:<node.http_port>).
        #[arg(long)]
        node: Option<String>,
        /// An admin token for the node (`vcnode tokens create --role admin`); needed unless
        /// `[auth] required = false`.
        #[arg(long, env = "VCNODE_TOKEN", hide_env_values = true, value_parser = secret_arg)]
        token: Option<Secret>,
    },
    /// API tokens for the HTTP port (`Authorization: Bearer …`): create, list, revoke.
    Tokens {
        #[command(subcommand)]
        action: TokensAction,
    },
    /// Local users who sign in on the login page (/login): add, list, remove.
    Users {
        #[command(subcommand)]
        action: UsersAction,
    },
    /// Write synthetic mammograms for tests and benchmarks.
    #[command(hide = true)]
    Fixture {
        #[arg(long)]
        out: PathBuf,
        #[arg(long, default_value_t = 1)]
        count: u64,
        #[arg(long, default_value_t = 1)]
        first_seed: u64,
        #[arg(long, default_value_t = 512)]
        rows: u16,
        #[arg(long, default_value_t = 416)]
        columns: u16,
        #[arg(long, default_value = vcnode_scp::MG_FOR_PRESENTATION)]
        sop_class: String,
        #[arg(long, default_value = "ORIGINAL\\PRIMARY\\POST_CONTRAST\\\\LOW_ENERGY")]
        image_type: String,
    },
}

#[derive(Debug, Subcommand)]
enum JobsAction {
    /// Queue a dead job (or all dead jobs) again with a fresh attempt count.
    Retry(RetryArgs),
}

#[derive(Debug, Subcommand)]
enum ExportsAction {
    /// Queue a dead export (or all dead exports) again with a fresh attempt count.
    Retry(RetryArgs),
}

#[derive(Debug, clap::Args)]
struct RetryArgs {
    /// The job or export number, as `vcnode jobs` lists it.
    #[arg(required_unless_present = "dead", conflicts_with = "dead")]
    id: Option<i64>,
    /// Every dead one.
    #[arg(long)]
    dead: bool,
}

#[derive(Debug, Subcommand)]
enum TokensAction {
    /// Create a token and print it (the only time it is shown: only its hash is stored).
    Create {
        #[arg(long)]
        name: String,
        #[arg(long)]
        role: Role,
        /// Expire after this long: e.g. 90d, 12h, 30m, 45s (default: never).
        #[arg(long)]
        expires_in: Option<String>,
    },
    /// The tokens, their roles and states (never the tokens themselves).
    List,
    /// Revoke a token by name; a running node refuses it at once, and its sessions end.
    Revoke { name: String },
}

#[derive(Debug, Subcommand)]
enum UsersAction {
    /// Add a user; the password is read from --password-file or the first line of stdin.
    Add {
        #[arg(long)]
        name: String,
        #[arg(long)]
        role: Role,
        #[arg(long)]
        password_file: Option<PathBuf>,
    },
    List,
    /// Remove a user; their sessions end.
    Remove {
        name: String,
    },
}

#[derive(Debug, Subcommand)]
enum DestinationsAction {
    /// C-ECHO each DIMSE destination, query each DICOMweb one.
    Check,
    List,
    /// Add a destination: `--kind dimse` with --ae-title, --host and --port, or `--kind
    /// dicomweb` with --url.
    Add(DestinationArgs),
    /// Remove a destination (refused while a route names it).
    Remove {
        name: String,
    },
}

#[derive(Debug, Subcommand)]
enum PeersAction {
    List,
    /// Add a peer: its AE title, and the address it must call from (any if left out).
    Add {
        ae_title: String,
        #[arg(long)]
        host: Option<std::net::IpAddr>,
        /// Listed but not let in until enabled (through the admin API).
        #[arg(long)]
        disabled: bool,
    },
    Remove {
        ae_title: String,
    },
}

#[derive(Debug, Subcommand)]
enum RoutesAction {
    List,
    /// Send the results of images from FROM_AE ("*": any sender) to the destinations in --to.
    Add {
        from_ae: String,
        #[arg(long, required = true, value_delimiter = ',')]
        to: Vec<String>,
    },
    Remove {
        from_ae: String,
    },
}

#[derive(Debug, clap::Args)]
struct DestinationArgs {
    name: String,
    #[arg(long, value_parser = ["dimse", "dicomweb"])]
    kind: String,
    #[arg(long)]
    ae_title: Option<String>,
    #[arg(long)]
    host: Option<String>,
    #[arg(long)]
    port: Option<u16>,
    #[arg(long)]
    url: Option<String>,
    /// For https:// URLs: a PEM file with the CA that signed the destination's certificate.
    #[arg(long)]
    ca_file: Option<PathBuf>,
    /// The environment variable holding a bearer token (not the token: it would show in the
    /// process list and the shell's history).
    #[arg(long, conflicts_with = "basic_env")]
    bearer_env: Option<String>,
    /// The environment variable holding `user:password`.
    #[arg(long)]
    basic_env: Option<String>,
    #[arg(long)]
    allow_insecure_auth: bool,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("VCNODE_LOG")
                .unwrap_or_else(|_| "info,sqlx=warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match cli.command {
        Command::Serve => {
            let config = load(cli.config.as_deref())?;
            runtime()?.block_on(vcnode::node::serve(config))
        }
        Command::Doctor => doctor(&load(cli.config.as_deref())?),
        Command::Jobs { state, action } => {
            let config = load(cli.config.as_deref())?;
            match action {
                None => runtime()?.block_on(jobs(&config, state)),
                Some(JobsAction::Retry(args)) => runtime()?.block_on(retry(&config, Kind::Job, &args)),
            }
        }
        Command::Exports {
            action: ExportsAction::Retry(args),
        } => {
            let config = load(cli.config.as_deref())?;
            runtime()?.block_on(retry(&config, Kind::Export, &args))
        }
        Command::Peers { action } => {
            let config = load(cli.config.as_deref())?;
            runtime()?.block_on(peers(&config, action))
        }
        Command::Routes { action } => {
            let config = load(cli.config.as_deref())?;
            runtime()?.block_on(routes(&config, action))
        }
        Command::Destinations { action } if !matches!(action, DestinationsAction::Check) => {
            let config = load(cli.config.as_deref())?;
            runtime()?.block_on(destinations(&config, action))
        }
        Command::Destinations { .. } => {
            let config = load(cli.config.as_deref())?;
            let rt = runtime()?;
            // The node's directory when it has one (what the node sends to), else the file's.
            let list = if config.node.data_dir.join(vcnode::queue::DB_FILE).exists() {
                let (queue, directory) = rt.block_on(open_directory(&config))?;
                rt.block_on(queue.close());
                directory.snapshot().destination_defs()
            } else {
                config.destinations.clone()
            };
            anyhow::ensure!(!list.is_empty(), "no destinations configured");
            let results = rt.block_on(vcnode::export::check(&config, &list));
            let mut failed = 0;
            for (name, r) in &results {
                match r {
                    Ok(msg) => println!("{name}: ok — {msg}"),
                    Err(e) => {
                        failed += 1;
                        println!("{name}: FAILED — {e}");
                    }
                }
            }
            anyhow::ensure!(failed == 0, "{failed} destination(s) failed the check");
            Ok(())
        }
        Command::Pull {
            source,
            study,
            node,
            token,
        } => {
            let config = load(cli.config.as_deref())?;
            runtime()?.block_on(pull(&config, node, token.as_ref(), &source, &study))
        }
        Command::Process { files, out } => {
            let config = load(cli.config.as_deref())?;
            let model =
                vcnode::pipeline::load_model(&config.inference)?.context("[inference] model is empty")?;
            let synth = vcnode::derive::Synthesizer {
                model_id: model.manifest.model_id(),
                weights_sha256: model.manifest.weights.sha256.clone(),
                burn_in_label: config.inference.burn_in_label,
            };
            for path in vcnode::pipeline::process_files(&files, &out, &model, &synth, config.inference.ood)? {
                println!("{}", path.display());
            }
            Ok(())
        }
        Command::Tokens { action } => {
            let config = load(cli.config.as_deref())?;
            runtime()?.block_on(tokens(&config, action))
        }
        Command::Users { action } => {
            let config = load(cli.config.as_deref())?;
            runtime()?.block_on(users(&config, action))
        }
        Command::Fixture {
            out,
            count,
            first_seed,
            rows,
            columns,
            sop_class,
            image_type,
        } => {
            std::fs::create_dir_all(&out)?;
            for seed in first_seed..first_seed + count {
                let spec = MammogramSpec {
                    rows,
                    columns,
                    sop_class_uid: sop_class.clone(),
                    image_type: image_type.clone(),
                    ..MammogramSpec::low_energy(seed)
                };
                let path = out.join(format!("mg-{seed:05}.dcm"));
                mammogram(&spec)
                    .write_to_file(&path)
                    .with_context(|| format!("writing {}", path.display()))?;
            }
            Ok(())
        }
    }
}

/// A secret argument: kept out of `Cli`'s Debug output.
fn secret_arg(text: &str) -> Result<Secret, String> {
    Ok(Secret::new(text))
}

fn load(path: Option<&Path>) -> anyhow::Result<Config> {
    Config::load(path).map_err(|e| anyhow::anyhow!("{e}"))
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread().enable_all().build()?)
}

fn doctor(config: &Config) -> anyhow::Result<()> {
    let report = vcnode_models::device::inspect(config.inference.device, config.inference.torch_lib());
    println!("vcnode {}", env!("CARGO_PKG_VERSION"));
    println!(
        "libtorch: {}",
        if report.libtorch_version.is_empty() {
            "unknown"
        } else {
            report.libtorch_version
        }
    );
    let gpu = vcnode_models::device::gpu_info();
    match &gpu.driver {
        Some(driver) => println!(
            "NVIDIA driver: {driver} (CUDA {}); GPUs: {}",
            gpu.cuda_driver_api.as_deref().unwrap_or("unknown"),
            if gpu.gpus.is_empty() {
                "none listed".to_string()
            } else {
                gpu.gpus.join(", ")
            }
        ),
        None => println!("NVIDIA driver: none (no /proc/driver/nvidia)"),
    }
    match &report.cuda_library {
        Ok(path) => println!("libtorch_cuda.so: loaded from {}", path.display()),
        Err(e) => println!("libtorch_cuda.so: {e}"),
    }
    println!(
        "CUDA usable: {} ({} device(s), cuDNN {}{})",
        if report.cuda_device_count > 0 { "yes" } else { "no" },
        report.cuda_device_count,
        if report.cudnn { "yes" } else { "no" },
        report
            .cuda_runtime
            .map(|v| format!(", CUDA runtime {}.{}", v / 1000, (v % 1000) / 10))
            .unwrap_or_default()
    );
    println!("configured device: {}", report.requested);
    match &report.resolved {
        Ok(d) => println!(
            "inference device: {d:?}{}",
            report
                .fallback_note
                .as_deref()
                .map(|n| format!(" ({n})"))
                .unwrap_or_default()
        ),
        Err(e) => println!("inference device: none: {e}"),
    }
    if let Ok(d) = &report.resolved {
        println!(
            "inference precision: {:?} ({:?})",
            config.inference.precision,
            config.inference.precision.kind_on(*d)
        );
    }
    println!(
        "accepted transfer syntaxes: {}",
        vcnode::node::decodable_transfer_syntaxes().join(" ")
    );
    report.resolved.map(|_| ()).map_err(|e| anyhow::anyhow!(e))
}

/// The node's directory (in its database, which must exist already).
async fn open_directory(config: &Config) -> anyhow::Result<(Queue, Directory)> {
    let queue = open_queue(config).await?;
    let directory = Directory::open(queue.pool().clone()).await?;
    Ok((queue, directory))
}

async fn peers(config: &Config, action: PeersAction) -> anyhow::Result<()> {
    let (queue, directory) = open_directory(config).await?;
    match action {
        PeersAction::List => {
            println!("{:<16}  {:<39}  {:<8}  ORIGIN", "AE TITLE", "HOST", "ENABLED");
            for e in &directory.snapshot().peers {
                let host = e.def.host.map_or("any".to_string(), |h| h.to_string());
                println!(
                    "{:<16}  {:<39}  {:<8}  {}",
                    e.def.ae_title,
                    host,
                    if e.def.enabled { "yes" } else { "no" },
                    e.origin.as_str()
                );
            }
        }
        PeersAction::Add {
            ae_title,
            host,
            disabled,
        } => {
            directory
                .create(PeerConfig {
                    ae_title: ae_title.clone(),
                    host,
                    enabled: !disabled,
                })
                .await?;
            println!("peer {ae_title} added");
        }
        PeersAction::Remove { ae_title } => {
            directory.remove::<PeerConfig>(&ae_title).await?;
            println!("peer {ae_title} removed");
        }
    }
    queue.close().await;
    Ok(())
}

async fn destinations(config: &Config, action: DestinationsAction) -> anyhow::Result<()> {
    let (queue, directory) = open_directory(config).await?;
    match action {
        DestinationsAction::Check => unreachable!("checked without the directory's write side"),
        DestinationsAction::List => {
            println!("{:<16}  {:<8}  {:<48}  ORIGIN", "NAME", "KIND", "WHERE");
            for e in &directory.snapshot().destinations {
                let d = &e.def;
                let at = match d.kind {
                    DestinationKind::Dimse => format!(
                        "{}@{}:{}",
                        d.ae_title.as_deref().unwrap_or(""),
                        d.host.as_deref().unwrap_or(""),
                        d.port.unwrap_or(0)
                    ),
                    DestinationKind::Dicomweb => d.url.clone().unwrap_or_default(),
                };
                let kind = match d.kind {
                    DestinationKind::Dimse => "dimse",
                    DestinationKind::Dicomweb => "dicomweb",
                };
                println!("{:<16}  {:<8}  {:<48}  {}", d.name, kind, at, e.origin.as_str());
            }
        }
        DestinationsAction::Add(a) => {
            let secret = |var: &Option<String>| -> anyhow::Result<Option<String>> {
                var.as_ref()
                    .map(|v| std::env::var(v).with_context(|| format!("environment variable {v} is not set")))
                    .transpose()
            };
            let (bearer, basic) = (secret(&a.bearer_env)?, secret(&a.basic_env)?);
            let auth =
                (bearer.is_some() || basic.is_some()).then_some(vcnode::config::AuthConfig { bearer, basic });
            let name = a.name.clone();
            directory
                .create(DestinationConfig {
                    name: a.name,
                    kind: if a.kind == "dimse" {
                        DestinationKind::Dimse
                    } else {
                        DestinationKind::Dicomweb
                    },
                    ae_title: a.ae_title,
                    host: a.host,
                    port: a.port,
                    url: a.url,
                    tls: a.ca_file.map(|f| vcnode::config::TlsConfig {
                        ca_file: Some(f),
                        cert_file: None,
                        key_file: None,
                        server_name: None,
                    }),
                    auth,
                    allow_insecure_auth: a.allow_insecure_auth,
                })
                .await?;
            println!("destination {name} added");
        }
        DestinationsAction::Remove { name } => {
            directory.remove::<DestinationConfig>(&name).await?;
            println!("destination {name} removed");
        }
    }
    queue.close().await;
    Ok(())
}

async fn routes(config: &Config, action: RoutesAction) -> anyhow::Result<()> {
    let (queue, directory) = open_directory(config).await?;
    match action {
        RoutesAction::List => {
            println!("{:<16}  {:<48}  ORIGIN", "FROM AE", "TO");
            for e in &directory.snapshot().routes {
                println!(
                    "{:<16}  {:<48}  {}",
                    e.def.from_ae,
                    e.def.to.join(", "),
                    e.origin.as_str()
                );
            }
        }
        RoutesAction::Add { from_ae, to } => {
            directory
                .create(RouteConfig {
                    from_ae: from_ae.clone(),
                    to,
                })
                .await?;
            println!("route from {from_ae} added");
        }
        RoutesAction::Remove { from_ae } => {
            directory.remove::<RouteConfig>(&from_ae).await?;
            println!("route from {from_ae} removed");
        }
    }
    queue.close().await;
    Ok(())
}

/// The node's job database, which must exist already.
async fn open_queue(config: &Config) -> anyhow::Result<Queue> {
    let db = config.node.data_dir.join(vcnode::queue::DB_FILE);
    anyhow::ensure!(
        db.exists(),
        "no job database at {} (has the node run with this data_dir?)",
        db.display()
    );
    Ok(Queue::open(&config.node.data_dir).await?)
}

/// The node's database for tokens and users: created if the node has not run yet, so the first
/// admin token or user can exist before the first start.
async fn open_auth(config: &Config) -> anyhow::Result<(Queue, AuthStore)> {
    std::fs::create_dir_all(&config.node.data_dir)
        .with_context(|| format!("creating data_dir {}", config.node.data_dir.display()))?;
    let queue = Queue::open(&config.node.data_dir).await?;
    let store = AuthStore::new(queue.pool().clone());
    Ok((queue, store))
}

fn time_text(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_else(|| ms.to_string())
}

/// `90d`, `12h`, `30m`, `45s` as a duration.
fn parse_duration(text: &str) -> anyhow::Result<std::time::Duration> {
    let (number, unit) = text.split_at(text.trim_end_matches(|c: char| c.is_ascii_alphabetic()).len());
    let n: u64 = number
        .parse()
        .with_context(|| format!("{text:?} is not a duration (e.g. 90d, 12h, 30m, 45s)"))?;
    let secs = match unit {
        "d" => n * 86_400,
        "h" => n * 3_600,
        "m" => n * 60,
        "s" | "" => n,
        other => anyhow::bail!("unknown unit {other:?} in {text:?} (d, h, m, s)"),
    };
    anyhow::ensure!(secs > 0, "--expires-in must be longer than 0");
    Ok(std::time::Duration::from_secs(secs))
}

async fn tokens(config: &Config, action: TokensAction) -> anyhow::Result<()> {
    let (queue, store) = open_auth(config).await?;
    match action {
        TokensAction::Create {
            name,
            role,
            expires_in,
        } => {
            let expires_at = expires_in
                .as_deref()
                .map(parse_duration)
                .transpose()?
                .map(|d| vcnode::queue::now_ms() + d.as_millis() as i64);
            let token = store.create_token(&name, role, expires_at).await?;
            eprintln!("token {name:?} ({role}) created; it is shown only this once:");
            println!("{}", token.expose());
        }
        TokensAction::List => {
            let now = vcnode::queue::now_ms();
            println!(
                "{:<24}  {:<8}  {:<20}  {:<20}  STATE",
                "NAME", "ROLE", "CREATED", "EXPIRES"
            );
            for t in store.list_tokens().await? {
                let state = match (t.revoked_at, t.expires_at) {
                    (Some(at), _) => format!("revoked {}", time_text(at)),
                    (None, Some(at)) if at <= now => "expired".to_string(),
                    _ => "active".to_string(),
                };
                println!(
                    "{:<24}  {:<8}  {:<20}  {:<20}  {state}",
                    t.name,
                    t.role,
                    time_text(t.created_at),
                    t.expires_at.map(time_text).unwrap_or_else(|| "never".into())
                );
            }
        }
        TokensAction::Revoke { name } => {
            anyhow::ensure!(store.revoke_token(&name).await?, "no active token named {name:?}");
            println!("token {name:?} revoked");
        }
    }
    queue.close().await;
    Ok(())
}

async fn users(config: &Config, action: UsersAction) -> anyhow::Result<()> {
    let (queue, store) = open_auth(config).await?;
    match action {
        UsersAction::Add {
            name,
            role,
            password_file,
        } => {
            // The password's text is never part of an error message.
            let text = match &password_file {
                Some(path) => std::fs::read_to_string(path)
                    .with_context(|| format!("reading the password file {}", path.display()))?,
                None => {
                    let mut line = String::new();
                    std::io::stdin()
                        .read_line(&mut line)
                        .context("reading the password from stdin")?;
                    line
                }
            };
            let password = Secret::new(text.lines().next().unwrap_or_default());
            store.add_user(&name, role, &password).await?;
            println!("user {name:?} ({role}) added");
        }
        UsersAction::List => {
            println!("{:<24}  {:<8}  CREATED", "NAME", "ROLE");
            for u in store.list_users().await? {
                println!("{:<24}  {:<8}  {}", u.name, u.role, time_text(u.created_at));
            }
        }
        UsersAction::Remove { name } => {
            anyhow::ensure!(store.remove_user(&name).await?, "no user named {name:?}");
            println!("user {name:?} removed");
        }
    }
    queue.close().await;
    Ok(())
}

async fn retry(config: &Config, kind: Kind, args: &RetryArgs) -> anyhow::Result<()> {
    let queue = open_queue(config).await?;
    let what = match kind {
        Kind::Job => "job",
        Kind::Export => "export",
    };
    let which = match args.id {
        Some(id) => Requeue::One(id),
        None => Requeue::AllDead,
    };
    let n = queue.requeue(kind, which).await?;
    queue.close().await;
    match which {
        Requeue::One(id) => {
            anyhow::ensure!(n == 1, "no dead or queued {what} {id}");
            println!("{what} {id} queued again");
        }
        Requeue::AllDead => println!("{n} dead {what}(s) queued again"),
    }
    Ok(())
}

async fn jobs(config: &Config, state: Option<State>) -> anyhow::Result<()> {
    let queue = open_queue(config).await?;
    // The Jobs API's lists (GET /api/jobs, /api/exports), unpaged.
    let all = ListFilter {
        state,
        limit: i64::MAX,
        ..ListFilter::default()
    };
    let (_, jobs) = queue.job_views(&all).await?;
    println!(
        "{:>6}  {:<8}  {:>8}  {:<64}  LAST ERROR",
        "JOB", "STATE", "ATTEMPTS", "SOURCE INSTANCE"
    );
    for j in &jobs {
        println!(
            "{:>6}  {:<8}  {:>8}  {:<64}  {}",
            j.id,
            j.state,
            format!("{}/{}", j.attempts, j.max_attempts),
            j.source_uid,
            j.last_error.as_deref().unwrap_or("")
        );
    }
    let (_, exports) = queue
        .export_views(&ListFilter {
            state: None,
            ..all.clone()
        })
        .await?;
    if !exports.is_empty() {
        println!();
        println!(
            "{:>6}  {:<8}  {:>8}  {:<12}  {:<64}  LAST ERROR",
            "EXPORT", "STATE", "ATTEMPTS", "DESTINATION", "INSTANCE"
        );
        for x in &exports {
            println!(
                "{:>6}  {:<8}  {:>8}  {:<12}  {:<64}  {}",
                x.id,
                x.state,
                format!("{}/{}", x.attempts, x.max_attempts),
                x.destination,
                x.instance_uid,
                x.last_error.as_deref().unwrap_or("")
            );
        }
    }
    let counts: Vec<String> = queue
        .job_counts()
        .await?
        .into_iter()
        .map(|(s, n)| format!("{s}: {n}"))
        .collect();
    println!(
        "{} job(s){}{}",
        jobs.len(),
        if counts.is_empty() { "" } else { "; " },
        counts.join(", ")
    );
    Ok(())
}

/// `vcnode pull`: one mechanism for pulls, the node's `POST /api/process`; this prints its
/// report and fails unless every selected instance is stored or was present already.
async fn pull(
    config: &Config,
    node: Option<String>,
    token: Option<&Secret>,
    source: &str,
    study: &str,
) -> anyhow::Result<()> {
    let base = match node {
        Some(url) => url.trim_end_matches('/').to_string(),
        None => {
            anyhow::ensure!(
                config.node.http_port != 0,
                "node.http_port is 0 (a port the OS picks): give the node's address with --node http://HOST:PORT"
            );
            // A node bound to every address answers on loopback; else on the address it binds.
            let host = match config.node.bind {
                ip if ip.is_unspecified() => "127.0.0.1".to_string(),
                std::net::IpAddr::V6(ip) => format!("[{ip}]"),
                ip => ip.to_string(),
            };
            format!("{}://{host}:{}", config.http_scheme(), config.node.http_port)
        }
    };
    let url = format!("{base}/api/process");
    // No overall limit: a large study takes as long as the node needs to retrieve and store it.
    let http = reqwest::Client::builder()
        .connect_timeout(std::time::Duration::from_secs(10))
        .build()?;
    let mut request = http
        .post(&url)
        .json(&serde_json::json!({ "source": source, "study": study }));
    if let Some(token) = token {
        request = request.bearer_auth(token.expose());
    }
    let rsp = request
        .send()
        .await
        .map_err(|e| {
            if e.is_connect() {
                anyhow::anyhow!(
                    "vcnode is not running at {base} (cannot connect: {}); start it with `vcnode serve`, or give its address with --node",
                    vcnode::dicomweb_client::with_causes(&e)
                )
            } else {
                anyhow::anyhow!("POST {url}: {}", vcnode::dicomweb_client::with_causes(&e))
            }
        })?;
    let status = rsp.status();
    match status {
        reqwest::StatusCode::UNAUTHORIZED => anyhow::bail!(
            "the node requires an admin token: --token or VCNODE_TOKEN (`vcnode tokens create --name NAME --role admin`){}",
            if token.is_some() { "; the one given is unknown, revoked or expired" } else { "" }
        ),
        reqwest::StatusCode::FORBIDDEN => anyhow::bail!("the token's role may not pull: an admin token is needed"),
        reqwest::StatusCode::TOO_MANY_REQUESTS => {
            anyhow::bail!("the node refuses this address for a while after failed attempts (HTTP 429)")
        }
        _ => {}
    }
    let body = rsp.bytes().await.context("reading the node's answer")?;
    let json: serde_json::Value = serde_json::from_slice(&body).with_context(|| {
        format!(
            "POST {url}: HTTP {status}, not a vcnode answer: {}",
            String::from_utf8_lossy(&body[..body.len().min(200)])
        )
    })?;
    if let Some(error) = json.get("error").and_then(|e| e.as_str()) {
        anyhow::bail!("pull failed (HTTP {}): {error}", status.as_u16());
    }
    let report: vcnode::pull::PullReport = serde_json::from_value(json)
        .with_context(|| format!("POST {url}: HTTP {status}, unexpected answer"))?;
    println!(
        "source {}, study {}: {} instance(s) found, {} selected, {} already present, {} retrieved, {} stored, {} failed; {} job(s) queued",
        report.source,
        report.study,
        report.found,
        report.selected,
        report.already_present,
        report.retrieved,
        report.stored,
        report.failed.len(),
        report.jobs_queued
    );
    for f in &report.failed {
        println!("FAILED {}: {}", f.sop_instance_uid, f.reason);
    }
    anyhow::ensure!(
        status.is_success() && report.failed.is_empty(),
        "{} of {} selected instance(s) failed",
        report.failed.len(),
        report.selected
    );
    Ok(())
}
