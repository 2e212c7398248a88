//! Where the two history tables live, in one vocabulary for the whole proxy: the deployment's [`Topology`]
//! (one server or two) and the [`Server`] a statement runs on.

use std::fmt;

use crate::config::Backends;

/// Whether the extended table shares the `edxapp` server or has one of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Topology {
    /// Both tables on one server, reached over the client's own connection: a read of both can be one
    /// statement, and a write to both is one server's transaction.
    OneServer,
    /// The extended table on a separate `csmh` server, reached over a connection of the proxy's own.
    TwoServers,
}

impl Topology {
    /// The topology `[backends]` describes: one server when both addresses are the same
    /// ([`Backends::same_server`]).
    pub fn of(backends: &Backends) -> Topology {
        if backends.same_server() { Topology::OneServer } else { Topology::TwoServers }
    }

    /// The server whose connection reaches the extended table.
    pub fn extended_server(self) -> Server {
        match self {
            Topology::OneServer => Server::Edxapp,
            Topology::TwoServers => Server::Csmh,
        }
    }

    /// How an operator reads it.
    pub fn name(self) -> &'static str {
        match self {
            Topology::OneServer => "one server",
            Topology::TwoServers => "two servers",
        }
    }
}

impl fmt::Display for Topology {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One of the two backend servers, as a connection of a session reaches it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Server {
    /// The client's own connection to the `edxapp` server (which also holds the extended table on one server).
    Edxapp,
    /// The proxy's own connection to a separate `csmh` server.
    Csmh,
}

impl Server {
    /// Both servers, in the order metrics list them.
    pub const BOTH: [Server; 2] = [Server::Edxapp, Server::Csmh];

    /// The name of its `[backends]` section, which is also its metrics label.
    pub fn name(self) -> &'static str {
        match self {
            Server::Edxapp => "edxapp",
            Server::Csmh => "csmh",
        }
    }
}

/// The name of its `[backends]` section.
impl std::fmt::Display for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Backend;

    fn backends(edxapp: &str, csmh: &str) -> Backends {
        let backend = |address: &str| Backend {
            address: address.to_owned(),
            user: None,
            password: None,
            password_env: None,
            connect_timeout_secs: 5,
            read_timeout_secs: 30,
            tls: Default::default(),
            preconnect: None,
            keep_idle: None,
            grants_valid_secs: None,
        };
        Backends { edxapp: backend(edxapp), csmh: backend(csmh) }
    }

    #[test]
    fn one_server_when_the_addresses_match_as_written() {
        assert_eq!(Topology::of(&backends("db:3306", " DB:3306")), Topology::OneServer);
        assert_eq!(Topology::of(&backends("db:3306", "db:3307")), Topology::TwoServers);
        assert_eq!(Topology::OneServer.extended_server(), Server::Edxapp);
        assert_eq!(Topology::TwoServers.extended_server(), Server::Csmh);
    }
}
