//! The same database on two MariaDB servers, one reached directly and the other through the proxy (every flag
//! off), for tests that compare a server's responses with the responses relayed by the proxy byte for byte.

use std::net::{Ipv4Addr, SocketAddr};

use csmh_proxy::backend::{Credentials, LOGIN_CAPABILITIES};
use csmh_proxy::sandbox::ProxyToml;
use csmh_proxy::server::ProxyHandle;
use mysql_async::prelude::Queryable;
use mysql_common::constants::CapabilityFlags;

use super::raw::RawClient;

/// The same database on two servers, one reached directly and the other through the proxy, so that both
/// sides start from the same state and name the same schema in their metadata.
pub struct Twins {
    /// The database's name, on both servers.
    pub database: String,
    /// The address of the server reached directly.
    pub direct: SocketAddr,
    /// The proxy in front of the other server.
    pub proxy: ProxyHandle,
}

impl Twins {
    /// A new database on both shared servers, and a proxy in front of the second one.
    pub async fn new() -> Twins {
        let (direct, behind_proxy) = (super::server().await, super::second_server().await);
        let database = super::fresh_database(&direct, "raw").await;
        super::create_database(&behind_proxy, &database).await;
        let any_port = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
        let config = ProxyToml::edx(any_port, behind_proxy.addr(), behind_proxy.addr()).config().unwrap();
        Twins { database, direct: direct.addr(), proxy: super::start_proxy(config).await }
    }

    /// Logs in directly and through the proxy with the same capabilities.
    pub async fn clients(&self, capabilities: CapabilityFlags) -> (RawClient, RawClient) {
        let app = super::app();
        let credentials =
            Credentials { user: app.user, password: Some(app.password), database: Some(self.database.clone()) };
        let direct = RawClient::connect(&self.direct.to_string(), &credentials, capabilities).await;
        let proxied = RawClient::connect(&self.proxy.addr().to_string(), &credentials, capabilities).await;
        (direct, proxied)
    }

    /// Runs `sql` as root on both servers, outside the comparison.
    pub async fn setup(&self, sql: &str) {
        for server in [super::server().await, super::second_server().await] {
            let mut root = super::root_conn(&server).await;
            root.query_drop(format!("USE `{}`", self.database)).await.unwrap();
            root.query_drop(sql).await.unwrap();
        }
    }
}

/// The capability sets responses are compared under: with CLIENT_DEPRECATE_EOF, without it (classic EOF
/// packets), and without CLIENT_SESSION_TRACK.
pub fn capability_sets() -> [CapabilityFlags; 3] {
    let multi = CapabilityFlags::CLIENT_MULTI_STATEMENTS | CapabilityFlags::CLIENT_FOUND_ROWS;
    [
        LOGIN_CAPABILITIES | multi,
        (LOGIN_CAPABILITIES | multi) - CapabilityFlags::CLIENT_DEPRECATE_EOF,
        (LOGIN_CAPABILITIES | CapabilityFlags::CLIENT_MULTI_STATEMENTS) - CapabilityFlags::CLIENT_SESSION_TRACK,
    ]
}
