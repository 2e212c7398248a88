//! The `connect` bench's workload of a site whose extended table is on a server of its own, across a network: each
//! connection (one web request of edxapp's) runs edxapp's history read of one module, as a problem's page or the
//! staff's submission history does. Through the proxy with the flags off and through HAProxy the read goes to the
//! old table on the main server (A); through the proxy with `ENABLE_CSMH_EXTENDED` it is rewritten to the
//! extended table on a second server (B), over the proxy's own connection there, with the connections kept
//! between sessions (`[backends.csmh] keep_idle`, the default) and without (`keep_idle = 0`). A delay line of the
//! same round trip is before each server; the relays run beside the client.

use std::net::SocketAddr;
use std::time::Duration;

use csmh_proxy::history::Flags;
use csmh_proxy::sandbox::{
    Account, CSMH_DB, EXTENDED_TABLE, MariaDb, OLD_TABLE, ProxyToml, create_edxapp_tables, create_extended_table,
};

use super::DATABASE;
use super::site::SiteTarget;
use super::support::delay::DelayLine;
use super::support::processes::{HaProxy, ProxyProcess};

/// edxapp's history read of one module, as Django writes it (`filter(student_module_id=…).order_by('-id')`).
pub const HISTORY_READ: &str = "SELECT `courseware_studentmodulehistory`.`id`, \
    `courseware_studentmodulehistory`.`version`, `courseware_studentmodulehistory`.`created`, \
    `courseware_studentmodulehistory`.`state`, `courseware_studentmodulehistory`.`grade`, \
    `courseware_studentmodulehistory`.`max_grade`, `courseware_studentmodulehistory`.`student_module_id` \
    FROM `courseware_studentmodulehistory` WHERE `courseware_studentmodulehistory`.`student_module_id` = 7 \
    ORDER BY `courseware_studentmodulehistory`.`id` DESC";

/// The second server, with the extended table; the old table is created on the main server beside it.
pub struct HistoryServers {
    b: MariaDb,
}

impl HistoryServers {
    /// The history tables, both empty (the read is an index lookup either way): the old one in [`DATABASE`] on
    /// `a`, the extended one on a second server started here, which the application account may use.
    pub async fn start(a: &MariaDb) -> anyhow::Result<HistoryServers> {
        let b = MariaDb::start().await?;
        let mut on_a = mysql_async::Conn::new(a.root_opts()).await?;
        create_edxapp_tables(&mut on_a, DATABASE).await?;
        on_a.disconnect().await?;
        let mut on_b = mysql_async::Conn::new(b.root_opts()).await?;
        create_extended_table(&mut on_b, CSMH_DB, 1).await?;
        on_b.disconnect().await?;
        b.create_account(&Account::app(), &[CSMH_DB]).await?;
        Ok(HistoryServers { b })
    }

    /// The second server's process.
    pub fn pid(&self) -> u32 {
        self.b.pid()
    }
}

/// Both servers across a network, and the relays beside the client.
pub struct HistorySite {
    pub rtt: Duration,
    // Relays before the lines they connect through.
    haproxy: HaProxy,
    flags_off: ProxyProcess,
    keep_none: ProxyProcess,
    keep_default: ProxyProcess,
    near_a: DelayLine,
    _near_b: DelayLine,
}

impl HistorySite {
    /// Delay lines of round trip `rtt` before `a` and the second server of `servers`, and the relays.
    pub fn start(a: SocketAddr, servers: &HistoryServers, rtt: Duration) -> anyhow::Result<HistorySite> {
        let (near_a, near_b) = (DelayLine::start(a, rtt)?, DelayLine::start(servers.b.addr(), rtt)?);
        let (a_far, b_far) = (near_a.addr, near_b.addr);
        let toml = |flags: Flags, csmh_keep_idle| {
            move |listen| ProxyToml {
                old_table: format!("{DATABASE}.{OLD_TABLE}"),
                extended_table: format!("{CSMH_DB}.{EXTENDED_TABLE}"),
                flags,
                csmh_keep_idle,
                ..ProxyToml::edx(listen, a_far, b_far)
            }
        };
        let rewrite = Flags { enable_csmh_extended: true, ..Flags::default() };
        Ok(HistorySite {
            rtt,
            haproxy: HaProxy::start(a_far)?,
            flags_off: ProxyProcess::start_with(toml(Flags::default(), None), "")?,
            keep_none: ProxyProcess::start_with(toml(rewrite, Some(0)), "")?,
            keep_default: ProxyProcess::start_with(toml(rewrite, None), "")?,
            near_a,
            _near_b: near_b,
        })
    }

    /// What the report calls its workload.
    pub fn label(&self) -> String {
        format!("history read, servers {} µs round trip away", self.rtt.as_micros())
    }

    /// Direct to A, HAProxy to A, the proxy with the flags off (A), rewriting to B without and with kept
    /// connections.
    pub fn targets(&self) -> Vec<SiteTarget> {
        vec![
            SiteTarget::direct("direct, old table", self.near_a.addr),
            SiteTarget::relayed("HAProxy, old table", self.haproxy.addr, &self.haproxy.process),
            SiteTarget::relayed("proxy, flags off, old table", self.flags_off.addr, &self.flags_off.process),
            SiteTarget::relayed(
                "proxy, rewritten to the csmh server, keep_idle = 0",
                self.keep_none.addr,
                &self.keep_none.process,
            ),
            SiteTarget::relayed(
                "proxy, rewritten to the csmh server, kept connections",
                self.keep_default.addr,
                &self.keep_default.process,
            ),
        ]
    }

    /// The relays' processes.
    pub fn pids(&self) -> Vec<u32> {
        [&self.haproxy.process, &self.flags_off.process, &self.keep_none.process, &self.keep_default.process]
            .map(|p| p.pid())
            .to_vec()
    }
}
