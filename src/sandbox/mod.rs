//! Local MariaDB servers: the `csmh-proxy sandbox` demo and the integration tests' fixture.
//!
//! A [`MariaDb`] is one throw-away `mariadbd` on a free loopback port with its data in a temporary directory.
//! Servers die with the process that started them: [`Drop`] kills them, a normal exit kills the ones still alive,
//! and the kernel kills them (`PR_SET_PDEATHSIG`) when the owner is killed; the temporary directories a killed
//! owner leaves behind are removed by the next start. The rest of the module creates the accounts and the edX
//! tables of `courseware_studentmodulehistory` and its extended table, and [`run`] puts it all together behind
//! the proxy.
//!
//! Files: `install` finds or installs the MariaDB programs, `server` runs one `mariadbd`, `accounts` creates the
//! accounts that log in to it, `schema` the edX tables and their sample history, `proxy_toml` writes the proxy's
//! configuration, `sql` quotes SQL text, `error` says what went wrong, and this file is the `sandbox` subcommand.

mod accounts;
mod error;
mod install;
mod proxy_toml;
mod schema;
mod server;
mod sql;

pub use accounts::{APP_PASSWORD, APP_USER, Account, AuthPlugin, create_account, grant_all, tcp_opts};
pub use error::SandboxError;
pub use install::{
    Binaries, ensure_mariadb_installed, find_program, install_packages, is_root, mariadb_binaries, with_install_lock,
};
pub use proxy_toml::ProxyToml;
pub use schema::{
    CSMH_DB, EDXAPP_DB, EXTENDED_TABLE, EdxDatabase, EdxSchema, OLD_TABLE, SAMPLE_ATTEMPTS, SAMPLE_COURSE,
    SAMPLE_LEARNERS, SAMPLE_PROBLEMS, STUDENTMODULEHISTORYEXTENDED_OFFSET, SampleHistory, create_edx_schema,
    create_edxapp_tables, create_extended_table, generate_history, insert_sample_history, old_history_max_id,
};
pub use server::{MariaDb, remove_stale_sandboxes};

use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener};
use std::path::Path;

use crate::config::Config;
use crate::reload::Watch;
use crate::server::{Proxy, shutdown_signal};

use server::{free_port, owned_temp_dir};

/// Options of `csmh-proxy sandbox`.
#[derive(Debug, Clone, clap::Args)]
pub struct SandboxArgs {
    /// Port the proxy listens on; when it is taken, a free one is used instead.
    #[arg(long, default_value_t = 6033)]
    pub port: u16,
    /// Also generate this many rows of edX-shaped old history (ids with gaps, every column's edge cases) before
    /// the extended table is created: enough to watch `migrate` make progress, pause it, and see `verify` and
    /// the shadow comparison at work (the server generates them itself, before the proxy starts).
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub rows: u64,
}

/// `csmh-proxy sandbox`: two local MariaDB servers (`edxapp` with sample history, `edxapp_csmh` with the
/// extended table) and the proxy in front of them, until Ctrl-C, which removes everything.
pub async fn run(args: SandboxArgs) -> anyhow::Result<()> {
    let (edxapp, csmh) = tokio::try_join!(MariaDb::start(), MariaDb::start())?;
    let app = Account::app();
    edxapp.create_account(&app, &[EDXAPP_DB]).await?;
    csmh.create_account(&app, &[CSMH_DB]).await?;
    if args.rows > 0 {
        println!("generating {} rows of old history", args.rows);
    }
    let schema =
        EdxSchema { generated_rows: args.rows, ..EdxSchema::two_servers(edxapp.root_opts(), csmh.root_opts()) };
    create_edx_schema(&schema).await?;
    let dir = owned_temp_dir()?;
    let config_path = dir.path().join("proxy.toml");
    let port = proxy_port(args.port)?;
    let listen = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, port));
    let admin = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, free_port()?));
    let toml =
        ProxyToml { admin: Some(admin), shadow_sample: 1.0, ..ProxyToml::edx(listen, edxapp.addr(), csmh.addr()) };
    let text = toml.render();
    std::fs::write(&config_path, format!("# Written by `csmh-proxy sandbox`.\n{text}"))?;
    let proxy = Proxy::bind(Config::load(&config_path)?).await?.watch_config(Watch::file(&config_path));
    print_banner(proxy.local_addr(), &edxapp, &csmh, &app, &config_path, admin);
    let served = proxy.run_on_worker(shutdown_signal()).await;
    println!("stopping the MariaDB servers and removing their data");
    edxapp.stop()?;
    csmh.stop()?;
    dir.close()?;
    served
}

/// `wanted` if it is free on 127.0.0.1, else a free port (saying so).
fn proxy_port(wanted: u16) -> anyhow::Result<u16> {
    match TcpListener::bind((Ipv4Addr::LOCALHOST, wanted)) {
        Ok(listener) => Ok(listener.local_addr()?.port()),
        Err(e) if e.kind() == io::ErrorKind::AddrInUse => {
            let port = free_port()?;
            println!("port {wanted} is taken; the proxy listens on {port} instead");
            Ok(port)
        }
        Err(e) => Err(e.into()),
    }
}

/// Tells the operator how to connect, through the proxy and directly.
fn print_banner(proxy: SocketAddr, edxapp: &MariaDb, csmh: &MariaDb, app: &Account, config: &Path, admin: SocketAddr) {
    let cli = |port: u16, db: &str| format!("mariadb -h127.0.0.1 -P{port} -u{} -p{} {db}", app.user, app.password);
    println!();
    println!("csmh-proxy sandbox is running. Connect through the proxy:");
    println!();
    println!("    {}", cli(proxy.port(), EDXAPP_DB));
    println!();
    println!("directly to the edxapp server:       {}", cli(edxapp.port(), EDXAPP_DB));
    println!("directly to the edxapp_csmh server:  {}", cli(csmh.port(), CSMH_DB));
    println!("proxy configuration:                 {}", config.display());
    println!("admin listener (/metrics, /config):  http://{admin}");
    println!();
    println!("Edit the configuration's [flags] to move the history to the extended table: the proxy follows the file.");
    println!("Rehearse the migration with the same file: export CSMH_PROXY_CONFIG={}", config.display());
    println!(
        "then csmh-proxy status, init, migrate, pause, resume, verify, truncate-old (README, \"Rehearsing the migration on the sandbox\")."
    );
    println!("Press Ctrl-C to stop; the servers and their data are removed.");
}
