//! The `connect` bench's TLS workload: new mysqlclient connections to a server that serves TLS, as a managed
//! server does, four ways: directly with TLS; through HAProxy, which passes the client's TLS through; through the
//! proxy with the client in plaintext and TLS to the server (the proxy beside edxapp); and through the proxy with
//! TLS on both legs. The server's certificate comes from the tests' authority ([`TestPki`]); every TLS client
//! verifies it, or the proxy's, with that authority's certificate.

use std::net::SocketAddr;
use std::path::PathBuf;

use csmh_proxy::sandbox::{Account, MariaDb};
use mysql_async::prelude::Queryable;

use super::clients::{ClientRun, Clients};
use super::support::processes::{HaProxy, ProxyProcess, process_cpu_ns};
use super::support::report::Spread;
use super::tls_pki::TestPki;
use super::{DATABASE, Options};

/// A TLS server, the relays in front of it, and the certificates they use.
pub struct TlsSite {
    // Relays before the server, the authority's files last.
    haproxy: HaProxy,
    plaintext_client: ProxyProcess,
    tls_client: ProxyProcess,
    server: MariaDb,
    pki: TestPki,
}

/// One way of connecting to the TLS server.
pub struct TlsTarget {
    /// Its name in the report.
    pub name: &'static str,
    addr: SocketAddr,
    /// The authority the client verifies the certificate it is shown with; `None`: the client is in plaintext.
    ca: Option<PathBuf>,
    /// The relay's process, whose CPU time is counted.
    relay: Option<u32>,
}

/// Where the ratios of the report are taken against: HAProxy's row and the direct TLS one.
pub const HAPROXY: usize = 1;
/// See [`HAPROXY`].
pub const DIRECT: usize = 0;

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

    /// Direct with TLS, HAProxy, the proxy with a plaintext client, the proxy with TLS on both legs.
    pub fn targets(&self) -> Vec<TlsTarget> {
        let ca = Some(self.pki.ca.clone());
        vec![
            TlsTarget { name: "direct, client TLS", addr: self.server.addr(), ca: ca.clone(), relay: None },
            TlsTarget {
                name: "HAProxy, client TLS passed through",
                addr: self.haproxy.addr,
                ca: ca.clone(),
                relay: Some(self.haproxy.process.pid()),
            },
            TlsTarget {
                name: "proxy, plaintext client, TLS to the server",
                addr: self.plaintext_client.addr,
                ca: None,
                relay: Some(self.plaintext_client.process.pid()),
            },
            TlsTarget {
                name: "proxy, TLS on both legs",
                addr: self.tls_client.addr,
                ca,
                relay: Some(self.tls_client.process.pid()),
            },
        ]
    }
}

/// One run against a TLS target: what the client measured, and the relay's CPU time per connection in µs.
#[derive(Clone, Copy, Default)]
pub struct TlsSample {
    pub client: ClientRun,
    pub relay_us: Option<f64>,
}

/// The runs of the TLS workload: `runs[round][target]`.
pub struct TlsMeasured {
    pub targets: Vec<TlsTarget>,
    pub runs: Vec<Vec<TlsSample>>,
}

impl TlsMeasured {
    /// `value` of target `i`'s runs over the rounds.
    pub fn spread(&self, i: usize, value: impl Fn(&TlsSample) -> f64) -> Spread {
        Spread::of(self.runs.iter().map(|round| value(&round[i])).collect())
    }

    /// Target `i`'s p50 over target `j`'s, round by round.
    pub fn p50_ratio(&self, i: usize, j: usize) -> Spread {
        Spread::of(self.runs.iter().map(|round| round[i].client.p50 / round[j].client.p50).collect())
    }
}

/// `options.rounds` rounds, each running every target once (the order turned by one each round), each run a
/// paced mysqlclient loop of a quarter of `options.iterations` connections.
pub fn measure(site: &TlsSite, clients: &Clients, options: &Options) -> anyhow::Result<TlsMeasured> {
    let targets = site.targets();
    let mut runs = Vec::with_capacity(options.rounds);
    for round in 0..options.rounds {
        let mut samples = vec![TlsSample::default(); targets.len()];
        for i in (0..targets.len()).map(|k| (k + round) % targets.len()) {
            samples[i] = run_once(&targets[i], clients, options.iterations / 4)?;
        }
        let p50s: Vec<String> = samples.iter().map(|s| format!("{:.0}", s.client.p50)).collect();
        eprintln!("TLS round {}/{}: p50 {} µs", round + 1, options.rounds, p50s.join(" / "));
        runs.push(samples);
    }
    Ok(TlsMeasured { targets, runs })
}

fn run_once(target: &TlsTarget, clients: &Clients, iterations: usize) -> anyhow::Result<TlsSample> {
    let cpu_before = target.relay.map(process_cpu_ns).transpose()?;
    let client = clients.mysqlclient_paced(target.addr.port(), iterations, target.ca.as_deref())?;
    let cpu_after = target.relay.map(process_cpu_ns).transpose()?;
    let relay_us = cpu_before
        .zip(cpu_after)
        .map(|(before, after)| after.saturating_sub(before) as f64 / 1000.0 / client.connections.max(1) as f64);
    Ok(TlsSample { client, relay_us })
}
