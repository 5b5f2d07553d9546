//! `loglake`: the one binary. It parses flags, loads the configuration, installs the tracing
//! subscriber and signal handlers, and hands over to the library crates, which do the work.
//! It must never hold business logic of its own.

mod config;
mod output;

use std::io::Read as _;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use tokio_util::sync::CancellationToken;

use crate::config::Override;

// The process's allocator (jemalloc): a crate of its own so that it is built optimised.
use loglake_allocator as _;

/// delta-rs and its kernel narrate every snapshot at INFO: keep them to warnings by default.
const DEFAULT_LOG: &str = "info,deltalake=warn,deltalake_core=warn,deltalake_aws=warn,buoyant_kernel=warn,delta_kernel=warn";

#[derive(Parser, Debug)]
#[command(
    name = "loglake",
    version,
    about = "Kafka logs -> Delta tables on object storage -> SQL"
)]
struct Cli {
    /// Configuration file (TOML). Default: $LOGLAKE_CONFIG, else ./loglake.toml if present.
    #[arg(long, short, global = true)]
    config: Option<PathBuf>,
    /// Overrides lake.url.
    #[arg(long, global = true)]
    lake_url: Option<String>,
    /// Log filter (tracing EnvFilter syntax), e.g. "info" or "loglake_ingest=debug".
    #[arg(long, env = "LOGLAKE_LOG", default_value = DEFAULT_LOG, global = true)]
    log: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run an ingest worker: Kafka topics -> hourly Parquet in Delta tables.
    Ingest {
        /// Overrides kafka.brokers.
        #[arg(long)]
        brokers: Option<String>,
        /// Overrides kafka.group_id.
        #[arg(long)]
        group_id: Option<String>,
        /// Overrides kafka.topics (repeat for several).
        #[arg(long = "topic")]
        topics: Vec<String>,
        /// Overrides ingest.metrics_listen.
        #[arg(long)]
        metrics_listen: Option<String>,
    },
    /// Compact the lake: merge the small files of closed hours, apply retention, checkpoint
    /// and clean Delta logs, vacuum. One pass by default (for cron); --interval keeps going.
    Compact {
        /// Run a pass every INTERVAL ("10m") until SIGTERM, with /metrics and /healthz on
        /// compactor.metrics_listen.
        #[arg(long, value_parser = humantime::parse_duration)]
        interval: Option<std::time::Duration>,
        /// Only this table (its directory or SQL name).
        #[arg(long)]
        table: Option<String>,
        /// Print the plan (merges, retention, vacuum) and change nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Serve SQL over HTTP (scripts, dashboards, BI tools) until SIGTERM. See [serve].
    Serve {
        /// Overrides serve.http_listen.
        #[arg(long)]
        http_listen: Option<String>,
    },
    /// Run one SQL query over the lake and print the result as it arrives.
    Query {
        /// Output format: an aligned table on a terminal, else ndjson.
        #[arg(long, short, value_enum)]
        format: Option<Format>,
        /// Write the answer to FILE instead of standard output.
        #[arg(long, short)]
        output: Option<PathBuf>,
        /// The SQL statement; "-" or none reads it from standard input.
        sql: Option<String>,
    },
    /// Tail log files on this host into Kafka until SIGTERM. See [agent].
    Agent {
        /// Overrides agent.state_dir.
        #[arg(long)]
        state_dir: Option<PathBuf>,
    },
    /// List the lake's tables and their SQL names.
    Tables,
    /// Check that the lake's store enforces put-if-absent, as concurrent Delta commits need.
    CheckStore,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Table,
    Csv,
    Json,
    Ndjson,
    Arrow,
    Parquet,
}

fn init_tracing(filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
}

/// Cancels the token on the first SIGINT/SIGTERM; a second one exits at once.
fn install_signals(token: CancellationToken) -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::spawn(async move {
        for n in 0.. {
            tokio::select! {
                _ = term.recv() => {},
                _ = int.recv() => {},
            }
            if n == 0 {
                tracing::info!("signal received: finishing (send again to exit at once)");
                token.cancel();
            } else {
                tracing::warn!("second signal: exiting without flushing");
                std::process::exit(130);
            }
        }
    });
    Ok(())
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let mut flags = Vec::new();
    if let Some(url) = &cli.lake_url {
        flags.push(Override::str("lake.url", url));
    }
    if let Command::Ingest {
        brokers,
        group_id,
        topics,
        metrics_listen,
    } = &cli.command
    {
        if let Some(b) = brokers {
            flags.push(Override::str("kafka.brokers", b));
        }
        if let Some(g) = group_id {
            flags.push(Override::str("kafka.group_id", g));
        }
        if !topics.is_empty() {
            flags.push(Override {
                path: "kafka.topics".into(),
                value: toml::Value::Array(
                    topics.iter().cloned().map(toml::Value::String).collect(),
                ),
            });
        }
        if let Some(m) = metrics_listen {
            flags.push(Override::str("ingest.metrics_listen", m));
        }
    }
    if let Command::Serve {
        http_listen: Some(addr),
    } = &cli.command
    {
        flags.push(Override::str("serve.http_listen", addr));
    }
    if let Command::Agent {
        state_dir: Some(dir),
    } = &cli.command
    {
        flags.push(Override::str(
            "agent.state_dir",
            dir.to_string_lossy().into_owned(),
        ));
    }
    let path = config::resolve_path(cli.config.clone());
    let config = config::load(path.as_deref(), std::env::vars(), &flags)?;
    if let Command::Agent { .. } = cli.command {
        let kafka = config
            .kafka
            .clone()
            .context("invalid configuration: [kafka] is required for the agent (brokers)")?;
        let shutdown = CancellationToken::new();
        install_signals(shutdown.clone())?;
        loglake_agent::run(kafka, config.agent.clone(), shutdown).await?;
        return Ok(());
    }
    let lake_config = config.lake.clone().context(
        "invalid configuration: lake.url is required (\"s3://bucket/prefix\" or \"file:///dir\")",
    )?;
    let lake = loglake_lake::Lake::connect(&lake_config).await?;

    match cli.command {
        Command::Ingest { .. } => {
            let kafka = config.kafka.clone().context(
                "invalid configuration: [kafka] is required for ingest (brokers, topics)",
            )?;
            kafka.validate()?;
            let schemas = loglake_schemas::SchemaSet::load_dir(&config.ingest.schemas_dir)?;
            let shutdown = CancellationToken::new();
            install_signals(shutdown.clone())?;
            loglake_ingest::run(kafka, config.ingest.clone(), lake, schemas, shutdown).await?;
        }
        Command::Compact {
            interval,
            table,
            dry_run,
        } => {
            let progress = std::io::IsTerminal::is_terminal(&std::io::stderr())
                .then_some(output::compaction_progress as fn(&loglake_compactor::Progress));
            let options = loglake_compactor::PassOptions { dry_run, progress };
            match interval {
                None => {
                    let report = loglake_compactor::run_pass(
                        &lake,
                        &config.compactor,
                        options,
                        table.as_deref(),
                    )
                    .await?;
                    if progress.is_some() {
                        output::end_progress();
                    }
                    tracing::info!(summary = %report, "pass done");
                    if !dry_run {
                        output::write_stdout(format!("{report}\n").as_bytes())?;
                    }
                }
                Some(interval) => {
                    anyhow::ensure!(
                        table.is_none() && !dry_run,
                        "--interval runs full passes: drop --table and --dry-run"
                    );
                    let shutdown = CancellationToken::new();
                    install_signals(shutdown.clone())?;
                    loglake_compactor::serve(&lake, &config.compactor, interval, shutdown).await?;
                }
            }
        }
        Command::Serve { .. } => {
            let shutdown = CancellationToken::new();
            install_signals(shutdown.clone())?;
            loglake_query::serve(lake, config.serve.clone(), shutdown, |_| {}).await?;
        }
        Command::Query {
            format,
            output: file,
            sql,
        } => {
            let sql = match sql {
                Some(s) if s != "-" => s,
                _ => {
                    let mut s = String::new();
                    std::io::stdin().read_to_string(&mut s)?;
                    s
                }
            };
            let limits = loglake_query::Limits {
                max_result_rows: None,
                ..config.serve.limits()
            };
            let engine = loglake_query::QueryEngine::new(lake, limits)?;
            output::run_query(&engine, &sql, format, file.as_deref()).await?;
        }
        Command::Tables => {
            let engine = loglake_query::QueryEngine::new(lake, loglake_query::Limits::default())?;
            let mut out = String::new();
            for t in engine.tables().await? {
                out.push_str(&format!("{}\t{}\n", t.sql_name, t.url));
            }
            output::write_stdout(out.as_bytes())?;
        }
        Command::Agent { .. } => unreachable!("handled before the lake is opened"),
        Command::CheckStore => {
            lake.check_store().await?;
            output::write_stdout(
                format!("ok: {} enforces put-if-absent\n", lake.root()).as_bytes(),
            )?;
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing(&cli.log);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: could not start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
