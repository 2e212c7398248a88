//! The `csmh-proxy` command line: parses arguments and calls the library.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use csmh_proxy::config::watch::Watch;
use csmh_proxy::sandbox::SandboxArgs;

/// A MySQL-protocol proxy that moves Open edX's student-module history to its extended table on the wire.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// Configuration file (for `serve` when no subcommand is given).
    #[arg(long, short, global = true, default_value = "proxy.toml", env = "CSMH_PROXY_CONFIG")]
    config: PathBuf,
}

#[derive(Subcommand)]
enum Command {
    /// Accept MySQL clients and relay them to the backends (the default); the configuration file is reloaded
    /// when it changes and on SIGHUP.
    Serve(ServeArgs),
    /// Validate the configuration and print the routing it implies.
    CheckConfig,
    /// Start local MariaDB servers with the edX tables and serve the proxy in front of them.
    Sandbox(SandboxArgs),
    /// Print what the proxy would do with each statement (one per line) of FILE, or of standard input.
    Route {
        /// File of statements, one per line; standard input when absent.
        file: Option<PathBuf>,
    },
}

/// Options of `serve`.
#[derive(Args, Default)]
struct ServeArgs {
    /// Reload the configuration file on SIGHUP only, not when it changes.
    #[arg(long)]
    no_watch: bool,
}

impl ServeArgs {
    /// How the proxy follows the configuration file at `path`.
    fn watch(&self, path: PathBuf) -> Watch {
        if self.no_watch { Watch::sighup_only(path) } else { Watch::file(path) }
    }
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let cli = Cli::parse();
    let runtime = tokio::runtime::Runtime::new()?;
    match cli.command.unwrap_or_else(|| Command::Serve(ServeArgs::default())) {
        Command::Serve(args) => {
            let config = csmh_proxy::config::Config::load(&cli.config)?;
            runtime.block_on(csmh_proxy::server::serve(config, args.watch(cli.config)))
        }
        Command::CheckConfig => match csmh_proxy::config::check_file(&cli.config) {
            Ok(report) => {
                print!("{report}");
                Ok(())
            }
            Err(error) => {
                eprintln!("configuration refused: {error}");
                std::process::exit(1)
            }
        },
        Command::Sandbox(args) => runtime.block_on(csmh_proxy::sandbox::run(args)),
        Command::Route { file } => {
            let config = csmh_proxy::config::Config::load(&cli.config)?;
            let statements = match file {
                Some(path) => std::fs::read(path)?,
                None => std::io::Read::bytes(std::io::stdin()).collect::<Result<_, _>>()?,
            };
            print!("{}", csmh_proxy::routing::explain::explain_lines(config, &statements)?);
            Ok(())
        }
    }
}
