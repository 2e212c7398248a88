//! What the migration tests share: a site of edX databases with a `proxy.toml` that carries the migration
//! commands' logins, edX-shaped old history generated on the server, the `csmh-proxy` binary, a fingerprint
//! of a table's rows to compare the old and the extended table by, and a fingerprint of a whole server's state
//! to show that a command changed nothing.

#![allow(dead_code)]

pub mod runbook;

use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};

use csmh_proxy::config::Config;
use csmh_proxy::history::{Flags, Stage};
use csmh_proxy::migrate::Site;
use csmh_proxy::sandbox;
use mysql_async::Conn;
use mysql_async::prelude::Queryable;
use tokio::process::Child;

use crate::support::{EdxDatabases, MariaDb, app, connect, root_conn};

/// A test's edX databases, with the old tables created (and the extended table not yet), and its `proxy.toml`.
pub struct MigrationSite {
    /// The databases.
    pub dbs: EdxDatabases,
    /// The configuration the commands read.
    pub config: Config,
    /// The same configuration as a file, for the binary.
    pub config_path: PathBuf,
    text: String,
    dir: tempfile::TempDir,
}

impl MigrationSite {
    /// New databases on the shared server(s), with `edxapp`'s tables and an empty old history table.
    pub async fn new(two_servers: bool) -> MigrationSite {
        let dbs = if two_servers { EdxDatabases::fresh_two_servers().await } else { EdxDatabases::fresh().await };
        MigrationSite::on(dbs).await
    }

    /// The site of `dbs` (empty databases), with `edxapp`'s tables and an empty old history table created.
    pub async fn on(dbs: EdxDatabases) -> MigrationSite {
        let mut root = root_conn(&dbs.edxapp).await;
        sandbox::create_edxapp_tables(&mut root, &dbs.edxapp_db).await.expect("create edxapp's tables");
        let text = migration_toml(&dbs);
        let config = Config::parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        let dir = tempfile::tempdir().expect("a temporary directory");
        let config_path = dir.path().join("proxy.toml");
        std::fs::write(&config_path, &text).expect("write proxy.toml");
        MigrationSite { dbs, config, config_path, text, dir }
    }

    /// A site with `rows` old rows, the extended table created (`init`), and the flags of the stage in which the
    /// copy runs.
    pub async fn ready(two_servers: bool, rows: u64) -> MigrationSite {
        let mut site = MigrationSite::new(two_servers).await;
        site.set_flags(Stage::ExtendedTableReadingBoth.flags());
        site.generate_old_rows(rows).await;
        let init = site.command(&["init"]).await;
        assert_eq!(init.status.code(), Some(0), "{}", outputs(&init));
        site
    }

    /// The site the library's commands act on.
    pub fn site(&self) -> Site {
        Site::new(&self.config).expect("the site")
    }

    /// A connection to the old table's database.
    pub async fn edxapp(&self) -> Conn {
        connect(self.dbs.edxapp.addr(), &app(), Some(&self.dbs.edxapp_db)).await
    }

    /// A connection to the extended table's database.
    pub async fn csmh(&self) -> Conn {
        connect(self.dbs.csmh.addr(), &app(), Some(&self.dbs.csmh_db)).await
    }

    /// The old table, quoted.
    pub fn old(&self) -> String {
        format!("`{}`.`{}`", self.dbs.edxapp_db, sandbox::OLD_TABLE)
    }

    /// The extended table, quoted.
    pub fn extended(&self) -> String {
        format!("`{}`.`{}`", self.dbs.csmh_db, sandbox::EXTENDED_TABLE)
    }

    /// Writes `flags` into this site's configuration (the library's copy and the binary's file).
    pub fn set_flags(&mut self, flags: Flags) {
        self.text = self.dbs.proxy_toml(flags).render();
        self.config = Config::parse(&self.text).unwrap_or_else(|e| panic!("{e}\n{}", self.text));
        std::fs::write(&self.config_path, &self.text).expect("write proxy.toml");
    }

    /// The state of both servers ([`ServerState`]): the `edxapp` one's, then the `csmh` one's.
    pub async fn servers_state(&self) -> [ServerState; 2] {
        [server_state(&self.dbs.edxapp, &self.dbs).await, server_state(&self.dbs.csmh, &self.dbs).await]
    }

    /// Runs the `csmh-proxy` binary with `args` and this site's configuration.
    pub async fn command(&self, args: &[&str]) -> Output {
        self.binary(args).output().await.expect("run csmh-proxy")
    }

    /// The `csmh-proxy` binary with `args` and this site's configuration, not yet started.
    pub fn binary(&self, args: &[&str]) -> tokio::process::Command {
        binary(&self.config_path, args)
    }

    /// Starts the `csmh-proxy` binary with `args` and this site's configuration in the background, logging at info
    /// level, its output piped.
    pub fn spawn(&self, args: &[&str]) -> Child {
        let mut command = self.binary(args);
        command.env("RUST_LOG", "info").stdout(Stdio::piped()).stderr(Stdio::piped());
        command.spawn().expect("start csmh-proxy")
    }

    /// Runs a command that must succeed (a control command, `status`) and returns what it printed.
    pub async fn succeeds(&self, args: &[&str]) -> String {
        let output = self.command(args).await;
        assert_eq!(output.status.code(), Some(0), "{args:?}: {}", outputs(&output));
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// This site's `proxy.toml` with the `edxapp` login's password read from the environment variable `variable`
    /// (`password_env`) instead of the file, written to a file of its own; and the password.
    pub fn config_with_password_env(&self, variable: &str) -> (PathBuf, String) {
        let password = self.config.backends.edxapp.password.clone().expect("a password in the file");
        let written = format!("password = {}", toml::Value::String(password.clone()));
        assert!(self.text.contains(&written), "{}", self.text);
        let text = self.text.replacen(&written, &format!("password_env = \"{variable}\""), 1);
        let path = self.dir.path().join("proxy-password-env.toml");
        std::fs::write(&path, text).expect("write the configuration");
        (path, password)
    }

    /// Runs the `csmh-proxy` binary with `args` and this site's configuration followed by `extra` (more TOML
    /// tables, such as `[backends.edxapp.tls]`), written to a file of its own.
    pub async fn command_with(&self, extra: &str, args: &[&str]) -> Output {
        let text = format!("{}\n{extra}", self.text);
        let path = tempfile::Builder::new()
            .suffix(".toml")
            .tempfile_in(self.dir.path())
            .expect("a configuration file")
            .into_temp_path()
            .keep()
            .expect("keep the configuration file");
        std::fs::write(&path, text).expect("write the configuration");
        binary(&path, args).output().await.expect("run csmh-proxy")
    }

    /// Fills the old table with `rows` edX-shaped rows generated by the server ([`sandbox::generate_history`]).
    pub async fn generate_old_rows(&self, rows: u64) {
        let mut conn = self.edxapp().await;
        sandbox::generate_history(&mut conn, &self.dbs.edxapp_db, rows).await.expect("generate old rows");
    }

    /// The fingerprint of the old table's rows.
    pub async fn old_fingerprint(&self) -> Fingerprint {
        self.old_fingerprint_up_to(u64::MAX).await
    }

    /// The fingerprint of the old table's rows with ids up to `up_to`.
    pub async fn old_fingerprint_up_to(&self, up_to: u64) -> Fingerprint {
        fingerprint(&mut self.edxapp().await, &self.old(), up_to).await
    }

    /// The fingerprint of the extended table's rows with ids up to `up_to` (the copied ones).
    pub async fn extended_fingerprint(&self, up_to: u64) -> Fingerprint {
        fingerprint(&mut self.csmh().await, &self.extended(), up_to).await
    }

    /// The migration's checkpoint: `last_id` and `rows_done`, if there is one.
    pub async fn migrate_checkpoint(&self) -> Option<(Option<u64>, u64)> {
        self.migrate_checkpoint_columns("`last_id`, `rows_done`").await
    }

    /// `columns` of the migration's checkpoint row, if there is one.
    pub async fn migrate_checkpoint_columns<T: mysql_async::prelude::FromRow + Send + 'static>(
        &self,
        columns: &str,
    ) -> Option<T> {
        let sql =
            format!("SELECT {columns} FROM `{}`.`csmh_proxy_checkpoint` WHERE `task` = 'migrate'", self.dbs.csmh_db);
        match self.csmh().await.query_first(sql).await {
            Ok(row) => row,
            Err(mysql_async::Error::Server(error)) if error.code == 1146 => None,
            Err(error) => panic!("read the checkpoint: {error}"),
        }
    }

    /// The single number `sql` returns on the `csmh` server.
    pub async fn csmh_number(&self, sql: &str) -> Option<u64> {
        self.csmh().await.query_first::<Option<u64>, _>(sql).await.expect(sql).flatten()
    }
}

/// The `csmh-proxy` binary with `args` and the configuration at `config`, not yet started.
pub fn binary(config: &Path, args: &[&str]) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_csmh-proxy"));
    command.arg("--config").arg(config).args(args).env("RUST_LOG", "warn").kill_on_drop(true);
    command
}

/// Rows, largest id, and a sum of checksums of every column's exact value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fingerprint {
    /// `COUNT(*)`.
    pub rows: u64,
    /// `MAX(id)`.
    pub max_id: u64,
    /// The sum of each row's CRC32 over all its columns.
    pub checksum: u64,
}

async fn fingerprint(conn: &mut Conn, table: &str, up_to: u64) -> Fingerprint {
    let sql = format!(
        "SELECT COUNT(*), COALESCE(MAX(`id`), 0), COALESCE(SUM(CRC32(CONCAT_WS('|', `id`, IFNULL(`version`, '~'),
                `created`, IFNULL(HEX(`state`), '~'), IFNULL(CAST(`grade` AS DECIMAL(65, 30)), '~'),
                IFNULL(CAST(`max_grade` AS DECIMAL(65, 30)), '~'), `student_module_id`))), 0)
         FROM {table} WHERE `id` <= {up_to}"
    );
    let (rows, max_id, checksum) = conn.query_first(sql).await.expect("fingerprint").expect("one row");
    Fingerprint { rows, max_id, checksum }
}

/// A `proxy.toml` for `dbs` in which both backends have the application account's login.
fn migration_toml(dbs: &EdxDatabases) -> String {
    dbs.proxy_toml(Flags::default()).render()
}

/// The process's standard output and error, for assertion messages.
pub fn outputs(output: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// What a server holds that a migration command could change: its databases and their tables, and for each
/// table of the test's databases its definition as `SHOW CREATE TABLE` gives it (with its `AUTO_INCREMENT`) and
/// its `CHECKSUM TABLE`. Other tests' databases on a shared server (`t<n>_...` of another `n`) are left out: they
/// change as those tests run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerState {
    /// Every database, by name.
    pub databases: Vec<String>,
    /// Every table of those databases, as `schema.table`.
    pub tables: Vec<String>,
    /// Each table of the test's databases (every database but the server's own): its name, definition and
    /// checksum.
    pub contents: Vec<(String, String, Option<u64>)>,
}

/// The server's own databases, whose tables' contents the server changes itself.
const SYSTEM_DATABASES: [&str; 4] = ["information_schema", "mysql", "performance_schema", "sys"];

/// The state of `server` as the test of `dbs` sees it ([`ServerState`]).
pub async fn server_state(server: &MariaDb, dbs: &EdxDatabases) -> ServerState {
    let mut root = root_conn(server).await;
    let own = test_prefix(&dbs.edxapp_db);
    let all: Vec<String> = root.query("SELECT SCHEMA_NAME FROM information_schema.SCHEMATA").await.expect("databases");
    let mut databases: Vec<String> =
        all.into_iter().filter(|name| test_prefix(name).is_none_or(|prefix| Some(prefix) == own)).collect();
    databases.sort();
    let mut tables = Vec::new();
    let mut contents = Vec::new();
    for database in &databases {
        let sql = "SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = ? ORDER BY TABLE_NAME";
        let names: Vec<String> = root.exec(sql, (database,)).await.expect("tables");
        for name in names {
            let table = format!("`{database}`.`{name}`");
            tables.push(format!("{database}.{name}"));
            if SYSTEM_DATABASES.contains(&database.as_str()) {
                continue;
            }
            let (_, definition): (String, String) = root
                .query_first(format!("SHOW CREATE TABLE {table}"))
                .await
                .expect("SHOW CREATE TABLE")
                .expect("a row");
            let (_, checksum): (String, Option<u64>) =
                root.query_first(format!("CHECKSUM TABLE {table}")).await.expect("CHECKSUM TABLE").expect("a row");
            contents.push((table, definition, checksum));
        }
    }
    ServerState { databases, tables, contents }
}

/// The `t<n>_` a fixture database's name starts with, if it is one.
fn test_prefix(database: &str) -> Option<&str> {
    let (number, _) = database.strip_prefix('t')?.split_once('_')?;
    (!number.is_empty() && number.bytes().all(|b| b.is_ascii_digit())).then(|| &database[..number.len() + 2])
}
