//! What `csmh-proxy check-config` prints: the effective configuration an operator confirms before a deploy
//! (topology, tables, flags, routing), with no secrets.

use std::fmt;
use std::path::Path;

use super::{Backend, Config, ConfigError};
use crate::history::{Flag, routing_table};

/// Loads and validates the file at `path` and describes it, or returns the error a reload of it would log.
pub fn check_file(path: &Path) -> Result<String, ConfigError> {
    Config::load(path).map(|config| report(&config))
}

/// The check-config report of a valid configuration: "configuration OK", the listeners, the topology, the table
/// names, the flags and the routing table they imply. Passwords are never shown, only where they come from.
pub fn report(config: &Config) -> String {
    Report(config).to_string()
}

/// A configuration as check-config describes it.
struct Report<'a>(&'a Config);

impl fmt::Display for Report<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "configuration OK")?;
        self.write_listeners(f)?;
        self.write_topology(f)?;
        self.write_tables(f)?;
        self.write_flags(f)?;
        self.write_routing(f)?;
        self.write_shadow(f)
    }
}

impl Report<'_> {
    /// The client and admin listeners.
    fn write_listeners(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let config = self.0;
        let listen = &config.listen;
        writeln!(f, "listen:          {}", listen.address)?;
        writeln!(
            f,
            "  limits:        {} connections, {} logging in at once within {} s; packets up to {} bytes, history \
             statements parsed up to {} bytes",
            listen.max_connections,
            listen.max_handshakes,
            listen.handshake_timeout_secs,
            listen.max_packet_bytes,
            listen.max_parsed_statement_bytes
        )?;
        let early = if listen.answer_settings_early { "on" } else { "off" };
        writeln!(f, "  setup statements answered early: {early}")?;
        match &listen.tls {
            Some(tls) => {
                let offered = if tls.required { "required" } else { "offered" };
                writeln!(f, "  tls:           {offered}, {}", tls.certificate.describe())?;
            }
            None => writeln!(f, "  tls:           off (plaintext only)")?,
        }
        match &config.admin {
            Some(admin) => writeln!(f, "admin:           {}", admin.address),
            None => writeln!(f, "admin:           off"),
        }
    }

    /// One server or two, with their addresses and how the proxy logs in to the `csmh` one.
    fn write_topology(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let backends = &self.0.backends;
        if backends.same_server() {
            writeln!(f, "topology:        one server, {}", backends.edxapp.address)?;
            writeln!(
                f,
                "  edxapp, csmh:  the client's own connection (reads of both merged from two statements; writes stay atomic)"
            )?;
            writeln!(f, "  tls:           {}", backends.edxapp.tls.mode.as_str())
        } else {
            writeln!(f, "topology:        two servers")?;
            writeln!(
                f,
                "  edxapp:        {} (clients' own logins, relayed; tls {})",
                backends.edxapp.address,
                backends.edxapp.tls.mode.as_str()
            )?;
            writeln!(
                f,
                "  csmh:          {} ({}; tls {})",
                backends.csmh.address,
                login(&backends.csmh),
                backends.csmh.tls.mode.as_str()
            )
        }
    }

    /// The two history tables.
    fn write_tables(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let history = &self.0.history;
        writeln!(f, "old table:       {}", history.old_table)?;
        writeln!(f, "extended table:  {}", history.extended_table)?;
        writeln!(f, "id offset:       {} (where `csmh-proxy init` starts the extended table's ids)", history.id_offset)
    }

    /// `[shadow]`: which share of merged reads is compared with the extended table alone.
    fn write_shadow(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sample = self.0.shadow.sample;
        if !self.0.shadow.is_on() {
            return writeln!(f, "shadow reads:    off");
        }
        writeln!(
            f,
            "shadow reads:    {}% of the reads of both tables also answered from the extended table alone and \
             compared (logging in as [backends.csmh])",
            sample * 100.0
        )
    }

    /// Each flag under its edx-platform name.
    fn write_flags(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "flags:")?;
        for flag in Flag::ALL {
            writeln!(f, "  {} = {}", flag, self.0.flags.is_on(flag))?;
        }
        Ok(())
    }

    /// The stage (the routing table's row, docs/routing.md) that applies and the route of each statement kind.
    fn write_routing(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match routing_table(self.0.flags) {
            Ok(table) => {
                writeln!(f, "routing:         {}", table.stage())?;
                for route in table.to_string().lines() {
                    writeln!(f, "  {route}")?;
                }
                Ok(())
            }
            Err(refused) => writeln!(f, "routing:         refused: {refused}"),
        }
    }
}

/// How the proxy logs in to `backend`: the user and where the password comes from, never the password itself.
fn login(backend: &Backend) -> String {
    let user = backend.user.as_deref().unwrap_or("no user");
    let password = match (&backend.password, &backend.password_env) {
        (_, Some(variable)) => format!("password from ${variable}"),
        (Some(_), None) => "password in the file".to_owned(),
        (None, None) => "no password".to_owned(),
    };
    format!("user {user}, {password}")
}
