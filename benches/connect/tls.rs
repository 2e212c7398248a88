//! The `connect` bench's TLS workload: new mysqlclient connections to a server that serves TLS, as a managed
//! server does, four ways: directly with TLS; through HAProxy, which passes the client's TLS through; through the
//! proxy with the client in plaintext and TLS to the server (the proxy beside edxapp); and through the proxy with
//! TLS on both legs. The server's certificate comes from the tests' authority ([`TestPki`]); every TLS client
//! verifies it, or the proxy's, with that authority's certificate.

use csmh_proxy::sandbox::{Account, MariaDb};
use mysql_async::prelude::Queryable;

use super::DATABASE;
use super::site::SiteTarget;
use super::support::processes::{HaProxy, ProxyProcess};
use super::tls_pki::TestPki;

/// A TLS server, the relays in front of it, and the certificates they use.
pub struct TlsSite {
    // Relays before the server, the authority's files last.
    haproxy: HaProxy,
    plaintext_client: ProxyProcess,
    tls_client: ProxyProcess,
    server: MariaDb,
    pki: TestPki,
}

impl TlsSite {
    /// A MariaDB server with a certificate for `localhost` and `127.0.0.1`, the application account allowed
    /// [`DATABASE`], and the relays.
    pub async fn start() -> anyhow::Result<TlsSite> {
        let pki = TestPki::new("csmh-proxy bench CA");
        let server = MariaDb::start_with(&pki.mariadb_options(&pki.localhost("server"))).await?;
        let mut root = mysql_async::Conn::new(server.root_opts()).await?;
        root.query_drop(format!("CREATE DATABASE {DATABASE}")).await?;
        root.disconnect().await?;
        server.create_account(&Account::app(), &[DATABASE]).await?;
        let ca = pki.ca.display().to_string();
        let to_server = format!("\n[backends.edxapp.tls]\nmode = \"verify-identity\"\nca = \"{ca}\"\n");
        let proxy = pki.localhost("proxy");
        let listen_tls = format!(
            "\n[listen.tls]\ncertificate = \"{}\"\nkey = \"{}\"\n",
            proxy.certificate.display(),
            proxy.key.display()
        );
        Ok(TlsSite {
            haproxy: HaProxy::start(server.addr())?,
            plaintext_client: ProxyProcess::start(server.addr(), &to_server)?,
            tls_client: ProxyProcess::start(server.addr(), &(to_server.clone() + &listen_tls))?,
            server,
            pki,
        })
    }

    /// The relays' processes and the server's.
    pub fn pids(&self) -> Vec<u32> {
        vec![
            self.haproxy.process.pid(),
            self.plaintext_client.process.pid(),
            self.tls_client.process.pid(),
            self.server.pid(),
        ]
    }

    /// Direct with TLS, HAProxy, the proxy with a plaintext client, the proxy with TLS on both legs.
    pub fn targets(&self) -> Vec<SiteTarget> {
        let ca = Some(self.pki.ca.clone());
        vec![
            SiteTarget { name: "direct, client TLS", addr: self.server.addr(), ca: ca.clone(), relay: None },
            SiteTarget {
                name: "HAProxy, client TLS passed through",
                addr: self.haproxy.addr,
                ca: ca.clone(),
                relay: Some(self.haproxy.process.pid()),
            },
            SiteTarget {
                name: "proxy, plaintext client, TLS to the server",
                addr: self.plaintext_client.addr,
                ca: None,
                relay: Some(self.plaintext_client.process.pid()),
            },
            SiteTarget {
                name: "proxy, TLS on both legs",
                addr: self.tls_client.addr,
                ca,
                relay: Some(self.tls_client.process.pid()),
            },
        ]
    }
}
