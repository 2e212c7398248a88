//! The `csmh-proxy` command line: parses arguments and calls the library.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use csmh_proxy::config::Config;
use csmh_proxy::migrate::MigrateError;
use csmh_proxy::migrate::copy::MigrateArgs;
use csmh_proxy::migrate::init::InitArgs;
use csmh_proxy::migrate::status::StatusArgs;
use csmh_proxy::migrate::truncate::TruncateArgs;
use csmh_proxy::migrate::verify::{VerifyArgs, VerifyReport};
use csmh_proxy::reload::Watch;
use csmh_proxy::sandbox::SandboxArgs;

/// A MySQL-protocol proxy that moves Open edX's student-module history to its extended table on the wire.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// The configuration file every subcommand reads (`serve` is the default when no subcommand is given).
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
    /// Ask every proxy (its admin listener's /config) which configuration and flags it runs, and say whether
    /// they agree. Exit status: 0 when every proxy answered and all run the same flags, 1 otherwise.
    Fleet(csmh_proxy::fleet::FleetArgs),
    /// Ask the running proxy's admin listener (`[admin] address` of the configuration) for a probe: exit 0 when it
    /// answers 200. For a container's exec health check: the image needs no shell or curl.
    Healthcheck {
        /// The probe: `livez` (the process serves) or `readyz` (it accepts clients and is not shutting down).
        #[arg(long, value_enum, default_value = "livez")]
        probe: csmh_proxy::admin::HealthProbe,
    },
    /// Start local MariaDB servers with the edX tables and serve the proxy in front of them.
    Sandbox(SandboxArgs),
    /// Print what the proxy would do with each statement (one per line) of FILE, or of standard input.
    Route {
        /// File of statements, one per line; standard input when absent.
        file: Option<PathBuf>,
    },
    /// Create the extended table (and its database) on the csmh server if missing, with its ids starting
    /// `history.id_offset` above the old table's highest id, and the checkpoint table; print the starting id
    /// offset.
    ///
    /// Safe to run again: an existing extended table is kept when its next id is above the old table's highest
    /// id, has its starting id raised when it is still empty, and is refused otherwise (ids could collide).
    ///
    /// With --dry-run, changes nothing: reads the same state, refuses what init would refuse, and prints what it
    /// would do with the exact statements it would run (or that nothing would change).
    ///
    /// Exit status: 0 when the extended table is ready (or would be), 1 when refused, 2 when it could not run.
    Init(InitArgs),
    /// Copy every old history row into the extended table, with the same ids, in primary-key chunks.
    ///
    /// Each chunk commits together with a checkpoint on the csmh server, so an interrupted run (even killed)
    /// resumes where it stopped when run again, with nothing lost or copied twice. After the first pass, catch-up
    /// passes copy rows written to the old table meanwhile, until one finds nothing new. The chunk size adapts
    /// to --chunk-seconds; --max-rows-per-second, --max-replication-lag, --max-load, --run-between and
    /// --pause-file slow or pause it, and `csmh-proxy pause`, `resume` and `throttle` steer it while it runs. On
    /// one server each chunk is an INSERT ... SELECT; across two servers rows stream from one to the other. Shows
    /// a progress bar on a terminal, log lines otherwise, with the reason of every pause; --metrics-address serves
    /// Prometheus metrics of the run, and --hooks-path runs commands on start, progress, success and failure with
    /// its figures in their environment (docs/migration.md). Run `verify` afterwards.
    ///
    /// With --dry-run, changes nothing: refuses what a run would refuse, and prints the plan (where it would
    /// start, up to which id, how, the throttles) and the exact statements of the first chunks.
    ///
    /// With --back, goes back: copies the extended table into the old table, so that the flags can go back a
    /// stage (docs/migration.md, "Going back"), with the same throttles, pause and checkpoint. Reading the extended
    /// table alone, the old table is made the same as it; reading both, every extended row is copied and the old
    /// table's own rows kept; back on the old table alone, the rows the extended table got meanwhile are copied.
    /// Chunks already in line are compared and left as they are. Refused while the old table is retired.
    ///
    /// Exit status: 0 when every row found has been copied (or the plan is printed), 1 when refused, 2 when it
    /// could not run.
    Migrate(MigrateArgs),
    /// Pause a running `migrate` before its next chunk (and any `migrate` started later) until `csmh-proxy resume`.
    ///
    /// Writes the control row in the checkpoint table on the `csmh` server, which a running `migrate` reads once a
    /// second: it works from any machine or pod with the configuration.
    Pause(csmh_proxy::migrate::control::PauseArgs),
    /// Lift `csmh-proxy pause`: a waiting `migrate` copies again within a second.
    Resume,
    /// Change the throttles of a running `migrate` (and of later runs), replacing its command line's; with no
    /// option, show them. `none` lifts a limit; `--reset` goes back to the command line's.
    Throttle(csmh_proxy::migrate::control::ThrottleArgs),
    /// Compare the old table with the extended table and print the id ranges that differ.
    ///
    /// Every id of the old table, from its smallest to its largest, is compared chunk by chunk: both servers
    /// compute each chunk's row count and checksum of all columns at the same time, and a chunk that differs is
    /// narrowed down to the ids that are missing from the extended table, extra in it, or changed. Higher ids of
    /// the extended table are new history and are not compared. The result is recorded for `status`.
    /// --metrics-address and --hooks-path work as for `migrate`; differences run the on-failure hook.
    ///
    /// Exit status: 0 when the tables match, 1 when they differ, 2 when the comparison could not run.
    Verify(VerifyArgs),
    /// Empty the old table once it is retired and every row of it is in the extended table.
    ///
    /// Refuses unless READ_ONLY_FROM_CSMHE is on in the configuration and a verify run at that moment passes.
    /// By default the old table is locked against writes, verified and truncated under the lock; with --slow its
    /// rows are deleted in throttled chunks by id, each checked against the extended table again just before;
    /// with --keep it is verified under the lock as by default, then swapped for an empty copy in one RENAME
    /// TABLE, its rows kept aside as <old>_retired_<YYYYMMDD> (drop it later, or put it back to go back: see
    /// docs/migration.md, "Going back"). The old table keeps its next id. Without --yes, prints what it would do and the statements it would run,
    /// and changes nothing; --dry-run does the same after the checks --yes makes first (READ_ONLY_FROM_CSMHE, every
    /// proxy it can ask), refusing where --yes would.
    ///
    /// Exit status: 0 when done (or nothing to do without --yes), 1 when refused, 2 when it could not run.
    TruncateOld(TruncateArgs),
    /// Show where the migration stands: the flags and their stage, each table's rows and ids, whether the id
    /// offset is safe, the migrate and verify checkpoints, the control row, and the runbook's next step (with
    /// --json, as one JSON object with stable field names).
    ///
    /// Exit status: 0, or 2 when the servers could not be read.
    Status(StatusArgs),
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
        Command::CheckConfig => match check_config(&cli.config) {
            Ok(report) => {
                print!("{report}");
                Ok(())
            }
            Err(error) => {
                eprintln!("configuration refused: {error}");
                std::process::exit(1)
            }
        },
        Command::Fleet(args) => {
            let config = cli.config.exists().then(|| csmh_proxy::config::Config::load(&cli.config)).transpose()?;
            let fleet = runtime.block_on(csmh_proxy::fleet::Fleet::survey(&args, config.as_ref()));
            print!("{fleet}");
            if !fleet.agrees() {
                std::process::exit(1);
            }
            Ok(())
        }
        Command::Healthcheck { probe } => {
            let config = csmh_proxy::config::Config::load(&cli.config)?;
            let admin = config.admin.ok_or(csmh_proxy::admin::ProbeError::NoAdmin)?;
            runtime.block_on(csmh_proxy::admin::probe_self(&admin.address, probe))?;
            Ok(())
        }
        Command::Sandbox(args) => runtime.block_on(csmh_proxy::sandbox::run(args)),
        Command::Route { file } => {
            let config = csmh_proxy::config::Config::load(&cli.config)?;
            let statements = match file {
                Some(path) => std::fs::read(path)?,
                None => std::io::Read::bytes(std::io::stdin()).collect::<Result<_, _>>()?,
            };
            print!("{}", csmh_proxy::explain::explain_lines(config, &statements)?);
            Ok(())
        }
        Command::Init(args) => {
            let config = migration_config(&cli.config);
            finish(runtime.block_on(csmh_proxy::migrate::init::run(&config, &args)), |_| true)
        }
        Command::Migrate(args) => {
            let config = migration_config(&cli.config);
            finish(runtime.block_on(csmh_proxy::migrate::copy::run(&config, &args)), |_| true)
        }
        Command::Pause(args) => {
            let config = migration_config(&cli.config);
            finish(runtime.block_on(csmh_proxy::migrate::control::pause(&config, &args)), |_| true)
        }
        Command::Resume => {
            let config = migration_config(&cli.config);
            finish(runtime.block_on(csmh_proxy::migrate::control::resume(&config)), |_| true)
        }
        Command::Throttle(args) => {
            let config = migration_config(&cli.config);
            finish(runtime.block_on(csmh_proxy::migrate::control::throttle(&config, &args)), |_| true)
        }
        Command::Verify(args) => {
            let config = migration_config(&cli.config);
            finish(runtime.block_on(csmh_proxy::migrate::verify::run(&config, &args)), VerifyReport::passed)
        }
        Command::TruncateOld(args) => {
            let config = migration_config(&cli.config);
            finish(runtime.block_on(csmh_proxy::migrate::truncate::run(&config, &args)), |_| true)
        }
        Command::Status(args) => {
            let config = migration_config(&cli.config);
            let report = runtime.block_on(csmh_proxy::migrate::status::run(&config, &args));
            finish(report.map(|report| if args.json { report.json() } else { report.to_string() }), |_| true)
        }
    }
}

/// The configuration a migration command runs with; an invalid file ends the command with exit status 2.
fn migration_config(path: &std::path::Path) -> Config {
    Config::load(path).unwrap_or_else(|error| {
        eprintln!("configuration refused: {error}");
        std::process::exit(2)
    })
}

/// Prints a migration command's report on standard output, or its error on standard error, and exits with the
/// status scripts check: 0 when it `succeeded`, 1 when it found differences or refused to act, 2 when it could
/// not run.
fn finish<R: std::fmt::Display>(result: Result<R, MigrateError>, succeeded: impl FnOnce(&R) -> bool) -> ! {
    match result {
        Ok(report) => {
            print!("{report}");
            std::process::exit(if succeeded(&report) { 0 } else { 1 })
        }
        Err(refused @ MigrateError::Refused(_)) => {
            eprintln!("{refused}");
            std::process::exit(refused.exit_status())
        }
        Err(error) => {
            eprintln!("error: {error}");
            std::process::exit(error.exit_status())
        }
    }
}

/// `check-config`: the report of a configuration that loads, validates, and whose TLS files can be used; or why
/// not, naming the line or key at fault.
fn check_config(path: &std::path::Path) -> Result<String, String> {
    let report = csmh_proxy::config::check_file(path).map_err(|error| error.to_string())?;
    let config = csmh_proxy::config::Config::load(path).map_err(|error| error.to_string())?;
    csmh_proxy::tls::Tls::load(&config).map_err(|error| error.to_string())?;
    Ok(report)
}
