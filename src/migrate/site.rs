//! The two tables and the two server connections every migration command works with.

use std::sync::Arc;
use std::time::Duration;

use mysql_async::{Conn, Opts, OptsBuilder};

use super::MigrateError;
use super::tls::LoginTls;
use crate::config::{Backend, Config};
use crate::history::Flags;
use crate::history::TableName;
use crate::topology::{self, Topology};

/// What a migration command acts on: the configuration's tables and flags.
#[derive(Debug, Clone)]
pub struct Site {
    /// The old history table, on the `edxapp` backend.
    pub old: TableName,
    /// The extended history table, on the `csmh` backend.
    pub extended: TableName,
    /// The flags in force in the file, which `truncate-old` and `status` consult.
    pub flags: Flags,
    /// Where the two tables live (on one server a copy can run server-side).
    pub topology: Topology,
    edxapp: Server,
    csmh: Server,
}

/// One logged-in connection to each backend. On one server these are still two connections, so a command
/// can read on one while it writes on the other.
pub struct Servers {
    /// The server of the old table.
    pub edxapp: Conn,
    /// The server of the extended table.
    pub csmh: Conn,
}

impl Site {
    /// The site `config` describes, with the TLS files of both backends read and checked. On one server,
    /// `[backends.csmh]` without a `user` logs in as `[backends.edxapp]` does: with its user, and its `[tls]`
    /// (the only one the proxy uses there).
    pub fn new(config: &Config) -> Result<Site, MigrateError> {
        let edxapp = &config.backends.edxapp;
        let topology = Topology::of(&config.backends);
        let (csmh_section, csmh_settings) = match (&config.backends.csmh.user, topology) {
            (None, Topology::OneServer) => (topology::Server::Edxapp, edxapp),
            _ => (topology::Server::Csmh, &config.backends.csmh),
        };
        Ok(Site {
            old: config.history.old()?,
            extended: config.history.extended()?,
            flags: config.flags,
            topology,
            edxapp: Server::new(edxapp, topology::Server::Edxapp, edxapp)?,
            csmh: Server::new(&config.backends.csmh, csmh_section, csmh_settings)?,
        })
    }

    /// Logs in to both servers.
    pub async fn connect(&self) -> Result<Servers, MigrateError> {
        Ok(Servers { edxapp: self.connect_edxapp().await?, csmh: self.connect_csmh().await? })
    }

    /// A new connection to the server of the old table.
    pub async fn connect_edxapp(&self) -> Result<Conn, MigrateError> {
        self.edxapp.connect("edxapp").await
    }

    /// A new connection to the server of the extended table.
    pub async fn connect_csmh(&self) -> Result<Conn, MigrateError> {
        self.csmh.connect("csmh").await
    }
}

/// How to log in to one server.
#[derive(Debug, Clone)]
struct Server {
    /// Everything but TLS.
    opts: Opts,
    /// Shared by the clones, like `opts`.
    tls: Arc<LoginTls>,
    connect_timeout: Duration,
}

/// TCP keepalive on the commands' connections, so that a server that went away is noticed (a `truncate-old`
/// waiting on a dead connection would otherwise keep the old table locked until the server's `wait_timeout`).
const KEEPALIVE: Duration = Duration::from_secs(30);

impl Server {
    /// The server at `backend`'s address and within its timeout, logged in to with the user, password and TLS
    /// of `settings`, the section `[backends.<section>]`.
    fn new(backend: &Backend, section: topology::Server, settings: &Backend) -> Result<Server, MigrateError> {
        let user = settings.user.clone().ok_or(MigrateError::NoUser { backend: section.name() })?;
        let password =
            settings.password().map_err(|source| MigrateError::Password { backend: section.name(), source })?;
        let tls = Arc::new(LoginTls::new(section, settings)?);
        let (host, port) = split_address(&backend.address);
        let opts = OptsBuilder::default()
            .ip_or_hostname(host)
            .tcp_port(port)
            .user(Some(user))
            .pass(password)
            .prefer_socket(false)
            .tcp_nodelay(true)
            .tcp_keepalive(Some(KEEPALIVE))
            // Text crosses every connection as utf8mb4, whatever the server's defaults, so no character is
            // converted away between the two tables.
            .setup(vec!["SET NAMES utf8mb4"])
            .conn_ttl(None::<Duration>)
            .into();
        Ok(Server { opts, tls, connect_timeout: Duration::from_secs(backend.connect_timeout_secs) })
    }

    /// A new connection, logged in within the backend's `connect_timeout_secs` (retries that TLS needs included).
    async fn connect(&self, backend: &'static str) -> Result<Conn, MigrateError> {
        let address = format!("{}:{}", self.opts.ip_or_hostname(), self.opts.tcp_port());
        match tokio::time::timeout(self.connect_timeout, self.tls.connect(&self.opts)).await {
            Ok(Ok(conn)) => Ok(conn),
            Ok(Err(source)) => Err(MigrateError::Connect { backend, address, source: Box::new(source) }),
            Err(_) => Err(MigrateError::ConnectTimeout { backend, address, seconds: self.connect_timeout.as_secs() }),
        }
    }
}

/// `host:port` as written in the configuration (IPv6 hosts in brackets); port 3306 when absent.
fn split_address(address: &str) -> (String, u16) {
    let address = address.trim();
    match address.rsplit_once(':') {
        Some((host, port)) if !host.ends_with(':') => match port.parse() {
            Ok(port) => (host.trim_start_matches('[').trim_end_matches(']').to_owned(), port),
            Err(_) => (address.to_owned(), 3306),
        },
        _ => (address.to_owned(), 3306),
    }
}

#[cfg(test)]
mod tests {
    use super::split_address;

    #[test]
    fn addresses_split_into_host_and_port() {
        assert_eq!(split_address("127.0.0.1:3307"), ("127.0.0.1".to_owned(), 3307));
        assert_eq!(split_address("db.example:3306"), ("db.example".to_owned(), 3306));
        assert_eq!(split_address("[::1]:3306"), ("::1".to_owned(), 3306));
        assert_eq!(split_address("db.example"), ("db.example".to_owned(), 3306));
    }
}
