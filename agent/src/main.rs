//! `busbar-agent`: flags -> config -> bind -> serve until SIGINT/SIGTERM -> drain.

use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use tokio_util::sync::CancellationToken;
use tracing::error;

use busbar_agent::config::Cli;
use busbar_agent::run;
use busbar_runtime::EX_USAGE;

fn main() -> ExitCode {
    if let Some(code) = busbar_runtime::manual::generate_if_asked::<Cli>() {
        return code;
    }
    let config = match Cli::parse().into_config() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("busbar-agent: {e}");
            return ExitCode::from(EX_USAGE);
        }
    };
    if let Err(e) = busbar_runtime::logging::init_reloadable(
        &config.log_level,
        config.log_level_file.as_deref(),
        config.log_format,
    ) {
        eprintln!("busbar-agent: --log-level-file: {e}");
        return ExitCode::from(EX_USAGE);
    }
    let chains = match run::initial_chains(&config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("busbar-agent: invalid adapter config:\n{e}");
            return ExitCode::from(EX_USAGE);
        }
    };
    let tls = match run::client_tls(&config) {
        Ok(tls) => tls,
        Err(e) => {
            eprintln!("busbar-agent: --tls-listen: {e}");
            return ExitCode::from(EX_USAGE);
        }
    };
    let runtime = busbar_runtime::runtime(config.threads);
    runtime.block_on(async move {
        let listeners = match run::bind_all(&config, tls.as_ref()).await {
            Ok(l) => l,
            Err(e) => {
                error!("{e}");
                return ExitCode::FAILURE;
            }
        };
        let spans = match run::start_spans(&config, "busbar-agent") {
            Ok(s) => s,
            Err(e) => {
                error!("--otlp-endpoint: {e}");
                return ExitCode::from(EX_USAGE);
            }
        };
        let shutdown = CancellationToken::new();
        let mut servers = tokio::task::JoinSet::new();
        #[cfg(feature = "cluster")]
        let started = busbar_agent::cluster::start(&config, chains, &shutdown, &mut servers).await;
        #[cfg(not(feature = "cluster"))]
        let started = Ok::<_, String>(run::local_proxy(&config, chains, &shutdown));
        let proxy = match started {
            Ok(proxy) => proxy,
            Err(e) => {
                error!("{e}");
                return ExitCode::from(EX_USAGE);
            }
        };
        let readiness = Arc::new(run::AgentReadiness {
            engine: proxy.engine().clone(),
        });
        if let Err(e) =
            run::serve_metrics(&config, tls.as_ref(), readiness, &shutdown, &mut servers).await
        {
            error!("--metrics-listen: {e}");
            return ExitCode::FAILURE;
        }
        tokio::spawn(run::check_engine(proxy.engine().clone()));
        run::serve_until_signal(listeners, proxy, &config, shutdown, servers).await;
        spans.stop().await;
        ExitCode::SUCCESS
    })
}
