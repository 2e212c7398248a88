//! `proxy.toml`: the typed configuration, how it is read, and what makes it invalid.
//!
//! A file is parsed and validated as a whole; a [`Config`] that exists is one the proxy can run with.

use std::path::Path;

use serde::Deserialize;

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
}

/// `[listen]`: the client-facing socket.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Listen {
    /// `host:port` to accept MySQL clients on.
    pub address: String,
    /// Seconds a shutdown waits for in-flight statements before closing connections.
    #[serde(default = "default_shutdown_timeout_secs")]
    pub shutdown_timeout_secs: u64,
}

fn default_shutdown_timeout_secs() -> u64 {
    10
}

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
#[derive(Debug, Clone, PartialEq, Deserialize)]
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
}

fn default_connect_timeout_secs() -> u64 {
    5
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
}

impl Default for HistoryTables {
    fn default() -> Self {
        Self { old_table: default_old_table(), extended_table: default_extended_table() }
    }
}

fn default_old_table() -> String {
    "edxapp.courseware_studentmodulehistory".to_owned()
}

fn default_extended_table() -> String {
    "edxapp_csmh.coursewarehistoryextended_studentmodulehistoryextended".to_owned()
}

/// `[flags]`: edx-platform's feature flags, under their edx-platform names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Flags {
    /// New history rows go to the extended table; reads include it.
    #[serde(rename = "ENABLE_CSMH_EXTENDED", default)]
    pub enable_csmh_extended: bool,
    /// Reads include the old table.
    #[serde(rename = "ENABLE_READING_FROM_MULTIPLE_HISTORY_TABLES", default)]
    pub enable_reading_from_multiple_history_tables: bool,
    /// The old table is retired: nothing reaches it any more.
    #[serde(rename = "READ_ONLY_FROM_CSMHE", default)]
    pub read_only_from_csmhe: bool,
}

/// Why a `proxy.toml` was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// What the OS said.
        source: std::io::Error,
    },
    /// TOML syntax, an unknown key or a wrong type; the message names the line and key.
    #[error("{0}")]
    Syntax(String),
    /// The file parsed but says something the proxy cannot do.
    #[error("{0}")]
    Invalid(String),
}

impl Config {
    /// Reads and validates the file at `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| ConfigError::Read { path: path.display().to_string(), source })?;
        Config::parse(&text)
    }

    /// Parses and validates the text of a `proxy.toml`.
    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| ConfigError::Syntax(e.to_string()))?;
        Ok(config)
    }
}
