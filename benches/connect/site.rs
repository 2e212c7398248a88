//! The `connect` bench's workloads on a site of their own: a server reached four ways (directly, through HAProxy,
//! through the proxy two ways), each way a [`SiteTarget`], measured with paced mysqlclient connections in rounds.
//! The TLS site ([`super::tls`]) and the sites with a server across a network ([`super::remote`]) are two.

use std::net::SocketAddr;
use std::path::PathBuf;

use super::clients::{ClientRun, Clients};
use super::support::processes::{ChildGuard, process_cpu_ns};
use super::support::report::Spread;

/// Where a site's ratios are taken against: every site lists its direct target first and HAProxy second.
pub const DIRECT: usize = 0;
/// See [`DIRECT`].
pub const HAPROXY: usize = 1;

/// The connections of the run on each target before the measured ones: the relays' code paths and the server's
/// caches are warm, and a pool has seen clients.
const WARM_UP: usize = 100;

/// One way of connecting to a site's server.
pub struct SiteTarget {
    /// Its name in the report.
    pub name: &'static str,
    pub addr: SocketAddr,
    /// The authority the client verifies the certificate it is shown with; `None`: the client is in plaintext.
    pub ca: Option<PathBuf>,
    /// The relay's process, whose CPU time is counted; none for the server itself.
    pub relay: Option<u32>,
}

impl SiteTarget {
    /// A plaintext client straight to the server (or to a delay line before it) at `addr`.
    pub fn direct(name: &'static str, addr: SocketAddr) -> SiteTarget {
        SiteTarget { name, addr, ca: None, relay: None }
    }

    /// A plaintext client through the relay `process`, listening at `addr`.
    pub fn relayed(name: &'static str, addr: SocketAddr, process: &ChildGuard) -> SiteTarget {
        SiteTarget { name, addr, ca: None, relay: Some(process.pid()) }
    }
}

/// One run against a target: what the client measured, and the relay's CPU time per connection in µs.
#[derive(Clone, Copy, Default)]
pub struct SiteSample {
    pub client: ClientRun,
    pub relay_us: Option<f64>,
}

/// The runs of a site's workload: `runs[round][target]`.
pub struct SiteMeasured {
    /// What the report calls the workload.
    pub label: String,
    pub targets: Vec<SiteTarget>,
    pub runs: Vec<Vec<SiteSample>>,
}

impl SiteMeasured {
    /// `value` of target `i`'s runs over the rounds.
    pub fn spread(&self, i: usize, value: impl Fn(&SiteSample) -> f64) -> Spread {
        Spread::of(self.runs.iter().map(|round| value(&round[i])).collect())
    }

    /// Target `i`'s p50 over target `j`'s, round by round.
    pub fn p50_ratio(&self, i: usize, j: usize) -> Spread {
        Spread::of(self.runs.iter().map(|round| round[i].client.p50 / round[j].client.p50).collect())
    }

    /// Target `i`'s relay CPU time per connection over the rounds, if it is a relay.
    pub fn relay_cpu(&self, i: usize) -> Option<Spread> {
        let values: Vec<f64> = self.runs.iter().filter_map(|round| round[i].relay_us).collect();
        (!values.is_empty()).then(|| Spread::of(values))
    }
}

/// How a site's workload runs: `rounds` rounds, each a paced mysqlclient loop of `iterations` connections on each
/// target, each connection running `statement` (`SELECT 1` if none).
pub struct Runs {
    pub rounds: usize,
    pub iterations: usize,
    pub statement: Option<&'static str>,
}

/// `runs.rounds` rounds, each running every target once (the order turned by one each round); before them, a
/// short run on each target that is not counted.
pub fn measure(label: String, targets: Vec<SiteTarget>, clients: &Clients, runs: Runs) -> anyhow::Result<SiteMeasured> {
    let Runs { rounds, iterations, statement } = runs;
    for target in &targets {
        run_once(target, clients, WARM_UP, statement)?;
    }
    let mut runs = Vec::with_capacity(rounds);
    for round in 0..rounds {
        let mut samples = vec![SiteSample::default(); targets.len()];
        for i in (0..targets.len()).map(|k| (k + round) % targets.len()) {
            samples[i] = run_once(&targets[i], clients, iterations, statement)?;
        }
        let p50s: Vec<String> = samples.iter().map(|s| format!("{:.0}", s.client.p50)).collect();
        eprintln!("{label} round {}/{rounds}: p50 {} µs", round + 1, p50s.join(" / "));
        runs.push(samples);
    }
    Ok(SiteMeasured { label, targets, runs })
}

fn run_once(
    target: &SiteTarget,
    clients: &Clients,
    iterations: usize,
    statement: Option<&str>,
) -> anyhow::Result<SiteSample> {
    let cpu_before = target.relay.map(process_cpu_ns).transpose()?;
    let client = clients.mysqlclient_paced(target.addr.port(), iterations, target.ca.as_deref(), statement)?;
    let cpu_after = target.relay.map(process_cpu_ns).transpose()?;
    let relay_us = cpu_before
        .zip(cpu_after)
        .map(|(before, after)| after.saturating_sub(before) as f64 / 1000.0 / client.connections.max(1) as f64);
    Ok(SiteSample { client, relay_us })
}
