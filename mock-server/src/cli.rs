//! Command line of `mock-server`, folded into a validated [`Config`], and the serving loop of the binary.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Parser;
use tokenperf_core::tokenizer::TokenCounter;
use tokio::net::TcpListener;

use crate::{Config, State};

/// An OpenAI-compatible streaming server that simulates an LLM with precise token timing.
#[derive(Debug, Clone, Parser)]
#[command(name = "mock-server", version)]
pub struct Args {
    /// Address to bind. `localhost` binds both 127.0.0.1 and ::1, so clients reach it whichever one
    /// `localhost` resolves to.
    #[arg(long, default_value = "localhost")]
    pub host: String,
    /// Port to listen on (5543 is the DeepSparse server's, so the seed's OPENAI_API_BASE works as is).
    /// 0 lets the OS choose; the chosen URL is printed.
    #[arg(long, default_value_t = 5543)]
    pub port: u16,
    /// Time to first token, in milliseconds.
    #[arg(long, default_value_t = 50.0, allow_negative_numbers = true)]
    pub ttft_ms: f64,
    /// Time between tokens, in milliseconds.
    #[arg(long, default_value_t = 5.0, allow_negative_numbers = true)]
    pub itl_ms: f64,
    /// Output tokens when a request gives no `max_tokens`.
    #[arg(long, default_value_t = 16)]
    pub default_max_tokens: u64,
    /// Model name to serve (repeatable). Without it, any model name is accepted.
    #[arg(long = "model")]
    pub models: Vec<String>,
    /// A tokenizer.json (or folder holding one) to count tokens with; default: the project's own.
    #[arg(long)]
    pub tokenizer: Option<PathBuf>,
    /// Seed for the output text.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Request body limit, in bytes.
    #[arg(long, default_value_t = 4 << 20)]
    pub body_limit: usize,
}

fn millis(name: &str, v: f64) -> anyhow::Result<Duration> {
    if !v.is_finite() || v < 0.0 {
        bail!("--{name} must be a non-negative number of milliseconds, got {v}");
    }
    Ok(Duration::from_secs_f64(v / 1e3))
}

impl Args {
    /// Validates the flags into a [`Config`].
    pub fn config(&self) -> anyhow::Result<Config> {
        Ok(Config {
            ttft: millis("ttft-ms", self.ttft_ms)?,
            itl: millis("itl-ms", self.itl_ms)?,
            default_max_tokens: self.default_max_tokens,
            models: self.models.clone(),
            body_limit: self.body_limit,
            seed: self.seed,
        })
    }

    fn addrs(&self) -> anyhow::Result<Vec<IpAddr>> {
        if self.host == "localhost" {
            return Ok(vec![
                IpAddr::V4(Ipv4Addr::LOCALHOST),
                IpAddr::V6(Ipv6Addr::LOCALHOST),
            ]);
        }
        let ip: IpAddr = self
            .host
            .trim_matches(['[', ']'])
            .parse()
            .with_context(|| format!("--host '{}' is not an IP address or localhost", self.host))?;
        Ok(vec![ip])
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        if let Ok(mut s) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        {
            s.recv().await;
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
}

/// Runs the server until SIGINT/SIGTERM.
pub async fn run(args: Args) -> anyhow::Result<()> {
    let config = args.config()?;
    let tokenizer = match &args.tokenizer {
        Some(p) => TokenCounter::from_path(p)?,
        None => TokenCounter::project(),
    };
    let state = State::new(config, tokenizer)?;
    let addrs = args.addrs()?;
    let mut port = args.port;
    let mut listeners = Vec::new();
    for (i, ip) in addrs.iter().enumerate() {
        match TcpListener::bind(SocketAddr::new(*ip, port)).await {
            Ok(l) => {
                port = l.local_addr()?.port();
                listeners.push(l);
            }
            // ::1 may be missing (IPv6 disabled); the IPv4 listener is enough then.
            Err(e) if i > 0 => eprintln!("mock-server: not listening on {ip}: {e}"),
            Err(e) => return Err(e).with_context(|| format!("binding {ip}:{port}")),
        }
    }
    let (stop_tx, _) = tokio::sync::broadcast::channel::<()>(1);
    let mut tasks = Vec::new();
    for l in listeners {
        let mut rx = stop_tx.subscribe();
        tasks.push(tokio::spawn(crate::serve(l, state.clone(), async move {
            let _ = rx.recv().await;
        })));
    }
    let host = if args.host == "localhost" {
        "localhost".to_string()
    } else {
        args.host.clone()
    };
    println!("mock-server listening on http://{host}:{port}/v1");
    shutdown_signal().await;
    let _ = stop_tx.send(());
    // Streams get a grace period to finish, then the process exits regardless.
    let grace = tokio::time::sleep(Duration::from_secs(5));
    tokio::pin!(grace);
    for t in tasks {
        tokio::select! {
            r = t => { r.context("server task panicked")??; }
            _ = &mut grace => break,
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Args::command().debug_assert();
    }

    #[test]
    fn simplest_use_parses() {
        let a = Args::parse_from([
            "mock-server",
            "--port",
            "8000",
            "--ttft-ms",
            "50",
            "--itl-ms",
            "5",
        ]);
        let c = a.config().unwrap();
        assert_eq!(
            (a.port, c.ttft, c.itl),
            (8000, Duration::from_millis(50), Duration::from_millis(5))
        );
        assert_eq!(Args::parse_from(["mock-server"]).port, 5543);
        let bad = Args::parse_from(["mock-server", "--itl-ms", "-1"])
            .config()
            .unwrap_err();
        assert!(bad.to_string().contains("--itl-ms"), "{bad}");
    }
}
