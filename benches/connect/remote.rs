//! The `connect` bench's workload with the server on another host, as in production: a [`DelayLine`] puts a
//! network's round trip between the server and everything that connects to it, and the relays run beside the
//! client, as the proxy does beside edxapp (in its pod or on its node). Direct connections cross the same line.
//! This is where a pool of connections opened ahead saves what it was made for: the TCP connect and the greeting
//! are two round trips of the network, not a few µs of loopback.

use std::net::SocketAddr;
use std::time::Duration;

use super::POOL_OFF;
use super::site::SiteTarget;
use super::support::delay::DelayLine;
use super::support::processes::{HaProxy, ProxyProcess};

/// The round trips the workload is measured at: a server in the same zone as its clients, and one in another.
pub const ROUND_TRIPS: [Duration; 2] = [Duration::from_micros(250), Duration::from_millis(1)];

/// A server across a network: the delay line before it, and the relays beside the client.
pub struct RemoteSite {
    pub rtt: Duration,
    // Relays before the line they connect through.
    haproxy: HaProxy,
    pool_off: ProxyProcess,
    pool_on: ProxyProcess,
    line: DelayLine,
}

impl RemoteSite {
    /// A delay line of round trip `rtt` before `server`, HAProxy and the proxy with its pool off and on before it.
    pub fn start(server: SocketAddr, rtt: Duration) -> anyhow::Result<RemoteSite> {
        let line = DelayLine::start(server, rtt)?;
        Ok(RemoteSite {
            rtt,
            haproxy: HaProxy::start(line.addr)?,
            pool_off: ProxyProcess::start(line.addr, POOL_OFF)?,
            pool_on: ProxyProcess::start(line.addr, "")?,
            line,
        })
    }

    /// What the report calls its workload.
    pub fn label(&self) -> String {
        format!("mysqlclient, server {} µs round trip away", self.rtt.as_micros())
    }

    /// Direct across the line, HAProxy, the proxy with its pool off, with its pool on.
    pub fn targets(&self) -> Vec<SiteTarget> {
        vec![
            SiteTarget::direct("direct", self.line.addr),
            SiteTarget::relayed("HAProxy", self.haproxy.addr, &self.haproxy.process),
            SiteTarget::relayed("proxy (pool off)", self.pool_off.addr, &self.pool_off.process),
            SiteTarget::relayed("proxy (pool on)", self.pool_on.addr, &self.pool_on.process),
        ]
    }

    /// The relays' processes.
    pub fn pids(&self) -> Vec<u32> {
        [&self.haproxy.process, &self.pool_off.process, &self.pool_on.process].map(|p| p.pid()).to_vec()
    }
}

/// Index of the pool-on proxy in [`RemoteSite::targets`], whose ratios the targets are read on.
pub const POOL_ON: usize = 3;
