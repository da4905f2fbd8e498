//! `busbarctl`: the cluster operator's tool.
//!
//! Each group of subcommands lives in its own module of the gateway library (`certs`, ...) and
//! is one variant of [`Command`]; this file only parses, dispatches and picks the exit code.

use std::io;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use busbar_gateway::certs::{self, CertsCmd};

/// sysexits' EX_USAGE: bad flags or arguments.
const EX_USAGE: u8 = 64;

#[derive(Debug, Parser)]
#[command(name = "busbarctl", version, about = "Operate a busbar cluster")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// The cluster CA and the certificates of agents, gateways and operators.
    #[command(subcommand)]
    Certs(CertsCmd),
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // --help and --version also arrive here, and are not failures.
            let _ = e.print();
            return if e.use_stderr() { ExitCode::from(EX_USAGE) } else { ExitCode::SUCCESS };
        }
    };
    let result = match &cli.command {
        Command::Certs(cmd) => certs::run(cmd, &mut io::stdout().lock()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("busbarctl: {e}");
            if e.is_usage() {
                ExitCode::from(EX_USAGE)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}
