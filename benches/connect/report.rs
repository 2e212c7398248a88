//! The `connect` bench's report: the setup of a run, its tables, and issue 15's targets.

use std::fmt::Write as _;

use csmh_proxy::sandbox::MariaDb;

use super::clients::{Clients, FIRST, PAUSE_US, Pacing, STEPS, Workload};
use super::remote;
use super::site::{self, SiteMeasured};
use super::support::processes::Busy;
use super::support::report::{Header, Spread, mariadb_version, versions};
use super::{Kind, Measured, ServerStatus, Target, VS_DIRECT, VS_HAPROXY};

/// The machine, the versions and the settings of a run.
pub struct Setup {
    pub header: Header,
    /// The server's settings that decide whether it counts connect errors per host.
    pub host_cache: String,
    pub rounds: usize,
    pub iterations: usize,
    pub rate: u32,
    pub seconds: u32,
}

impl Setup {
    pub fn describe(status: &mut ServerStatus, server: &MariaDb, clients: &Clients) -> anyhow::Result<Setup> {
        let mariadb = status.harness.block_on(mariadb_version(server))?;
        let host_cache = status.text(
            "SELECT CONCAT('skip_name_resolve = ', @@skip_name_resolve, ', host_cache_size = ', \
             @@host_cache_size, ', max_connect_errors = ', @@max_connect_errors, ', performance_schema = ', \
             @@performance_schema)",
        )?;
        let options = clients.options;
        let versions = format!("{}, {}", versions(&mariadb)?, clients.versions()?);
        Ok(Setup {
            header: Header::new(&options.command, versions),
            host_cache,
            rounds: options.rounds,
            iterations: options.iterations,
            rate: options.rate,
            seconds: options.seconds,
        })
    }
}

/// A column of a report's table: its heading, and its cell for target `i`'s runs of a workload.
pub type Column<'a> = (&'a str, &'a dyn Fn(&Measured, usize) -> String);

/// Everything the bench prints and writes.
pub struct Report {
    pub setup: Setup,
    pub targets: Vec<Target>,
    pub results: Vec<Measured>,
    /// The TLS workload, with targets of its own.
    pub tls: SiteMeasured,
    /// The workloads with the server across a network, one per round trip.
    pub remote: Vec<SiteMeasured>,
    /// The workloads of a site with its extended table on a server of its own, one per round trip.
    pub history: Vec<SiteMeasured>,
    pub busy: Busy,
}

impl Report {
    /// The Markdown of the measured part of the `connect` section.
    pub fn render(&self) -> String {
        let parts: [fn(&Report, &mut String); 8] = [
            Report::render_setup,
            Report::render_latencies,
            Report::render_steps,
            Report::render_sites,
            Report::render_rates,
            Report::render_counters,
            Report::render_targets,
            Report::render_runs,
        ];
        let mut out = String::new();
        for part in parts {
            part(self, &mut out);
        }
        out
    }

    /// The index of the target of `kind`.
    fn index(&self, kind: Kind) -> Option<usize> {
        self.targets.iter().position(|t| t.kind == kind)
    }

    fn render_setup(&self, out: &mut String) {
        let s = &self.setup;
        let names: Vec<&str> = self.targets.iter().map(Target::name).collect();
        s.header.render(out);
        let _ = writeln!(
            out,
            "- One MariaDB server (sandbox settings, no TLS; {}); HAProxy in `mode tcp`; `csmh-proxy serve` (the \
             `bench` profile = `release`), every flag off, pool on = the default configuration, pool off = \
             `[backends.edxapp.preconnect] max = 0`. Targets: {}.",
            s.host_cache,
            names.join(", ")
        );
        let _ = writeln!(
            out,
            "- {} round(s) per workload, every target once a round (the order turned by one each round): \
             mysqlclient {} connections with a {} ms pause after each, and {} at a steady {}/s; PyMySQL {} with \
             the same pause, timed step by step; sysbench {} s per run. {}\n",
            s.rounds,
            s.iterations,
            PAUSE_US / 1000,
            s.iterations / 2,
            s.rate,
            s.iterations / 2,
            s.seconds,
            self.busy.sentence()
        );
        let _ = writeln!(
            out,
            "Medians (min–max) over the rounds; ratios are the median (min–max) of the per-round ratios. Latency \
             is per connection: connect, login, the driver's `SET NAMES` and `SET autocommit = 0`, `SELECT 1`, \
             fetch, close. \"First {FIRST}\" is the median of each \
             run's first {FIRST} connections (a cold start: no pool connection is left from the run before). CPU \
             is the relay process's CPU time (all threads) per connection.\n"
        );
    }

    /// The mysqlclient table: one row per workload and target.
    fn render_latencies(&self, out: &mut String) {
        let (direct, haproxy) = (self.index(Kind::Direct), self.index(Kind::HaProxy));
        let columns: [Column; 7] = [
            ("p50 µs", &|m, i| m.spread(i, |s| s.client.p50).rate()),
            ("p99 µs", &|m, i| m.spread(i, |s| s.client.p99).rate()),
            (&format!("first {FIRST} µs"), &|m, i| m.spread(i, |s| s.client.first.unwrap_or(f64::NAN)).rate()),
            ("conn/s", &|m, i| m.spread(i, |s| s.client.per_second).rate()),
            ("relay CPU µs/conn", &|m, i| Spread::micros(m.relay_cpu(i))),
            ("p50 / direct", &|m, i| self.proxy_ratio(i, direct, |j| m.p50_ratio(i, j))),
            ("p50 / HAProxy", &|m, i| self.proxy_ratio(i, haproxy, |j| m.p50_ratio(i, j))),
        ];
        self.render_table(out, "workload", |w| matches!(w, Workload::Mysqlclient(_) | Workload::Steps), &columns);
    }

    /// The PyMySQL runs step by step: one row per step, one column per target, each cell the median over the
    /// rounds of the step's p50 (min–max).
    fn render_steps(&self, out: &mut String) {
        let Some(m) = self.results.iter().find(|m| matches!(m.workload, Workload::Steps)) else { return };
        let names: Vec<&str> = self.targets.iter().map(Target::name).collect();
        let _ = writeln!(
            out,
            "{}, step by step (p50 µs of each step; connect: PyMySQL's set-up and the TCP connect, greeting: \
             reading the server's greeting, login: its round trip, setup: `SET NAMES` and `SET AUTOCOMMIT = 0`, \
             statement: `SELECT 1`, close: `COM_QUIT` and the socket's close):\n",
            m.workload.label(self.setup.rate)
        );
        let _ = writeln!(out, "| step | {} |", names.join(" | "));
        let _ = writeln!(out, "|---|{}", "--:|".repeat(names.len()));
        for (step, name) in STEPS.iter().enumerate() {
            let cells: Vec<String> = (0..self.targets.len())
                .map(|i| m.spread(i, |s| s.client.steps.map_or(f64::NAN, |steps| steps[step])).rate())
                .collect();
            let _ = writeln!(out, "| {name} | {} |", cells.join(" | "));
        }
        out.push('\n');
    }

    /// The workloads on sites of their own: the TLS one, then those with the server across a network.
    fn render_sites(&self, out: &mut String) {
        let iterations = self.setup.iterations / 4;
        let _ = writeln!(
            out,
            "{}: a server with TLS (a certificate from a test authority, which every TLS client verifies), {} \
             connections a run with a {} ms pause after each:\n",
            self.tls.label,
            iterations,
            PAUSE_US / 1000
        );
        render_site(out, &self.tls);
        let Some(first) = self.remote.first() else { return };
        let _ = writeln!(
            out,
            "The server across a network (a delay line before it holds every byte half the round trip each way, and \
             a new connection's greeting two round trips; direct clients cross it too, the relays run beside the \
             client), {} connections a run with a {} ms pause after each, e.g. {}:\n",
            iterations,
            PAUSE_US / 1000,
            first.label
        );
        for m in &self.remote {
            render_site(out, m);
        }
        let Some(first) = self.history.first() else { return };
        let _ = writeln!(
            out,
            "A site whose extended table is on a server of its own, both servers across a network (a delay line \
             before each), each connection running edxapp's history read of one module instead of `SELECT 1`: to \
             the old table directly, through HAProxy and through the proxy with the flags off; rewritten by the \
             proxy to the extended table on the second server (`ENABLE_CSMH_EXTENDED`), with `keep_idle = 0` (a \
             connection to that server opened and logged in per client) and with the default (connections kept \
             between clients). {} connections a run, e.g. {}:\n",
            iterations, first.label
        );
        for m in &self.history {
            render_site(out, m);
        }
    }

    /// The sysbench table: one row per thread count and target.
    fn render_rates(&self, out: &mut String) {
        let (direct, haproxy) = (self.index(Kind::Direct), self.index(Kind::HaProxy));
        let columns: [Column; 7] = [
            ("conn/s", &|m, i| m.spread(i, |s| s.client.per_second).rate()),
            ("p50 µs", &|m, i| m.spread(i, |s| s.client.p50).rate()),
            ("p95 µs", &|m, i| m.spread(i, |s| s.client.p95).rate()),
            ("p99 µs", &|m, i| m.spread(i, |s| s.client.p99).rate()),
            ("relay CPU µs/conn", &|m, i| Spread::micros(m.relay_cpu(i))),
            ("rate / direct", &|m, i| self.proxy_ratio(i, direct, |j| m.rate_ratio(i, j))),
            ("rate / HAProxy", &|m, i| self.proxy_ratio(i, haproxy, |j| m.rate_ratio(i, j))),
        ];
        self.render_table(out, "sysbench", |w| matches!(w, Workload::Sysbench { .. }), &columns);
    }

    /// The server's counters per workload and target, summed over the rounds.
    fn render_counters(&self, out: &mut String) {
        let _ = writeln!(
            out,
            "Server counters, deltas over each target's runs summed over the rounds, a pool-on run's until its \
             unused connections have expired (Threads_connected: 100 ms after the client's end minus the run's \
             start, min–max over the rounds):\n"
        );
        let columns: [Column; 5] = [
            ("client connections", &|m, i| m.client_connections(i).to_string()),
            ("Connections", &|m, i| m.counters(i).0.connections.to_string()),
            ("Aborted_connects", &|m, i| m.counters(i).0.aborted_connects.to_string()),
            ("Threads_created", &|m, i| m.counters(i).0.threads_created.to_string()),
            ("Threads_connected", &|m, i| format!("{:.0}–{:.0}", m.counters(i).1.min, m.counters(i).1.max)),
        ];
        self.render_table(out, "workload", |_| true, &columns);
    }

    /// A table with a row per target of each workload `rows` keeps: the workload, the target, then `columns`.
    fn render_table(&self, out: &mut String, first: &str, rows: impl Fn(&Workload) -> bool, columns: &[Column]) {
        let headings: Vec<&str> = columns.iter().map(|(heading, _)| *heading).collect();
        let _ = writeln!(out, "| {first} | target | {} |", headings.join(" | "));
        let _ = writeln!(out, "|---|---|{}", "--:|".repeat(columns.len()));
        for m in self.results.iter().filter(|m| rows(m.workload)) {
            for (i, target) in self.targets.iter().enumerate() {
                let cells: Vec<String> = columns.iter().map(|(_, cell)| cell(m, i)).collect();
                let label = m.workload.label(self.setup.rate);
                let _ = writeln!(out, "| {label} | {} | {} |", target.name(), cells.join(" | "));
            }
        }
        out.push('\n');
    }

    /// Target `i`'s ratio to target `to` (`ratio(to)`) if `i` is a proxy, else `–`.
    fn proxy_ratio(&self, i: usize, to: Option<usize>, ratio: impl Fn(usize) -> Spread) -> String {
        match (self.targets[i].is_proxy(), to) {
            (true, Some(to)) => ratio(to).ratio(),
            _ => "–".to_owned(),
        }
    }

    /// Issue 15's targets on the paced mysqlclient runs, and the same yardstick on the steady ones.
    fn render_targets(&self, out: &mut String) {
        let _ = writeln!(
            out,
            "Targets (issue 15, mysqlclient paced): proxy pool on p50 ≤ {VS_HAPROXY:.2} × HAProxy p50 and ≤ \
             {VS_DIRECT:.2} × direct p50.\n"
        );
        let (Some(on), Some(haproxy), Some(direct)) =
            (self.index(Kind::PoolOn), self.index(Kind::HaProxy), self.index(Kind::Direct))
        else {
            return;
        };
        for m in &self.results {
            let Workload::Mysqlclient(pacing) = m.workload else { continue };
            let scope = if *pacing == Pacing::Pause { "target" } else { "same yardstick" };
            for (name, over, limit) in [("HAProxy", haproxy, VS_HAPROXY), ("direct", direct, VS_DIRECT)] {
                let ratio = m.p50_ratio(on, over).median;
                let verdict = if ratio <= limit { "met" } else { "**not met**" };
                let _ = writeln!(
                    out,
                    "- {}: pool on / {name} {ratio:.3} ≤ {limit:.2}: {verdict} ({scope})",
                    m.workload.label(self.setup.rate)
                );
            }
            if let Some(off) = self.index(Kind::PoolOff) {
                let gain = m.p50_ratio(on, off);
                let _ = writeln!(out, "- {}: pool on / pool off {}", m.workload.label(self.setup.rate), gain.ratio());
            }
        }
        for m in &self.remote {
            for (name, over, limit) in [("HAProxy", site::HAPROXY, VS_HAPROXY), ("direct", site::DIRECT, VS_DIRECT)] {
                let ratio = m.p50_ratio(remote::POOL_ON, over).median;
                let verdict = if ratio <= limit { "met" } else { "**not met**" };
                let _ = writeln!(
                    out,
                    "- {}: pool on / {name} {ratio:.3} ≤ {limit:.2}: {verdict} (same yardstick)",
                    m.label
                );
            }
        }
        out.push('\n');
    }

    /// Every run's p50, for whoever wants more than medians.
    fn render_runs(&self, out: &mut String) {
        let names: Vec<&str> = self.targets.iter().map(Target::name).collect();
        let _ = writeln!(out, "<details><summary>Every run's p50 in µs ({}, by round)</summary>\n", names.join(" / "));
        for m in &self.results {
            let p50s = m.runs.iter().map(|round| round.iter().map(|s| s.client.p50).collect());
            let _ = writeln!(out, "- {}: {}", m.workload.label(self.setup.rate), by_round(p50s));
        }
        for m in std::iter::once(&self.tls).chain(&self.remote).chain(&self.history) {
            let names: Vec<&str> = m.targets.iter().map(|t| t.name).collect();
            let p50s = m.runs.iter().map(|round| round.iter().map(|s| s.client.p50).collect());
            let _ = writeln!(out, "- {} ({}): {}", m.label, names.join(" / "), by_round(p50s));
        }
        let _ = writeln!(out, "\n</details>");
    }
}

/// A site's table: one row per target, with its ratios to HAProxy and to the direct connection.
fn render_site(out: &mut String, m: &SiteMeasured) {
    let _ = writeln!(out, "| {} | p50 µs | p99 µs | relay CPU µs/conn | p50 / HAProxy | p50 / direct |", m.label);
    let _ = writeln!(out, "|---|--:|--:|--:|--:|--:|");
    for (i, target) in m.targets.iter().enumerate() {
        let ratio = |j: usize| if i == j { "–".to_owned() } else { m.p50_ratio(i, j).ratio() };
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} |",
            target.name,
            m.spread(i, |s| s.client.p50).rate(),
            m.spread(i, |s| s.client.p99).rate(),
            Spread::micros(m.relay_cpu(i)),
            ratio(site::HAPROXY),
            ratio(site::DIRECT)
        );
    }
    out.push('\n');
}

/// Each round's values, rounded to µs and joined by " / ", the rounds by " · ".
fn by_round(rounds: impl Iterator<Item = Vec<f64>>) -> String {
    let rounds: Vec<String> =
        rounds.map(|round| round.iter().map(|v| format!("{v:.0}")).collect::<Vec<_>>().join(" / ")).collect();
    rounds.join(" · ")
}
