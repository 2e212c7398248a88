//! The two tables and the two server connections every migration command works with.

use std::time::Duration;

use mysql_async::{Conn, Opts, OptsBuilder};

use super::MigrateError;
use crate::config::{Backend, Config, Flags};
use crate::history::TableName;

/// What a migration command acts on: the configuration's tables and flags.
#[derive(Debug, Clone)]
pub struct Site {
    /// The old history table, on the `edxapp` backend.
    pub old: TableName,
    /// The extended history table, on the `csmh` backend.
    pub extended: TableName,
    /// The flags in force in the file, which `truncate-old` and `status` consult.
    pub flags: Flags,
    /// Whether both tables live on one server (then a copy can run server-side).
    pub same_server: bool,
    edxapp: Opts,
    csmh: Opts,
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
    /// The site `config` describes. On one server, `[backends.csmh]` without a `user` logs in as
    /// `[backends.edxapp]`'s user.
    pub fn new(config: &Config) -> Result<Site, MigrateError> {
        let edxapp_login = login("edxapp", &config.backends.edxapp)?;
        let same_server = config.backends.same_server();
        let csmh_login = match (&config.backends.csmh.user, same_server) {
            (None, true) => edxapp_login.clone(),
            _ => login("csmh", &config.backends.csmh)?,
        };
        Ok(Site {
            old: config.history.old()?,
            extended: config.history.extended()?,
            flags: config.flags,
            same_server,
            edxapp: opts(&config.backends.edxapp, edxapp_login),
            csmh: opts(&config.backends.csmh, csmh_login),
        })
    }

    /// Logs in to both servers.
    pub async fn connect(&self) -> Result<Servers, MigrateError> {
        Ok(Servers { edxapp: self.connect_edxapp().await?, csmh: self.connect_csmh().await? })
    }

    /// A new connection to the server of the old table.
    pub async fn connect_edxapp(&self) -> Result<Conn, MigrateError> {
        connect("edxapp", &self.edxapp).await
    }

    /// A new connection to the server of the extended table.
    pub async fn connect_csmh(&self) -> Result<Conn, MigrateError> {
        connect("csmh", &self.csmh).await
    }
}

/// A user and password.
#[derive(Clone)]
struct Login {
    user: String,
    password: Option<String>,
}

fn login(backend: &'static str, config: &Backend) -> Result<Login, MigrateError> {
    let user = config.user.clone().ok_or(MigrateError::NoUser { backend })?;
    let password = config.password().map_err(|source| MigrateError::Password { backend, source })?;
    Ok(Login { user, password })
}

fn opts(backend: &Backend, login: Login) -> Opts {
    let (host, port) = split_address(&backend.address);
    OptsBuilder::default()
        .ip_or_hostname(host)
        .tcp_port(port)
        .user(Some(login.user))
        .pass(login.password)
        .prefer_socket(false)
        .tcp_nodelay(true)
        .conn_ttl(None::<Duration>)
        .into()
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

async fn connect(backend: &'static str, opts: &Opts) -> Result<Conn, MigrateError> {
    Conn::new(opts.clone()).await.map_err(|source| MigrateError::Connect {
        backend,
        address: format!("{}:{}", opts.ip_or_hostname(), opts.tcp_port()),
        source,
    })
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
