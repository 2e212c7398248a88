//! A fleet of proxies reading the same configuration file (replicas, or one per LMS pod): what each one runs,
//! asked of its admin listener's `/config`, and whether they agree. `csmh-proxy fleet` prints it; `truncate-old`
//! refuses to empty the old table while any proxy it knows of may still read or write it.
//!
//! Proxies are found from a list of admin addresses, the configuration's own `[admin] address`, and the addresses
//! of one DNS name (a Kubernetes headless Service resolves to every ready pod).

use std::fmt;
use std::time::Duration;

use serde::Deserialize;

use crate::admin::{FlagsView, ShadowView, http_get};
use crate::config::Config;
use crate::metrics::ShadowCounts;

/// How long one proxy has to answer `/config`.
const ASK_TIMEOUT: Duration = Duration::from_secs(3);

/// Where to find the fleet's admin listeners, on the command line.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct FleetArgs {
    /// A proxy's admin listener, `host:port` (may be given several times).
    #[arg(long = "admin", value_name = "HOST:PORT")]
    pub admins: Vec<String>,
    /// A DNS name whose addresses are the proxies' admin listeners, with their port (`name:port`), such as a
    /// Kubernetes headless Service.
    #[arg(long, value_name = "NAME:PORT")]
    pub dns: Option<String>,
}

/// What one proxy said it runs.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Running {
    /// The generation of its configuration.
    pub generation: u64,
    /// Its flags, under their edx-platform names.
    pub flags: FlagsView,
    /// Its stage.
    pub routing: RunningRouting,
    /// Its shadow comparison (absent from proxies older than `[shadow]`: off).
    #[serde(default)]
    pub shadow: ShadowView,
}

/// The stage of a [`Running`] proxy.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct RunningRouting {
    /// The stage's identifier, as `/config` gives it (`old_table_retired` once the old table is retired).
    pub stage: String,
}

/// The stage at which no statement reaches the old table any more.
const RETIRED: &str = "old_table_retired";

/// One proxy of the fleet: where it was asked, and what it answered.
#[derive(Debug, Clone)]
pub struct Member {
    /// Its admin listener.
    pub address: String,
    /// What it runs, or why it could not be asked.
    pub answer: Result<Running, String>,
}

/// The fleet as surveyed.
#[derive(Debug, Clone, Default)]
pub struct Fleet {
    /// Each proxy, in the order found.
    pub members: Vec<Member>,
    /// Why the DNS name could not be resolved, if it could not.
    pub dns_error: Option<String>,
}

impl Fleet {
    /// Asks every proxy `args` and `config` name at once.
    pub async fn survey(args: &FleetArgs, config: Option<&Config>) -> Fleet {
        let configured = config.and_then(|c| c.admin.as_ref()).map(|a| a.address.as_str());
        let mut addresses: Vec<String> = configured_member(configured, args).into_iter().collect();
        addresses.extend(args.admins.iter().cloned());
        let mut dns_error = None;
        if let Some(name) = &args.dns {
            match tokio::net::lookup_host(name.as_str()).await {
                Ok(found) => addresses.extend(found.map(|address| address.to_string())),
                Err(error) => dns_error = Some(format!("{name}: {error}")),
            }
        }
        addresses.dedup();
        let mut asks = tokio::task::JoinSet::new();
        for (index, address) in addresses.into_iter().enumerate() {
            asks.spawn(async move { (index, Member { answer: ask(&address).await, address }) });
        }
        let mut members: Vec<(usize, Member)> = asks.join_all().await;
        members.sort_by_key(|(index, _)| *index);
        Fleet { members: members.into_iter().map(|(_, member)| member).collect(), dns_error }
    }

    /// Whether every proxy answered, and all run the same flags.
    pub fn agrees(&self) -> bool {
        let mut flags = self.members.iter().map(|member| member.answer.as_ref().map(|running| running.flags));
        let Some(Ok(first)) = flags.next() else { return false };
        self.dns_error.is_none() && flags.all(|other| other == Ok(first))
    }

    /// The shadow comparison's counts added up over the proxies that answered and compare reads; `None` when
    /// none does.
    pub fn shadow(&self) -> Option<ShadowTotals> {
        let comparing = self
            .members
            .iter()
            .filter_map(|member| member.answer.as_ref().ok())
            .map(|running| &running.shadow)
            .filter(|shadow| shadow.sample > 0.0);
        comparing.fold(None, |totals: Option<ShadowTotals>, shadow| {
            let mut totals = totals.unwrap_or_default();
            totals.proxies += 1;
            totals.counts += shadow.counts;
            Some(totals)
        })
    }

    /// The proxies that may still read or write the old table, or could not be asked: `truncate-old` refuses
    /// while there is any.
    pub fn not_retired(&self) -> Vec<&Member> {
        let retired = |member: &&Member| member.answer.as_ref().is_ok_and(|running| running.routing.stage == RETIRED);
        self.members.iter().filter(|member| !retired(member)).collect()
    }
}

/// The configuration's own `[admin] address`, as a proxy to ask besides those `args` name. A wildcard host
/// (`0.0.0.0`, `[::]`) names whatever machine reads the file: the proxy there when nothing else is named, but none
/// at all from another container reading the same file (a Tutor or Kubernetes job), so it is left out when `args`
/// name the proxies.
fn configured_member(admin: Option<&str>, args: &FleetArgs) -> Option<String> {
    let admin = admin?;
    let wildcard = admin.parse::<std::net::SocketAddr>().is_ok_and(|address| address.ip().is_unspecified());
    let named = !args.admins.is_empty() || args.dns.is_some();
    (!(wildcard && named)).then(|| admin.to_owned())
}

/// The shadow comparison's counts over a fleet (docs/routing.md, "Shadow comparison").
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct ShadowTotals {
    /// Proxies that compare reads.
    pub proxies: usize,
    /// Their counts added up.
    #[serde(flatten)]
    pub counts: ShadowCounts,
}

impl fmt::Display for ShadowTotals {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let counts = &self.counts;
        write!(
            f,
            "{} reads compared on {} proxies since they started: {} matching, {} differing, {} inconclusive ({} \
             skipped, {} failed)",
            counts.compared,
            self.proxies,
            counts.matching,
            counts.differing,
            counts.inconclusive,
            counts.skipped,
            counts.failed
        )?;
        match counts.last_differing_seconds_ago {
            Some(ago) => write!(
                f,
                "; DIFFERENCES: the extended table alone would not give every read its answer (the proxies' logs \
                 name the ids; run `csmh-proxy verify`); the last differing read {} ago, {} reads compared since",
                Ago(ago),
                counts.compared_since_last_differing
            ),
            None if counts.differing > 0 => write!(
                f,
                "; DIFFERENCES: the extended table alone would not give every read its answer (the proxies' logs \
                 name the ids; run `csmh-proxy verify`)"
            ),
            None => Ok(()),
        }
    }
}

/// A number of seconds as an operator reads it: `42 s`, `17 min`, `3 h 5 min`.
struct Ago(u64);

impl fmt::Display for Ago {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            secs if secs < 120 => write!(f, "{secs} s"),
            secs if secs < 7_200 => write!(f, "{} min", secs / 60),
            secs => write!(f, "{} h {} min", secs / 3_600, secs % 3_600 / 60),
        }
    }
}

/// Asks one proxy's `/config`.
async fn ask(address: &str) -> Result<Running, String> {
    let (status, body) = tokio::time::timeout(ASK_TIMEOUT, http_get(address, "/config"))
        .await
        .map_err(|_| format!("no answer within {} s", ASK_TIMEOUT.as_secs()))?
        .map_err(|error| error.to_string())?;
    if status != 200 {
        return Err(format!("/config answered {status}"));
    }
    serde_json::from_slice(&body).map_err(|error| format!("/config is not a csmh-proxy's: {error}"))
}

/// The fleet as `csmh-proxy fleet` prints it: a line per proxy, then the verdict.
impl fmt::Display for Fleet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(error) = &self.dns_error {
            writeln!(f, "DNS: {error}")?;
        }
        if self.members.is_empty() {
            return writeln!(f, "no proxy to ask: give --admin HOST:PORT or --dns NAME:PORT, or [admin] address");
        }
        for member in &self.members {
            match &member.answer {
                Ok(running) => writeln!(
                    f,
                    "{:<24} generation {:<4} {:<28} ENABLE_CSMH_EXTENDED={} ENABLE_READING_FROM_MULTIPLE_HISTORY_TABLES={} \
                     READ_ONLY_FROM_CSMHE={}",
                    member.address,
                    running.generation,
                    running.routing.stage,
                    running.flags.enable_csmh_extended,
                    running.flags.enable_reading_from_multiple_history_tables,
                    running.flags.read_only_from_csmhe
                )?,
                Err(error) => writeln!(f, "{:<24} unreachable: {error}", member.address)?,
            }
        }
        if let Some(shadow) = self.shadow() {
            writeln!(f, "shadow reads: {shadow}")?;
        }
        if self.agrees() {
            writeln!(f, "agree: yes, {} proxies run the same flags", self.members.len())
        } else {
            writeln!(f, "agree: NO: wait until every proxy runs the same flags before the next step")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wildcard_admin_address_is_asked_only_when_nothing_else_is_named() {
        let none = FleetArgs::default();
        let dns = FleetArgs { dns: Some("csmh-proxy-admin:6080".to_owned()), ..FleetArgs::default() };
        let admin = FleetArgs { admins: vec!["10.0.0.7:6080".to_owned()], ..FleetArgs::default() };
        assert_eq!(configured_member(Some("0.0.0.0:6080"), &none).as_deref(), Some("0.0.0.0:6080"));
        assert_eq!(configured_member(Some("0.0.0.0:6080"), &dns), None);
        assert_eq!(configured_member(Some("[::]:6080"), &admin), None);
        assert_eq!(configured_member(Some("127.0.0.1:6080"), &dns).as_deref(), Some("127.0.0.1:6080"));
        assert_eq!(configured_member(Some("proxy.internal:6080"), &dns).as_deref(), Some("proxy.internal:6080"));
        assert_eq!(configured_member(None, &none), None);
    }
}
