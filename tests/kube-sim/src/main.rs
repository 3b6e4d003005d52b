//! `kube-sim`: runs one or more simulated clusters and writes a kubeconfig for them.
//!
//! ```text
//! kube-sim [--clusters east,west] [--kubeconfig PATH] [--port PORT] [--plain-http]
//!          [--token-file FILE] [--kubelet] [--history N]
//! ```

use std::path::PathBuf;
use std::process::ExitCode;

use kube_sim::{kubeconfig, Cluster, ClusterConfig, KubeletConfig};

const USAGE: &str = "usage: kube-sim [--clusters NAME[,NAME...]] [--kubeconfig PATH] [--port PORT] \
[--plain-http] [--token-file FILE] [--kubelet] [--history N]";

struct Args {
    clusters: Vec<String>,
    kubeconfig: PathBuf,
    port: u16,
    tls: bool,
    token_file: Option<PathBuf>,
    kubelet: bool,
    history: usize,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        clusters: vec!["kube-sim".into()],
        kubeconfig: PathBuf::from("kube-sim.kubeconfig"),
        port: 0,
        tls: true,
        token_file: None,
        kubelet: false,
        history: 10_000,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = |name: &str| it.next().ok_or_else(|| format!("{name} needs a value\n{USAGE}"));
        match arg.as_str() {
            "--clusters" => {
                a.clusters = value("--clusters")?
                    .split(',')
                    .map(String::from)
                    .filter(|s| !s.is_empty())
                    .collect()
            }
            "--kubeconfig" => a.kubeconfig = value("--kubeconfig")?.into(),
            "--port" => a.port = value("--port")?.parse().map_err(|e| format!("--port: {e}"))?,
            "--plain-http" => a.tls = false,
            "--token-file" => a.token_file = Some(value("--token-file")?.into()),
            "--kubelet" => a.kubelet = true,
            "--history" => a.history = value("--history")?.parse().map_err(|e| format!("--history: {e}"))?,
            "-h" | "--help" => return Err(USAGE.into()),
            other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
        }
    }
    if a.clusters.is_empty() {
        return Err(format!("--clusters needs at least one name\n{USAGE}"));
    }
    Ok(a)
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .init();
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(64);
        }
    };
    let mut clusters = Vec::new();
    for (i, name) in args.clusters.iter().enumerate() {
        let mut cfg = ClusterConfig::new(name);
        cfg.tls = args.tls;
        cfg.history = args.history;
        if args.port != 0 {
            cfg.addr = format!("127.0.0.1:{}", args.port + i as u16)
                .parse()
                .expect("valid address");
        }
        if let Some(f) = &args.token_file {
            cfg = match cfg.token_file(f) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("kube-sim: {e:#}");
                    return ExitCode::from(64);
                }
            };
        }
        if args.kubelet {
            cfg.kubelet = Some(KubeletConfig::default());
        }
        match Cluster::start(cfg).await {
            Ok(c) => {
                println!("cluster {} serving at {}", c.name(), c.url());
                clusters.push(c);
            }
            Err(e) => {
                eprintln!("kube-sim: starting cluster {name}: {e:#}");
                return ExitCode::FAILURE;
            }
        }
    }
    let refs: Vec<&Cluster> = clusters.iter().collect();
    if let Err(e) = std::fs::write(&args.kubeconfig, kubeconfig(&refs, refs[0].name())) {
        eprintln!("kube-sim: writing {}: {e}", args.kubeconfig.display());
        return ExitCode::FAILURE;
    }
    println!("kubeconfig written to {}", args.kubeconfig.display());
    let _ = tokio::signal::ctrl_c().await;
    ExitCode::SUCCESS
}
