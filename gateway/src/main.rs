//! The `sluice` command.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use sluice::config::Config;

/// Sluice: a traffic-drain gateway for lossless releases on Kubernetes.
#[derive(Debug, Parser)]
#[command(
    name = "sluice",
    version,
    about,
    long_about = None,
    after_help = "Exit codes: 0 done; 1 failed (the gateway could not start, the demo failed, the conformance \
                  battery found failures, another API error); 2 a --wait ended before every pod reached the goal; \
                  3 it ended with a pod blocked; 4 denied (not authenticated or not allowed); 5 a precondition \
                  failed (stale UID or etag, or the pod's state does not allow it); 6 not found; 64 a bad command \
                  line, configuration or request; 69 the API is unavailable or rate limited (try again)."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    #[command(flatten)]
    connection: sluice::client::Connection,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the gateway (logs to stderr; colour only on a terminal).
    Run {
        /// The gateway's configuration (YAML).
        #[arg(long, value_name = "FILE")]
        config: String,
        /// How log lines are written.
        #[arg(long, value_enum, default_value_t = LogFormat::Text)]
        log_format: LogFormat,
    },
    /// Validate a configuration file and exit.
    CheckConfig {
        /// The configuration to check.
        file: String,
    },
    /// Print the TrafficBinding CustomResourceDefinition.
    Crd,
    /// Tools for adapters.
    Adapter {
        #[command(subcommand)]
        command: AdapterCommand,
    },
    /// A lossless rolling update on an embedded cluster, with its figures.
    Demo(sluice::demo::DemoArgs),
    #[command(flatten)]
    Api(sluice::client::ApiCommand),
}

#[derive(Debug, Subcommand)]
enum AdapterCommand {
    /// Run the adapter conformance battery against a plugin.
    Conformance(sluice::conformance_cmd::Args),
}

/// `EX_USAGE`: bad command line or configuration.
const EXIT_USAGE: u8 = 64;

/// How the gateway writes its log lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

fn init_tracing() {
    init_tracing_as(LogFormat::Text, None);
}

/// Logs to stderr, and spans to the OTLP collector when a tracer provider is given.
fn init_tracing_as(format: LogFormat, provider: Option<&opentelemetry_sdk::trace::SdkTracerProvider>) {
    use opentelemetry::trace::TracerProvider as _;
    use std::io::IsTerminal;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::Layer;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,kube=warn,hyper=warn"));
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        // Escape codes only where a person reads a terminal, never in a log file.
        .with_ansi(std::io::stderr().is_terminal());
    let fmt = match format {
        LogFormat::Text => fmt.boxed(),
        LogFormat::Json => fmt.json().with_current_span(true).with_span_list(false).boxed(),
    };
    // The log level (RUST_LOG) filters the log lines only; the exported spans are Sluice's
    // own, at info, whatever the log level.
    let otel = provider.map(|p| {
        tracing_opentelemetry::layer()
            .with_tracer(p.tracer("sluice"))
            .with_filter(tracing_subscriber::filter::Targets::new().with_target("sluice", tracing::Level::INFO))
    });
    tracing_subscriber::registry()
        .with(fmt.with_filter(filter))
        .with(otel)
        .init();
}

fn usage_error(msg: &str) -> ExitCode {
    eprintln!("sluice: {msg} (see sluice --help)");
    ExitCode::from(EXIT_USAGE)
}

fn load(path: &str) -> Result<Config, ExitCode> {
    Config::load(&PathBuf::from(path)).map_err(|e| {
        eprintln!("sluice: {e}");
        ExitCode::from(EXIT_USAGE)
    })
}

/// Waits for SIGTERM or SIGINT; SIGUSR1 pauses (no new drain or restore starts) and
/// SIGUSR2 resumes, meanwhile.
async fn wait_for_stop(gw: &sluice::gateway::Gateway) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int), Ok(mut usr1), Ok(mut usr2)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::user_defined1()),
        signal(SignalKind::user_defined2()),
    ) else {
        tracing::warn!("Cannot install signal handlers; stopping on Ctrl-C only.");
        let _ = tokio::signal::ctrl_c().await;
        return;
    };
    loop {
        tokio::select! {
            _ = term.recv() => { tracing::info!("SIGTERM."); return; }
            _ = int.recv() => { tracing::info!("SIGINT."); return; }
            _ = usr1.recv() => {
                if gw.engine.authority.set_paused(true) {
                    tracing::warn!("Paused (SIGUSR1): no new drain or restore starts; those under way finish.");
                }
            }
            _ = usr2.recv() => {
                if gw.engine.authority.set_paused(false) {
                    tracing::warn!("Resumed (SIGUSR2).");
                    gw.engine.kick_all();
                }
            }
        }
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let usage = e.use_stderr();
            let _ = e.print();
            // --help and --version are answers, not errors.
            return if usage {
                ExitCode::from(EXIT_USAGE)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    match cli.command {
        Command::Crd => {
            print!("{}", sluice::binding::crd_yaml());
            ExitCode::SUCCESS
        }
        Command::CheckConfig { file } => match load(&file) {
            Ok(_) => {
                println!("{file}: ok");
                ExitCode::SUCCESS
            }
            Err(code) => code,
        },
        Command::Run { config, log_format } => {
            let cfg = match load(&config) {
                Ok(c) => c,
                Err(code) => return code,
            };
            let provider = match sluice::telemetry::provider(&cfg.telemetry) {
                Ok(p) => p,
                Err(e) => {
                    eprintln!("sluice: telemetry: {e:#}");
                    return ExitCode::FAILURE;
                }
            };
            init_tracing_as(log_format, provider.as_ref());
            let shutdown_seconds = cfg.engine.shutdown_seconds;
            let gw = match sluice::gateway::Gateway::start(cfg).await {
                Ok(g) => g,
                Err(e) => {
                    eprintln!("sluice: {e:#}");
                    return ExitCode::FAILURE;
                }
            };
            tracing::info!(health = %gw.health_addr, metrics = ?gw.metrics_addr, "Sluice gateway started.");
            let limit = std::time::Duration::from_secs(shutdown_seconds);
            wait_for_stop(&gw).await;
            gw.shutdown(limit).await;
            if let Some(p) = provider {
                // Flush the spans not exported yet.
                if let Err(e) = p.shutdown() {
                    tracing::warn!(error = %e, "Could not flush the last spans.");
                }
            }
            ExitCode::SUCCESS
        }
        Command::Adapter {
            command: AdapterCommand::Conformance(args),
        } => match sluice::conformance_cmd::run(args).await {
            Ok(report) => {
                println!("{report}");
                if report.passed() {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::FAILURE
                }
            }
            Err(e) => usage_error(&e),
        },
        Command::Api(cmd) => ExitCode::from(sluice::client::run(cli.connection, cmd).await),
        Command::Demo(args) => {
            if std::env::var_os("RUST_LOG").is_some() {
                init_tracing();
            }
            let compare = !args.no_sluice && args.sleep.is_none() && !args.no_compare;
            let opts: sluice::demo::DemoOptions = args.into();
            let with = match sluice::demo::run(opts.clone()).await {
                Ok(summary) => summary,
                Err(e) => {
                    eprintln!("sluice demo: {e:#}");
                    return ExitCode::FAILURE;
                }
            };
            println!("{}", with.line());
            if compare {
                // The same rollout without Sluice, so the difference is on one screen.
                if opts.verbose {
                    println!("demo: the same rollout without Sluice (each pod stops as its update starts):");
                }
                let without = sluice::demo::DemoOptions {
                    sluice: false,
                    sleep: None,
                    ..opts
                };
                match sluice::demo::run(without).await {
                    Ok(summary) => println!("without Sluice: {}", summary.line()),
                    Err(e) => {
                        eprintln!("sluice demo (without Sluice): {e:#}");
                        return ExitCode::FAILURE;
                    }
                }
            }
            ExitCode::SUCCESS
        }
    }
}
