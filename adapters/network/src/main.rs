//! `busbar-network`: see the crate's docs and README's "Cluster network".

use clap::Parser;
use tokio_util::sync::CancellationToken;

fn main() {
    let args = busbar_network::run::Args::parse();
    busbar_runtime::logging::init(&args.log_level, busbar_runtime::logging::LogFormat::Text);
    let rt = busbar_runtime::runtime(2);
    let code = rt.block_on(async {
        let shutdown = CancellationToken::new();
        let stop = shutdown.clone();
        tokio::spawn(async move {
            busbar_runtime::signal::shutdown_requested().await;
            stop.cancel();
        });
        match busbar_network::run::run(args, shutdown).await {
            Ok(()) => 0,
            Err(e) => {
                tracing::error!("{e:#}");
                eprintln!("busbar-network: {e:#}");
                1
            }
        }
    });
    std::process::exit(code);
}
