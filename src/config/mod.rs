//! `proxy.toml`: the typed configuration, how it is read, and what makes it invalid.
//!
//! A file is parsed and validated as a whole; a [`Config`] that [`Config::load`] or [`Config::parse`] returns is
//! one the proxy can run with. Errors name the line and the key at fault ([`ConfigError`]), so the same message
//! serves `check-config` and the log line of a refused reload; the values of secret keys are redacted from every
//! message. [`changes()`] lists what differs between two configurations, for the log line of an applied reload.
//!
//! This module is pure: it reads text and describes values, and knows nothing of the running proxy. Following the
//! file while the proxy runs is the `reload` module's work.

mod changes;
mod document;
mod error;
mod report;
mod secrets;
mod validate;

#[cfg(test)]
pub(crate) mod tests;

use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::history::{Flag, Flags, TableName, TableNameError};

pub use changes::{Change, RESTART_KEYS, Values, changes};
pub use error::{ConfigError, Location, Problem};
pub use report::{check_file, report};

/// The whole of `proxy.toml`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Where clients connect.
    pub listen: Listen,
    /// The HTTP admin listener (`/metrics`, `/healthz`, `/config`); off when absent.
    #[serde(default)]
    pub admin: Option<Admin>,
    /// The two MySQL servers the proxy talks to.
    pub backends: Backends,
    /// Names of the old and the extended history tables.
    #[serde(default)]
    pub history: HistoryTables,
    /// edx-platform's migration flags.
    #[serde(default)]
    pub flags: Flags,
    /// Shadow comparison of merged reads with the extended table alone; off by default.
    #[serde(default)]
    pub shadow: ShadowReads,
}

/// `[listen]`: the client-facing socket.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Listen {
    /// `host:port` to accept MySQL clients on.
    pub address: String,
    /// Seconds a shutdown waits for in-flight statements and open transactions before closing connections.
    #[serde(default = "default_shutdown_timeout_secs")]
    pub shutdown_timeout_secs: u64,
    /// Seconds the proxy goes on accepting and serving after SIGTERM, already unready (`/readyz` 503), while a
    /// load balancer (a Kubernetes Service) stops sending it new clients; then the shutdown proper begins.
    #[serde(default)]
    pub drain_secs: u64,
    /// Client connections served at once; a client beyond them gets error 1040 and no backend connection.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Client connections at once that have not finished logging in; a client beyond them gets error 1040 and no
    /// backend connection.
    #[serde(default = "default_max_handshakes")]
    pub max_handshakes: usize,
    /// Seconds a client has from its connection to the end of its login; then it gets error 1043.
    #[serde(default = "default_handshake_timeout_secs")]
    pub handshake_timeout_secs: u64,
    /// The largest client packet the proxy buffers after login; a larger one gets error 1153 and the connection
    /// closes.
    #[serde(default = "default_max_packet_bytes")]
    pub max_packet_bytes: usize,
    /// The largest statement naming the history table that the proxy parses to route it; a larger one gets
    /// error 1235. Statements the pre-filter lets through unparsed are not limited by it.
    #[serde(default = "default_max_parsed_statement_bytes")]
    pub max_parsed_statement_bytes: usize,
    /// Whether the proxy answers a new session's setup statements (`SET NAMES`, `SET autocommit`, the isolation
    /// level, `sql_mode`) itself, with the server's own answer learned from an earlier session, and sends them on
    /// with the session's next command: a round trip to the server fewer for each ([`crate::early_settings`]).
    #[serde(default = "default_answer_settings_early")]
    pub answer_settings_early: bool,
    /// TLS for clients; plaintext only when absent.
    #[serde(default)]
    pub tls: Option<ListenTls>,
}

/// `[listen.tls]`: the certificate the proxy shows clients that ask for TLS.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(try_from = "ListenTlsFields")]
pub struct ListenTls {
    /// Where the certificate comes from.
    pub certificate: ListenCertificate,
    /// Refuse clients that do not ask for TLS (error 3159), as a server with `require_secure_transport` does.
    pub required: bool,
}

/// Where the certificate the proxy shows clients comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum ListenCertificate {
    /// PEM files, read again at every reload.
    Files {
        /// The certificate chain, the proxy's own certificate first.
        certificate: PathBuf,
        /// The certificate's private key (PKCS#8, PKCS#1 or SEC1).
        key: PathBuf,
    },
    /// A certificate the proxy makes for itself when it starts (`self_signed = true`), as MySQL and MariaDB make
    /// theirs: clients that use TLS when it is offered without checking the certificate (libmysqlclient's
    /// default `ssl-mode=PREFERRED`) then send their password encrypted, and MySQL 8.4's
    /// `caching_sha2_password` lets them log in without the server's RSA key.
    SelfSigned,
}

/// `[listen.tls]` as written: a certificate and its key, or `self_signed = true`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListenTlsFields {
    #[serde(default)]
    certificate: Option<PathBuf>,
    #[serde(default)]
    key: Option<PathBuf>,
    #[serde(default)]
    self_signed: bool,
    #[serde(default)]
    required: bool,
}

impl ListenCertificate {
    /// The certificate as the `check-config` report and `/config` show it: its file, or `self-signed`.
    pub fn describe(&self) -> String {
        match self {
            ListenCertificate::Files { certificate, .. } => certificate.display().to_string(),
            ListenCertificate::SelfSigned => "self-signed".to_owned(),
        }
    }
}

impl TryFrom<ListenTlsFields> for ListenTls {
    type Error = &'static str;

    fn try_from(fields: ListenTlsFields) -> Result<ListenTls, &'static str> {
        let certificate = match (fields.certificate, fields.key, fields.self_signed) {
            (Some(certificate), Some(key), false) => ListenCertificate::Files { certificate, key },
            (None, None, true) => ListenCertificate::SelfSigned,
            (_, _, true) => return Err("`self_signed = true` takes no `certificate` or `key`"),
            (None, None, false) => return Err("needs `certificate` and `key`, or `self_signed = true`"),
            (Some(_), None, false) => return Err("`certificate` needs its `key`"),
            (None, Some(_), false) => return Err("`key` needs its `certificate`"),
        };
        Ok(ListenTls { certificate, required: fields.required })
    }
}

/// `[backends.<name>.tls]`: whether and how the proxy's connections to a server use TLS, in the spirit of
/// MySQL's `--ssl-mode` and its companions.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackendTls {
    /// When TLS is used, and what of the server's certificate is checked.
    #[serde(default)]
    pub mode: TlsMode,
    /// PEM file of the certificate authorities the server's certificate must chain to (`verify-ca`,
    /// `verify-identity`; given with `preferred` or `required`, the chain is checked as with `verify-ca`).
    #[serde(default)]
    pub ca: Option<PathBuf>,
    /// PEM file of a client certificate the proxy shows the server (with `key`), for accounts that require one.
    #[serde(default)]
    pub certificate: Option<PathBuf>,
    /// PEM file of the client certificate's private key.
    #[serde(default)]
    pub key: Option<PathBuf>,
    /// The name the server's certificate must be valid for (`verify-identity`); the host of `address` when
    /// absent.
    #[serde(default)]
    pub server_name: Option<String>,
    /// PEM file of the server's RSA public key (MySQL's `public_key.pem`): what the proxy's own login
    /// encrypts its password with when the server asks for it in full (caching_sha2_password, its cache cold)
    /// over a connection without TLS. Without it such a login is refused: the key the server would send could
    /// be an attacker's on a path without TLS.
    #[serde(default)]
    pub server_public_key: Option<PathBuf>,
}

/// When a backend connection uses TLS: MySQL's `--ssl-mode` values.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TlsMode {
    /// Never; a client that connected with TLS is refused, since its traffic would cross in plaintext.
    Disabled,
    /// When the server offers it (MySQL's default); the certificate is not checked. Plaintext with a server
    /// that does not offer TLS, unless the client connected with TLS.
    #[default]
    Preferred,
    /// Always: a server that does not offer TLS is refused; the certificate is not checked.
    Required,
    /// Always, with a certificate that chains to `ca`.
    VerifyCa,
    /// Always, with a certificate that chains to `ca` and is valid for the server's name.
    VerifyIdentity,
}

impl TlsMode {
    /// The mode as written in `proxy.toml`.
    pub fn as_str(self) -> &'static str {
        match self {
            TlsMode::Disabled => "disabled",
            TlsMode::Preferred => "preferred",
            TlsMode::Required => "required",
            TlsMode::VerifyCa => "verify-ca",
            TlsMode::VerifyIdentity => "verify-identity",
        }
    }

    /// Whether the server's certificate is checked against `ca`.
    pub fn verifies(self) -> bool {
        matches!(self, TlsMode::VerifyCa | TlsMode::VerifyIdentity)
    }
}

fn default_shutdown_timeout_secs() -> u64 {
    10
}

/// The default [`Listen::max_connections`]: twice the 1,000 connections the proxy is measured with, above what a
/// MySQL server usually accepts (151 by default), while the proxy's memory and descriptors stay bounded.
pub const DEFAULT_MAX_CONNECTIONS: usize = 2_000;

fn default_max_connections() -> usize {
    DEFAULT_MAX_CONNECTIONS
}

/// The default [`Listen::max_handshakes`]: a whole fleet of web workers restarting at once logs in within it
/// (each login takes milliseconds), while clients that stall before logging in cannot hold more.
pub const DEFAULT_MAX_HANDSHAKES: usize = 256;

fn default_max_handshakes() -> usize {
    DEFAULT_MAX_HANDSHAKES
}

/// The default [`Listen::handshake_timeout_secs`]: a login takes milliseconds; 5 s is half of a server's own
/// `connect_timeout` (10 s), so the proxy ends a stalled login and tells the client before the server does.
fn default_handshake_timeout_secs() -> u64 {
    5
}

/// The default [`Listen::max_packet_bytes`]: 64 MiB, MySQL 8.4's default `max_allowed_packet` (MariaDB's is
/// 16 MiB): a packet larger than the server accepts anyway.
pub const DEFAULT_MAX_PACKET_BYTES: usize = 64 << 20;

fn default_max_packet_bytes() -> usize {
    DEFAULT_MAX_PACKET_BYTES
}

/// The default [`Listen::max_parsed_statement_bytes`]: 4 MiB, far above an edxapp history row (its `state` is
/// a learner's problem state, usually a few KiB), while routing one takes several times its size for a moment
/// (a 4 MiB INSERT: 50 ms and 28 MiB).
pub const DEFAULT_MAX_PARSED_STATEMENT_BYTES: usize = 4 << 20;

fn default_max_parsed_statement_bytes() -> usize {
    DEFAULT_MAX_PARSED_STATEMENT_BYTES
}

fn default_answer_settings_early() -> bool {
    true
}

/// The largest [`Listen::max_packet_bytes`]: 1 GiB, the protocol's (and MySQL's `max_allowed_packet`'s) limit.
pub const MAX_PACKET_BYTES_LIMIT: usize = 1 << 30;

/// `[admin]`: the operator's HTTP listener.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Admin {
    /// `host:port` of the HTTP listener.
    pub address: String,
}

/// `[backends]`: the `edxapp` server clients authenticate against, and the `csmh` server of the extended table.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Backends {
    /// The server holding database `edxapp`; every client session is relayed to it.
    pub edxapp: Backend,
    /// The server holding database `edxapp_csmh`; may have the same address as `edxapp`.
    pub csmh: Backend,
}

/// One MySQL server.
#[derive(Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Backend {
    /// `host:port` of the server.
    pub address: String,
    /// User the proxy logs in as (only for the `csmh` backend on its own server).
    #[serde(default)]
    pub user: Option<String>,
    /// Password, written in the file (prefer `password_env`).
    #[serde(default)]
    pub password: Option<String>,
    /// Name of an environment variable holding the password.
    #[serde(default)]
    pub password_env: Option<String>,
    /// Seconds to wait for a TCP connection to the server.
    #[serde(default = "default_connect_timeout_secs")]
    pub connect_timeout_secs: u64,
    /// Seconds the proxy waits for the server's next bytes while a statement of its connection to it is pending
    /// (only for the `csmh` backend on its own server: a frozen server fails the statement, not the session).
    /// `edxapp` statements are the client's own and take as long as they take there.
    #[serde(default = "default_read_timeout_secs")]
    pub read_timeout_secs: u64,
    /// TLS on the proxy's connections to the server.
    #[serde(default)]
    pub tls: BackendTls,
    /// Connections opened ahead of clients (`edxapp` only; see [`Preconnect`]). `None`: not written, which on
    /// `edxapp` means the defaults.
    #[serde(default)]
    pub preconnect: Option<Preconnect>,
    /// The most connections to the server kept open between client sessions, for the next sessions to use
    /// (`csmh` on its own server only; see [`crate::csmh_pool`]). `None`: not written, the default
    /// ([`DEFAULT_KEEP_IDLE`]); 0 keeps none.
    #[serde(default)]
    pub keep_idle: Option<usize>,
    /// Seconds an account's allowed grants check stands before a statement on the extended table checks it
    /// again (`csmh` on its own server only; docs/routing.md, "Grants across two servers"): how long a REVOKE
    /// takes to reach the proxy's sessions. `None`: not written, the default ([`DEFAULT_GRANTS_VALID_SECS`]); 0
    /// checks every statement.
    #[serde(default)]
    pub grants_valid_secs: Option<u64>,
}

/// The default `[backends.csmh] grants_valid_secs`: edxapp opens a connection per request, so a check is paid
/// about once a minute per account and kind of statement, not once per request.
pub const DEFAULT_GRANTS_VALID_SECS: u64 = 60;

/// The default `[backends.csmh] keep_idle`: the sessions of a few LMS replicas' workers that touch the history at
/// the same time.
pub const DEFAULT_KEEP_IDLE: usize = 8;

/// `[backends.edxapp.preconnect]`: how many connections to the `edxapp` server the proxy keeps connected and
/// greeted, not logged in, for the next clients' logins (docs/reliability.md, "Connections opened ahead").
/// How many it actually keeps follows the rate of new clients, up to `max`, and is zero while clients are rare.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Preconnect {
    /// The most connections kept ready; 0 turns preconnecting off.
    #[serde(default = "default_preconnect_max")]
    pub max: usize,
    /// A ready connection not taken within this many milliseconds of its greeting is closed. It must stay below
    /// the server's `connect_timeout` (10 s by default), after which the server closes the connection itself.
    #[serde(default = "default_preconnect_max_age_ms")]
    pub max_age_ms: u64,
}

impl Default for Preconnect {
    fn default() -> Self {
        Preconnect { max: default_preconnect_max(), max_age_ms: default_preconnect_max_age_ms() }
    }
}

impl Preconnect {
    /// Whether connections are opened ahead at all.
    pub fn is_on(&self) -> bool {
        self.max > 0
    }

    /// `max_age_ms` as a duration.
    pub fn max_age(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.max_age_ms)
    }
}

/// The default [`Preconnect::max`]: enough for the bursts of a few LMS replicas' workers between two refills
/// (each refill is one connect and greeting, well under a millisecond on a local network).
fn default_preconnect_max() -> usize {
    4
}

/// The default [`Preconnect::max_age_ms`]: half of MySQL's and MariaDB's default `connect_timeout` (10 s), so a
/// client taking a connection at the end of its age still has 5 s to log in.
fn default_preconnect_max_age_ms() -> u64 {
    5000
}

fn default_connect_timeout_secs() -> u64 {
    5
}

/// The default [`Backend::read_timeout_secs`]: longer than any history statement of edxapp's should take, well
/// under the time a web worker waits for its request.
fn default_read_timeout_secs() -> u64 {
    30
}

impl Backends {
    /// Whether both backends are one server: the same address, compared as written with the host
    /// case-insensitively. [`crate::topology::Topology::of`] says what that means for the data path.
    pub fn same_server(&self) -> bool {
        self.edxapp.address.trim().eq_ignore_ascii_case(self.csmh.address.trim())
    }

    /// How many connections to a separate `csmh` server are kept between sessions: as written, or the default.
    pub fn csmh_keep_idle(&self) -> usize {
        self.csmh.keep_idle.unwrap_or(DEFAULT_KEEP_IDLE)
    }

    /// How long an allowed grants check stands on a separate `csmh` server: as written, or the default.
    pub fn csmh_grants_valid_for(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.csmh.grants_valid_secs.unwrap_or(DEFAULT_GRANTS_VALID_SECS))
    }

    /// The preconnecting in force for `edxapp`: as written, or the defaults.
    pub fn edxapp_preconnect(&self) -> Preconnect {
        self.edxapp.preconnect.unwrap_or_default()
    }
}

impl Backend {
    /// The password to log in with: `password` as written, or the value of the variable `password_env` names;
    /// `None` when neither is set.
    pub fn password(&self) -> Result<Option<String>, PasswordError> {
        match (&self.password, &self.password_env) {
            (Some(_), Some(_)) => Err(PasswordError::BothGiven),
            (Some(password), None) => Ok(Some(password.clone())),
            (None, Some(variable)) => read_password_variable(variable).map(Some),
            (None, None) => Ok(None),
        }
    }
}

/// Reads the environment variable holding a password.
fn read_password_variable(variable: &str) -> Result<String, PasswordError> {
    std::env::var(variable).map_err(|error| match error {
        std::env::VarError::NotPresent => PasswordError::VariableUnset { variable: variable.to_owned() },
        std::env::VarError::NotUnicode(_) => PasswordError::VariableNotUnicode { variable: variable.to_owned() },
    })
}

/// Debug output that never shows the password, so that logging a configuration leaks no secret.
impl fmt::Debug for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Backend")
            .field("address", &self.address)
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("password_env", &self.password_env)
            .field("connect_timeout_secs", &self.connect_timeout_secs)
            .field("read_timeout_secs", &self.read_timeout_secs)
            .field("tls", &self.tls)
            .field("preconnect", &self.preconnect)
            .field("keep_idle", &self.keep_idle)
            .field("grants_valid_secs", &self.grants_valid_secs)
            .finish()
    }
}

/// Why [`Backend::password`] has no password to give.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PasswordError {
    /// Both `password` and `password_env` are set, so it is unclear which one the operator meant.
    #[error("`password` and `password_env` are both set: keep only one")]
    BothGiven,
    /// The variable named by `password_env` is not in the proxy's environment.
    #[error("`password_env` names the environment variable {variable}, which is not set")]
    VariableUnset {
        /// The variable's name.
        variable: String,
    },
    /// The variable named by `password_env` holds bytes that are not UTF-8, which MySQL clients cannot send.
    #[error("`password_env` names the environment variable {variable}, whose value is not valid UTF-8")]
    VariableNotUnicode {
        /// The variable's name.
        variable: String,
    },
}

/// `[shadow]`: while reads come from both tables, answer a sample of edxapp's history reads from the extended
/// table alone too, off the client's path, and compare the two answers (docs/routing.md, "Shadow comparison").
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShadowReads {
    /// The fraction of merged reads compared, from 0 (off, the default) to 1 (every one).
    #[serde(default)]
    pub sample: f64,
}

impl ShadowReads {
    /// Whether any read is compared.
    pub fn is_on(&self) -> bool {
        self.sample > 0.0
    }
}

/// `[history]`: schema-qualified names of the two history tables.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HistoryTables {
    /// The table edxapp writes, `edxapp.courseware_studentmodulehistory` by default.
    #[serde(default = "default_old_table")]
    pub old_table: String,
    /// The extended table, `edxapp_csmh.coursewarehistoryextended_studentmodulehistoryextended` by default.
    #[serde(default = "default_extended_table")]
    pub extended_table: String,
    /// How far above the old table's largest id `csmh-proxy init` starts the extended table's ids: edx-platform's
    /// `STUDENTMODULEHISTORYEXTENDED_OFFSET`, the room for old rows written while the switch rolls out.
    #[serde(default = "default_id_offset")]
    pub id_offset: u64,
}

impl HistoryTables {
    /// The old table's name, schema-qualified.
    pub fn old(&self) -> Result<TableName, TableNameError> {
        self.old_table.parse()
    }

    /// The extended table's name, schema-qualified.
    pub fn extended(&self) -> Result<TableName, TableNameError> {
        self.extended_table.parse()
    }
}

impl Default for HistoryTables {
    fn default() -> Self {
        Self { old_table: default_old_table(), extended_table: default_extended_table(), id_offset: DEFAULT_ID_OFFSET }
    }
}

fn default_old_table() -> String {
    "edxapp.courseware_studentmodulehistory".to_owned()
}

fn default_extended_table() -> String {
    "edxapp_csmh.coursewarehistoryextended_studentmodulehistoryextended".to_owned()
}

/// edx-platform's default `STUDENTMODULEHISTORYEXTENDED_OFFSET`.
pub const DEFAULT_ID_OFFSET: u64 = 10_000;

/// The largest `history.id_offset`: 2^32, more room than the old table's signed 32-bit ids can ever use, and
/// small enough that the extended table's first id stays far from the end of its 64-bit range.
pub const MAX_ID_OFFSET: u64 = 1 << 32;

fn default_id_offset() -> u64 {
    DEFAULT_ID_OFFSET
}

impl Config {
    /// Reads and validates the file at `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| ConfigError::Read { path: path.display().to_string(), source })?;
        Config::parse_file(&text)
    }

    /// Parses and validates the text of a `proxy.toml` file, as [`Config::parse`] does, and refuses one that
    /// leaves a flag out. A file read while it is being rewritten in place (as Tutor renders, or an editor saves
    /// without a rename) may end before its `[flags]` or among them, and a flag taken for off would send history
    /// to the old table for as long as the write takes; a file that names every flag cannot be mistaken so.
    pub fn parse_file(text: &str) -> Result<Config, ConfigError> {
        let config = Config::parse(text)?;
        let written: Option<toml::Table> = text.parse().ok();
        let why = "(a file without it may be one read while it was being written)";
        let missing: Vec<Problem> = match written.as_ref().and_then(|file| file.get("flags")) {
            None => vec![Problem::new("flags", format!("is missing: every flag must be written, true or false {why}"))],
            Some(flags) => Flag::ALL
                .into_iter()
                .filter(|flag| flags.get(flag.name()).is_none())
                .map(|flag| Problem::new(format!("flags.{}", flag.name()), format!("must be written {why}")))
                .collect(),
        };
        if missing.is_empty() {
            return Ok(config);
        }
        let document = document::Document::parse(text, &secrets::Secrets::scan(text))?;
        Err(ConfigError::Invalid { problems: missing.into_iter().map(|problem| document.locate(problem)).collect() })
    }

    /// Parses and validates the text of a `proxy.toml`; errors carry the line and key at fault, and never the
    /// value of a secret key such as `password`, whatever is wrong with the file.
    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        let secrets = secrets::Secrets::scan(text);
        Config::parse_and_validate(text, &secrets).map_err(|error| secrets.redact_error(error))
    }

    fn parse_and_validate(text: &str, secrets: &secrets::Secrets) -> Result<Config, ConfigError> {
        let document = document::Document::parse(text, secrets)?;
        let config: Config = document.deserialize()?;
        let problems = validate::problems(&config);
        if problems.is_empty() {
            Ok(config)
        } else {
            let mut problems: Vec<Problem> = problems.into_iter().map(|problem| document.locate(problem)).collect();
            problems.sort_by_key(|problem| problem.at.line.unwrap_or(usize::MAX));
            Err(ConfigError::Invalid { problems })
        }
    }

    /// The certificate and key files the configuration names, the listener's and each backend's.
    pub fn tls_files(&self) -> Vec<&Path> {
        let listener = self.listen.tls.iter().flat_map(|tls| match &tls.certificate {
            ListenCertificate::Files { certificate, key } => vec![certificate.as_path(), key.as_path()],
            ListenCertificate::SelfSigned => Vec::new(),
        });
        let backends = [&self.backends.edxapp.tls, &self.backends.csmh.tls]
            .into_iter()
            .flat_map(|tls| [&tls.ca, &tls.certificate, &tls.key, &tls.server_public_key])
            .filter_map(|path| path.as_deref());
        listener.chain(backends).collect()
    }

    /// Checks a configuration built in code rather than read from a file; errors name the key but no line.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let problems = validate::problems(self);
        if problems.is_empty() { Ok(()) } else { Err(ConfigError::Invalid { problems }) }
    }
}
