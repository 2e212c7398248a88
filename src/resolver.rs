//! The backends' host names, looked up once every [`TTL`] rather than for every connection.
//!
//! A backend named by host name (`mysql:3306`, as Tutor names its server on Kubernetes, or a managed server's
//! DNS name) was looked up for each connection the proxy opened: a blocking `getaddrinfo` on tokio's blocking
//! pool and, on Kubernetes, one or more queries to the cluster's DNS for every new client, on its login's path.
//! Instead:
//! - the addresses are kept for [`TTL`]; an address written as `ip:port` is never looked up;
//! - a name is looked up by one connection at a time: the others wait for that lookup and take its answer;
//! - a lookup gets [`LOOKUP_TIMEOUT`], and runs to its end (and into the cache) even if the connection that
//!   started it gave up;
//! - when a lookup fails or gets no answer while the name had addresses, those are used, and the name is looked
//!   up again after [`RETRY_AFTER_FAILURE`]: a DNS outage does not stop new clients reaching a server that still
//!   runs. A name that never resolved keeps its failure for as long, so its clients do not each ask again;
//! - a failed connect marks the name for a new lookup ([`Resolver::forget`]), keeping its addresses as the
//!   fallback: a server that moved (a managed server's failover points its name elsewhere) is followed by the
//!   next connection.
//!
//! What to do for a name is decided apart from the lookup ([`plan`]), and the lookup is a parameter of
//! [`Resolver::addresses_with`], so the rules are tested without a DNS server.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::time::Instant;
use tracing::{debug, warn};

use crate::metrics::ResolverCounters;

/// How long the addresses a name resolved to are used before it is looked up again.
pub const TTL: Duration = Duration::from_secs(10);

/// After a failed lookup, how long its outcome (the earlier addresses, or the failure) stands.
pub const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(1);

/// How long a lookup may take; glibc waits 5 s for each try of a DNS server that does not answer.
pub const LOOKUP_TIMEOUT: Duration = Duration::from_secs(2);

/// Addresses a name resolved to.
pub type Addresses = Arc<[SocketAddr]>;

/// What is known of the names looked up so far, one cache per proxy.
#[derive(Debug, Default)]
pub struct Resolver {
    /// Shared with the lookups, which store their answer even when no connection waits for it any more.
    names: Arc<Mutex<HashMap<String, Name>>>,
    counters: ResolverCounters,
}

/// A name: its last answer, and the turn its lookups take one at a time.
#[derive(Debug, Default)]
struct Name {
    known: Option<Known>,
    turn: Arc<tokio::sync::Mutex<()>>,
}

/// A name's last answer, and when it is looked up again.
#[derive(Debug, Clone)]
struct Known {
    answer: Result<Addresses, Failure>,
    next_lookup: Instant,
}

/// Why a lookup gave no address, kept for the clients that come before the next lookup.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Failure {
    kind: io::ErrorKind,
    message: String,
}

impl Failure {
    fn of(error: &io::Error) -> Failure {
        Failure { kind: error.kind(), message: error.to_string() }
    }

    fn into_error(self) -> io::Error {
        io::Error::new(self.kind, self.message)
    }
}

/// What to do for a name now.
#[derive(Debug, PartialEq, Eq)]
enum Plan {
    /// Answer with what the last lookup found.
    Answer(Result<Addresses, Failure>),
    /// Look the name up; if that fails, use `stale` if there is one.
    Lookup { stale: Option<Addresses> },
}

/// What to do for a name known as `known` (if at all) at `now`.
fn plan(known: Option<&Known>, now: Instant) -> Plan {
    match known {
        Some(known) if now < known.next_lookup => Plan::Answer(known.answer.clone()),
        known => Plan::Lookup { stale: known.and_then(|known| known.answer.clone().ok()) },
    }
}

/// Looks `address` up with the system's resolver (`getaddrinfo`, on tokio's blocking pool).
async fn system_lookup(address: String) -> io::Result<Vec<SocketAddr>> {
    Ok(tokio::net::lookup_host(address).await?.collect())
}

impl Resolver {
    /// A cache counting its lookups into `counters`.
    pub fn new(counters: ResolverCounters) -> Resolver {
        Resolver { names: Arc::default(), counters }
    }

    /// The addresses to connect to for `address` (`host:port`), looked up as the module's rules say.
    pub async fn addresses(&self, address: &str) -> io::Result<Addresses> {
        self.addresses_with(address, system_lookup).await
    }

    /// What new connections to `address` use: the addresses of its name's last lookup (or those kept through a
    /// failed one), or why the name has none; `None` for an `ip:port` address, or a name no connection has looked
    /// up yet.
    pub fn resolved(&self, address: &str) -> Option<Result<Addresses, String>> {
        let names = lock(&self.names);
        let known = names.get(address)?.known.as_ref()?;
        Some(known.answer.clone().map_err(|failure| failure.message))
    }

    /// Marks `address`'s name for a new lookup by the next connection (a connect to it failed), keeping its
    /// addresses for the case that lookup fails.
    pub fn forget(&self, address: &str) {
        if let Some(known) = lock(&self.names).get_mut(address).and_then(|name| name.known.as_mut()) {
            known.next_lookup = Instant::now();
        }
    }

    /// [`Resolver::addresses`], with `lookup` doing the lookups.
    async fn addresses_with<L, F>(&self, address: &str, lookup: L) -> io::Result<Addresses>
    where
        L: FnOnce(String) -> F,
        F: Future<Output = io::Result<Vec<SocketAddr>>> + Send + 'static,
    {
        if let Ok(literal) = address.parse() {
            return Ok(Arc::new([literal]));
        }
        let turn = match self.plan(address) {
            (Plan::Answer(answer), _) => return answer.map_err(Failure::into_error),
            (Plan::Lookup { .. }, turn) => turn,
        };
        // One lookup at a time: whoever waited for another's finds its answer here.
        let turn = turn.lock_owned().await;
        let stale = match self.plan(address).0 {
            Plan::Answer(answer) => return answer.map_err(Failure::into_error),
            Plan::Lookup { stale } => stale,
        };
        let looking = tokio::time::timeout(LOOKUP_TIMEOUT, lookup(address.to_owned()));
        let (names, counters, address) = (Arc::clone(&self.names), self.counters.clone(), address.to_owned());
        let lookup = tokio::spawn(async move {
            let found = match looking.await {
                Ok(Ok(found)) if found.is_empty() => {
                    Err(Failure { kind: io::ErrorKind::NotFound, message: format!("{address} has no address") })
                }
                Ok(Ok(found)) => Ok(Addresses::from(found)),
                Ok(Err(error)) => Err(Failure::of(&error)),
                Err(_) => Err(Failure {
                    kind: io::ErrorKind::TimedOut,
                    message: format!("no answer to the lookup of {address} within {} s", LOOKUP_TIMEOUT.as_secs()),
                }),
            };
            let known = settle(&address, found, stale, &counters);
            let answer = known.answer.clone();
            lock(&names).entry(address).or_default().known = Some(known);
            drop(turn);
            answer
        });
        lookup.await.map_err(io::Error::other)?.map_err(Failure::into_error)
    }

    /// The plan for `address` now, and the turn its lookups take (the name is added on its first use only, so a
    /// known name costs no allocation).
    fn plan(&self, address: &str) -> (Plan, Arc<tokio::sync::Mutex<()>>) {
        let mut names = lock(&self.names);
        if !names.contains_key(address) {
            names.insert(address.to_owned(), Name::default());
        }
        let name = &names[address];
        (plan(name.known.as_ref(), Instant::now()), Arc::clone(&name.turn))
    }
}

/// What a lookup of `address` leaves known of it: what it `found`, else the `stale` addresses, else its failure;
/// counted and logged.
fn settle(
    address: &str,
    found: Result<Addresses, Failure>,
    stale: Option<Addresses>,
    counters: &ResolverCounters,
) -> Known {
    let (answer, valid) = match (found, stale) {
        (Ok(addresses), _) => {
            counters.resolved.inc();
            debug!(address, ?addresses, "backend name resolved");
            (Ok(addresses), TTL)
        }
        (Err(failure), Some(stale)) => {
            counters.stale.inc();
            let error = &failure.message;
            warn!(address, error, "cannot resolve the backend's name; connecting to the addresses it had");
            (Ok(stale), RETRY_AFTER_FAILURE)
        }
        (Err(failure), None) => {
            counters.failed.inc();
            warn!(address, error = %failure.message, "cannot resolve the backend's name");
            (Err(failure), RETRY_AFTER_FAILURE)
        }
    };
    Known { answer, next_lookup: Instant::now() + valid }
}

/// The names, even if a thread panicked holding them (each update is one assignment).
fn lock(names: &Mutex<HashMap<String, Name>>) -> MutexGuard<'_, HashMap<String, Name>> {
    names.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr};
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    fn addresses(last: u8) -> Vec<SocketAddr> {
        vec![SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 0, 0, last)), 3306)]
    }

    /// A lookup that finds `addresses(last)` after `delay`, counting its calls in `calls`.
    fn finding(
        last: u8,
        delay: Duration,
        calls: &Arc<AtomicUsize>,
    ) -> impl FnOnce(String) -> std::pin::Pin<Box<dyn Future<Output = io::Result<Vec<SocketAddr>>> + Send>> + use<>
    {
        let calls = Arc::clone(calls);
        move |_| {
            calls.fetch_add(1, Ordering::SeqCst);
            Box::pin(async move {
                tokio::time::sleep(delay).await;
                Ok(addresses(last))
            })
        }
    }

    async fn unresolvable(_: String) -> io::Result<Vec<SocketAddr>> {
        Err(io::Error::other("no DNS server answered"))
    }

    async fn unanswered(_: String) -> io::Result<Vec<SocketAddr>> {
        std::future::pending().await
    }

    fn counts(resolver: &Resolver) -> (u64, u64, u64) {
        let counters = &resolver.counters;
        (counters.resolved.get(), counters.stale.get(), counters.failed.get())
    }

    #[tokio::test]
    async fn an_ip_address_is_never_looked_up() {
        let resolver = Resolver::default();
        for address in ["127.0.0.1:3306", "[::1]:3306"] {
            let addresses = resolver.addresses_with(address, unresolvable).await.unwrap();
            assert_eq!(&*addresses, [address.parse().unwrap()]);
        }
        assert!(lock(&resolver.names).is_empty());
    }

    #[test]
    fn a_name_is_looked_up_again_once_its_answer_is_older_than_its_time() {
        let now = Instant::now();
        let known = Known { answer: Ok(addresses(1).into()), next_lookup: now + TTL };
        assert_eq!(plan(None, now), Plan::Lookup { stale: None });
        assert_eq!(plan(Some(&known), now), Plan::Answer(known.answer.clone()));
        let stale = known.answer.clone().ok();
        assert_eq!(plan(Some(&known), now + TTL), Plan::Lookup { stale });
        let failed = Known { answer: Err(Failure::of(&io::Error::other("no"))), next_lookup: now };
        assert_eq!(plan(Some(&failed), now), Plan::Lookup { stale: None }, "a failure is no fallback");
    }

    #[tokio::test(start_paused = true)]
    async fn connections_within_the_ttl_use_the_first_lookup() {
        let resolver = Resolver::default();
        let calls = Arc::new(AtomicUsize::new(0));
        let first = resolver.addresses_with("mysql:3306", finding(1, Duration::ZERO, &calls)).await.unwrap();
        tokio::time::advance(TTL - Duration::from_millis(1)).await;
        let second = resolver.addresses_with("mysql:3306", finding(2, Duration::ZERO, &calls)).await.unwrap();
        assert_eq!((&*first, &*second), (&*addresses(1), &*addresses(1)));
        tokio::time::advance(Duration::from_millis(1)).await;
        let third = resolver.addresses_with("mysql:3306", finding(3, Duration::ZERO, &calls)).await.unwrap();
        assert_eq!(&*third, &*addresses(3), "looked up again after the TTL");
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        assert_eq!(counts(&resolver), (2, 0, 0));
    }

    #[tokio::test(start_paused = true)]
    async fn connections_at_the_same_time_share_one_lookup() {
        let resolver = Arc::new(Resolver::default());
        let calls = Arc::new(AtomicUsize::new(0));
        let waiting: Vec<_> = (0..5)
            .map(|_| {
                let (resolver, lookup) = (Arc::clone(&resolver), finding(1, Duration::from_millis(100), &calls));
                tokio::spawn(async move { resolver.addresses_with("mysql:3306", lookup).await.unwrap() })
            })
            .collect();
        for connection in waiting {
            assert_eq!(&*connection.await.unwrap(), &*addresses(1));
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_lookup_runs_to_its_end_when_its_connection_gives_up() {
        let resolver = Resolver::default();
        let calls = Arc::new(AtomicUsize::new(0));
        let slow = finding(1, Duration::from_millis(500), &calls);
        let gave_up =
            tokio::time::timeout(Duration::from_millis(100), resolver.addresses_with("mysql:3306", slow)).await;
        assert!(gave_up.is_err());
        tokio::time::sleep(Duration::from_millis(400)).await;
        let next = resolver.addresses_with("mysql:3306", finding(2, Duration::ZERO, &calls)).await.unwrap();
        assert_eq!(&*next, &*addresses(1), "the abandoned lookup's answer is in the cache");
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_connect_has_the_next_connection_look_the_name_up_with_the_old_addresses_to_fall_back_on() {
        let resolver = Resolver::default();
        let calls = Arc::new(AtomicUsize::new(0));
        resolver.addresses_with("mysql:3306", finding(1, Duration::ZERO, &calls)).await.unwrap();
        resolver.forget("mysql:3306");
        let moved = resolver.addresses_with("mysql:3306", finding(2, Duration::ZERO, &calls)).await.unwrap();
        assert_eq!(&*moved, &*addresses(2), "the name points elsewhere now");
        resolver.forget("mysql:3306");
        let kept = resolver.addresses_with("mysql:3306", unresolvable).await.unwrap();
        assert_eq!(&*kept, &*addresses(2), "a lookup that fails then falls back on what the name had");
        assert_eq!(counts(&resolver), (2, 1, 0));
    }

    /// A lookup by `lookup` falls back on the name's `addresses(1)`, and nothing is looked up for a second.
    async fn expect_fallback<L, F>(resolver: &Resolver, lookup: L, calls: &Arc<AtomicUsize>)
    where
        L: FnOnce(String) -> F,
        F: Future<Output = io::Result<Vec<SocketAddr>>> + Send + 'static,
    {
        let stale = resolver.addresses_with("mysql:3306", lookup).await.unwrap();
        assert_eq!(&*stale, &*addresses(1));
        tokio::time::advance(RETRY_AFTER_FAILURE - Duration::from_millis(1)).await;
        let still = resolver.addresses_with("mysql:3306", finding(2, Duration::ZERO, calls)).await.unwrap();
        assert_eq!(&*still, &*addresses(1), "no lookup before a second has passed");
        tokio::time::advance(Duration::from_millis(1)).await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_lookup_falls_back_on_the_addresses_the_name_had_for_a_second() {
        let resolver = Resolver::default();
        let calls = Arc::new(AtomicUsize::new(0));
        resolver.addresses_with("mysql:3306", finding(1, Duration::ZERO, &calls)).await.unwrap();
        tokio::time::advance(TTL).await;
        expect_fallback(&resolver, unresolvable, &calls).await;
        expect_fallback(&resolver, unanswered, &calls).await;
        let back = resolver.addresses_with("mysql:3306", finding(3, Duration::ZERO, &calls)).await.unwrap();
        assert_eq!(&*back, &*addresses(3), "looked up again after a second");
        assert_eq!(counts(&resolver), (2, 2, 0));
    }

    #[tokio::test(start_paused = true)]
    async fn a_name_that_never_resolved_keeps_its_failure_for_a_second() {
        let resolver = Resolver::default();
        let error = resolver.addresses_with("mysql:3306", unresolvable).await.unwrap_err();
        assert_eq!(error.to_string(), "no DNS server answered");
        let calls = Arc::new(AtomicUsize::new(0));
        let again = resolver.addresses_with("mysql:3306", finding(1, Duration::ZERO, &calls)).await.unwrap_err();
        assert_eq!(again.to_string(), "no DNS server answered", "the failure stands for a second");
        tokio::time::advance(RETRY_AFTER_FAILURE).await;
        let silent = resolver.addresses_with("mysql:3306", unanswered).await.unwrap_err();
        assert_eq!(silent.kind(), io::ErrorKind::TimedOut);
        assert_eq!(silent.to_string(), "no answer to the lookup of mysql:3306 within 2 s");
        assert_eq!((calls.load(Ordering::SeqCst), counts(&resolver)), (0, (0, 0, 2)));
    }

    #[tokio::test]
    async fn a_name_without_an_address_is_an_error() {
        let resolver = Resolver::default();
        let error = resolver.addresses_with("mysql:3306", |_| async { Ok(Vec::new()) }).await.unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::NotFound);
        assert_eq!(error.to_string(), "mysql:3306 has no address");
    }
}
