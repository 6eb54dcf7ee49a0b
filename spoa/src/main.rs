//! The `portcullis-spoa` command: `serve` runs the agent; `haproxy-config` prints HAProxy's side.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand};
use portcullis_spoa::haproxy_config::{self, Layout, Untagged};
use portcullis_spoa::plan::Plan;
use portcullis_spoa::server::{self, ServerSettings};
use portcullis_spoa::upstreams::{CalloutSettings, Client, Clusters};
use portcullis_spoa::workers::{AgentStats, VmPool, VmSettings};
use proxy_wasm_harness::{LogLevel, Plugin, SharedState};

#[derive(Parser)]
#[command(
    name = "portcullis-spoa",
    version,
    about = "HAProxy SPOE agent running the Portcullis proxy-wasm plugin"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the agent.
    Serve(Serve),
    /// Write the haproxy.cfg and the SPOE file for a policy.
    HaproxyConfig(HaproxyConfig),
}

#[derive(clap::Args)]
struct Serve {
    /// The plugin (.wasm).
    #[arg(long)]
    wasm: PathBuf,
    /// The plugin configuration (the policy, JSON).
    #[arg(long)]
    policy: PathBuf,
    /// Where HAProxy connects (port 0: any free port, printed at start).
    #[arg(long, default_value = "127.0.0.1:12345")]
    listen: String,
    /// The admin endpoint (/metrics, /ready); off when not given.
    #[arg(long)]
    admin: Option<String>,
    /// Plugin VMs, one thread each (Envoy's --concurrency).
    #[arg(long, default_value_t = 2)]
    workers: usize,
    /// A callout cluster: NAME=http://host:port or NAME=https://host:port (repeatable).
    #[arg(long = "cluster", value_name = "NAME=URL")]
    clusters: Vec<String>,
    /// PEM file of CA certificates for https clusters (default: the system's roots).
    #[arg(long)]
    ca_file: Option<String>,
    /// Callout connect timeout, ms.
    #[arg(long, default_value_t = 2000)]
    connect_timeout_ms: u64,
    /// Largest callout response body, bytes.
    #[arg(long, default_value_t = 1 << 20)]
    max_response_bytes: u64,
    /// Largest SPOP frame (HAProxy's tune.bufsize - 4).
    #[arg(long, default_value_t = 16_380)]
    max_frame_size: u32,
    /// Wall time one plugin callback may run, ms, before it is stopped and its VM replaced.
    #[arg(long, default_value_t = 1000)]
    callback_budget_ms: u64,
    /// The plugin's log level: trace, debug, info, warn, error, critical.
    #[arg(long, default_value = "info")]
    log_level: String,
    /// The plugin's name and root id (Envoy's `name` and `root_id`).
    #[arg(long, default_value = "portcullis")]
    root_id: String,
}

#[derive(clap::Args)]
struct HaproxyConfig {
    /// The policy (JSON), as given to `serve`.
    #[arg(long)]
    policy: PathBuf,
    /// Where the agent listens (repeatable: one server line each).
    #[arg(long = "agent", default_value = "127.0.0.1:12345")]
    agents: Vec<String>,
    /// The frontend's bind address.
    #[arg(long, default_value = "127.0.0.1:8080")]
    bind: String,
    /// The application server.
    #[arg(long, default_value = "127.0.0.1:9000")]
    upstream: String,
    /// Directory to write haproxy.cfg and portcullis-spoe.conf into.
    #[arg(long)]
    out: PathBuf,
    /// The path HAProxy will read the SPOE file from (default: the one written in --out).
    #[arg(long)]
    spoe_path: Option<String>,
    /// HAProxy's nbthread.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Extra time HAProxy waits for the agent beyond the plugin's hold budget, ms.
    #[arg(long, default_value_t = 500)]
    processing_margin_ms: u64,
    /// The backend of a route tag, TAG=HOST:PORT (repeatable: one per tag the policy's
    /// "routing" can give).
    #[arg(long = "route", value_parser = route_arg)]
    routes: Vec<(String, String)>,
    /// Where requests without a route tag go when the policy routes: "refuse" (403) or
    /// "upstream" (the --upstream server).
    #[arg(long, default_value = "refuse", value_parser = untagged_arg)]
    untagged: Untagged,
}

fn route_arg(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((tag, address)) if !tag.is_empty() && !address.is_empty() => {
            Ok((tag.to_string(), address.to_string()))
        }
        _ => Err(format!("`{s}` is not TAG=HOST:PORT")),
    }
}

fn untagged_arg(s: &str) -> Result<Untagged, String> {
    match s {
        "refuse" => Ok(Untagged::Refuse),
        "upstream" => Ok(Untagged::Upstream),
        other => Err(format!("`{other}` is neither refuse nor upstream")),
    }
}

fn level(name: &str) -> Result<LogLevel, String> {
    Ok(match name {
        "trace" => LogLevel::Trace,
        "debug" => LogLevel::Debug,
        "info" => LogLevel::Info,
        "warn" | "warning" => LogLevel::Warn,
        "error" => LogLevel::Error,
        "critical" => LogLevel::Critical,
        other => {
            return Err(format!(
                "unknown log level `{other}` (trace, debug, info, warn, error, critical)"
            ))
        }
    })
}

fn plan_of(policy: &PathBuf) -> Result<(Vec<u8>, Plan), String> {
    let bytes =
        std::fs::read(policy).map_err(|e| format!("cannot read {}: {e}", policy.display()))?;
    let config = portcullis::config::parse(&bytes)
        .map_err(|e| format!("{}: invalid policy: {e}", policy.display()))?;
    Ok((bytes, Plan::for_policy(&config)))
}

fn serve(args: Serve) -> Result<(), String> {
    let (policy, plan) = plan_of(&args.policy)?;
    let clusters =
        Clusters::parse(args.clusters.iter().map(String::as_str)).map_err(|e| e.to_string())?;
    for name in &plan.clusters {
        if clusters.get(name).is_none() {
            return Err(format!(
                "the policy calls out through cluster `{name}` (keys or sign-in): give it with --cluster {name}=https://idp.example"
            ));
        }
    }
    let client = Client::new(
        clusters,
        CalloutSettings {
            connect_timeout: Duration::from_millis(args.connect_timeout_ms),
            max_response_bytes: args.max_response_bytes,
            ca_file: args.ca_file.clone(),
            ..CalloutSettings::default()
        },
    )
    .map_err(|e| e.to_string())?;
    let plugin = Plugin::from_file(&args.wasm).map_err(|e| e.to_string())?;
    let settings = VmSettings {
        plugin,
        plugin_config: policy,
        plugin_name: args.root_id.clone(),
        root_id: args.root_id.clone(),
        log_level: level(&args.log_level)?,
        hold_limit: Duration::from_millis(plan.hold_ms),
        callback_budget: Duration::from_millis(args.callback_budget_ms),
    };
    let shared = SharedState::new(&args.root_id);
    let stats = Arc::new(AgentStats::default());
    let plan = Arc::new(plan);
    let listener = TcpListener::bind(&args.listen)
        .map_err(|e| format!("cannot listen on {}: {e}", args.listen))?;
    let admin = match &args.admin {
        Some(a) => Some(TcpListener::bind(a).map_err(|e| format!("cannot listen on {a}: {e}"))?),
        None => None,
    };
    let pool = VmPool::start(
        args.workers,
        settings,
        plan,
        client,
        shared.clone(),
        stats.clone(),
    )
    .map_err(|e| format!("the plugin did not start: {e}"))?;
    let address = listener.local_addr().map_err(|e| e.to_string())?;
    let mut ready = format!("portcullis-spoa: listening on {address}");
    if let Some(a) = &admin {
        let admin_address = a.local_addr().map_err(|e| e.to_string())?;
        ready.push_str(&format!(" admin {admin_address}"));
        let a = a.try_clone().map_err(|e| e.to_string())?;
        std::thread::spawn(move || portcullis_spoa::admin::serve(a, shared, stats));
    }
    println!("{ready} workers {}", args.workers.max(1));
    server::serve(
        listener,
        Arc::new(pool),
        ServerSettings {
            max_frame_size: args.max_frame_size,
            ..ServerSettings::default()
        },
    );
    Err("the listener failed".into())
}

fn haproxy_config(args: HaproxyConfig) -> Result<(), String> {
    let (_, plan) = plan_of(&args.policy)?;
    std::fs::create_dir_all(&args.out)
        .map_err(|e| format!("cannot create {}: {e}", args.out.display()))?;
    let spoe_file = args.out.join("portcullis-spoe.conf");
    let spoe_path = match args.spoe_path {
        Some(p) => p,
        None => std::path::absolute(&spoe_file)
            .map_err(|e| e.to_string())?
            .display()
            .to_string(),
    };
    let layout = Layout {
        bind: args.bind,
        upstream: args.upstream,
        agents: args.agents,
        spoe_path,
        threads: args.threads,
        processing_margin_ms: args.processing_margin_ms,
        routes: args.routes,
        untagged: args.untagged,
    };
    haproxy_config::check_layout(&plan, &layout).map_err(|e| e.to_string())?;
    let cfg = args.out.join("haproxy.cfg");
    for (path, text) in [
        (&cfg, haproxy_config::haproxy_cfg(&plan, &layout)),
        (&spoe_file, haproxy_config::spoe_file(&plan, &layout)),
    ] {
        std::fs::write(path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    println!("wrote {} and {}", cfg.display(), spoe_file.display());
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(a) => serve(a),
        Command::HaproxyConfig(a) => haproxy_config(a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("portcullis-spoa: error: {e}");
            ExitCode::FAILURE
        }
    }
}
