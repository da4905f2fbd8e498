//! `busbar-agent`: flags -> config -> bind -> serve until SIGINT/SIGTERM -> drain.

use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use tokio_util::sync::CancellationToken;
use tracing::{error, info};

use busbar_agent::chains::source::{self, LiveChains};
use busbar_agent::config::Cli;
use busbar_agent::docker::EngineClient;
use busbar_agent::{front, proxy::Proxy};

/// sysexits' EX_USAGE: bad flags or configuration.
const EX_USAGE: u8 = 64;

fn main() -> ExitCode {
    let config = match Cli::parse().into_config() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("busbar-agent: {e}");
            return ExitCode::from(EX_USAGE);
        }
    };
    busbar_agent::logging::init(&config.log_level);
    let chains = match &config.chains_file {
        Some(path) => match source::load_file(path) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("busbar-agent: invalid adapter config:\n{e}");
                return ExitCode::from(EX_USAGE);
            }
        },
        None => LiveChains::none(),
    };
    let runtime = tokio::runtime::Runtime::new().expect("the tokio runtime starts");
    runtime.block_on(async move {
        let mut listeners = vec![];
        for addr in &config.listen {
            match addr.bind().await {
                Ok(l) => listeners.push(l),
                Err(e) => {
                    error!("{e}");
                    return ExitCode::FAILURE;
                }
            }
        }
        let shutdown = CancellationToken::new();
        let (chains_tx, chains_rx) = tokio::sync::watch::channel(chains);
        if let Some(path) = &config.chains_file {
            info!(config = %path.display(), "adapter chains loaded; watching for changes");
            tokio::spawn(source::watch_file(path.clone(), chains_tx, shutdown.clone()));
        }
        let engine = EngineClient::new(config.engine.clone(), config.engine_options.clone());
        let proxy = Arc::new(Proxy::with_chains(engine, chains_rx));
        let mut servers = tokio::task::JoinSet::new();
        for l in listeners {
            servers.spawn(front::serve(l, proxy.clone(), shutdown.clone(), config.shutdown_grace));
        }
        busbar_agent::signal::shutdown_requested().await;
        info!("shutting down");
        shutdown.cancel();
        while servers.join_next().await.is_some() {}
        ExitCode::SUCCESS
    })
}
