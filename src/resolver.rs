//! The backends' host names, resolved once every [`TTL`] rather than for every connection.
//!
//! A backend named by host name (`mysql:3306`, as Tutor names its server on Kubernetes, or a managed server's
//! DNS name) was looked up for each connection the proxy opened: a blocking `getaddrinfo` on tokio's blocking
//! pool and, on Kubernetes, one or more queries to the cluster's DNS for every new client, on its login's path.
//! The addresses are kept for [`TTL`] instead; a failed connect forgets them, so a server that moved (a managed
//! server's failover changes the address behind its name) is looked up again by the next connection; and when
//! a lookup fails while the name had addresses, those are used (and the lookup retried after
//! [`RETRY_AFTER_FAILURE`]), so that a DNS outage does not stop new clients reaching a server that still runs.
//! An address written as `ip:port` is never looked up. What to do for a name is decided apart from the lookup
//! ([`plan`]), so the rules are tested without a DNS server.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tracing::{debug, warn};

use crate::metrics::ResolverCounters;

/// How long the addresses a name resolved to are used before it is looked up again.
pub const TTL: Duration = Duration::from_secs(10);

/// After a failed lookup of a name that had addresses, how long those are used before the next lookup.
pub const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(1);

/// Addresses a name resolved to.
pub type Addresses = Arc<[SocketAddr]>;

/// The addresses of the names looked up so far, one cache per proxy.
#[derive(Debug, Default)]
pub struct Resolver {
    names: Mutex<HashMap<String, Entry>>,
    counters: ResolverCounters,
}

/// What is known of a name.
#[derive(Debug, Clone)]
struct Entry {
    addresses: Addresses,
    /// When the name is next looked up.
    next_lookup: Instant,
}

/// What to do for a name now.
#[derive(Debug, PartialEq, Eq)]
enum Plan {
    /// Use what the name resolved to earlier.
    Cached(Addresses),
    /// Look the name up; if that fails, use `stale` if there is one.
    Lookup { stale: Option<Addresses> },
}

/// What to do for a name known as `entry` (if at all) at `now`.
fn plan(entry: Option<&Entry>, now: Instant) -> Plan {
    match entry {
        Some(entry) if now < entry.next_lookup => Plan::Cached(Arc::clone(&entry.addresses)),
        entry => Plan::Lookup { stale: entry.map(|entry| Arc::clone(&entry.addresses)) },
    }
}

impl Resolver {
    /// A cache counting its lookups into `counters`.
    pub fn new(counters: ResolverCounters) -> Resolver {
        Resolver { names: Mutex::default(), counters }
    }

    /// The addresses to connect to for `address` (`host:port`), looked up if the name's are older than [`TTL`].
    pub async fn addresses(&self, address: &str) -> io::Result<Addresses> {
        self.addresses_with(address, |address| async move {
            Ok(tokio::net::lookup_host(address).await?.collect::<Vec<_>>())
        })
        .await
    }

    /// Forgets what `address`'s name resolved to (a connect to it failed): the next connection looks it up.
    pub fn forget(&self, address: &str) {
        self.lock().remove(address);
    }

    /// [`Resolver::addresses`], with `lookup` doing the lookups.
    async fn addresses_with<F, L>(&self, address: &str, lookup: L) -> io::Result<Addresses>
    where
        L: FnOnce(String) -> F,
        F: Future<Output = io::Result<Vec<SocketAddr>>>,
    {
        if let Ok(literal) = address.parse() {
            return Ok(Arc::new([literal]));
        }
        let stale = match plan(self.lock().get(address), Instant::now()) {
            Plan::Cached(addresses) => return Ok(addresses),
            Plan::Lookup { stale } => stale,
        };
        let looked_up = lookup(address.to_owned()).await.and_then(|found| match found.is_empty() {
            true => Err(io::Error::new(io::ErrorKind::NotFound, "the name has no address")),
            false => Ok(Addresses::from(found)),
        });
        match (looked_up, stale) {
            (Ok(addresses), _) => {
                self.counters.resolved.inc();
                debug!(address, ?addresses, "backend name resolved");
                self.remember(address, &addresses, TTL);
                Ok(addresses)
            }
            (Err(error), Some(stale)) => {
                self.counters.stale.inc();
                warn!(address, %error, "cannot resolve the backend's name; connecting to the addresses it had");
                self.remember(address, &stale, RETRY_AFTER_FAILURE);
                Ok(stale)
            }
            (Err(error), None) => {
                self.counters.failed.inc();
                Err(error)
            }
        }
    }

    fn remember(&self, address: &str, addresses: &Addresses, valid: Duration) {
        let entry = Entry { addresses: Arc::clone(addresses), next_lookup: Instant::now() + valid };
        self.lock().insert(address.to_owned(), entry);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        self.names.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr};

    use super::*;

    fn addresses(last: u8) -> Vec<SocketAddr> {
        vec![SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 0, 0, last)), 3306)]
    }

    async fn found(_: String, last: u8) -> io::Result<Vec<SocketAddr>> {
        Ok(addresses(last))
    }

    async fn unresolvable(_: String) -> io::Result<Vec<SocketAddr>> {
        Err(io::Error::other("no DNS server answered"))
    }

    #[tokio::test]
    async fn an_ip_address_is_never_looked_up() {
        let resolver = Resolver::default();
        for address in ["127.0.0.1:3306", "[::1]:3306"] {
            let addresses = resolver.addresses_with(address, unresolvable).await.unwrap();
            assert_eq!(&*addresses, [address.parse().unwrap()]);
        }
        assert!(resolver.lock().is_empty());
    }

    #[test]
    fn a_name_is_looked_up_again_once_its_addresses_are_older_than_the_ttl() {
        let now = Instant::now();
        let entry = Entry { addresses: addresses(1).into(), next_lookup: now + TTL };
        assert_eq!(plan(None, now), Plan::Lookup { stale: None });
        assert_eq!(plan(Some(&entry), now), Plan::Cached(entry.addresses.clone()));
        assert_eq!(plan(Some(&entry), now + TTL), Plan::Lookup { stale: Some(entry.addresses.clone()) });
    }

    #[tokio::test]
    async fn connections_within_the_ttl_use_the_first_lookup() {
        let resolver = Resolver::default();
        let first = resolver.addresses_with("mysql:3306", |name| found(name, 1)).await.unwrap();
        let second = resolver.addresses_with("mysql:3306", |name| found(name, 2)).await.unwrap();
        assert_eq!((&*first, &*second), (&*addresses(1), &*addresses(1)));
        assert_eq!(resolver.counters.resolved.get(), 1);
    }

    #[tokio::test]
    async fn a_forgotten_name_is_looked_up_by_the_next_connection() {
        let resolver = Resolver::default();
        resolver.addresses_with("mysql:3306", |name| found(name, 1)).await.unwrap();
        resolver.forget("mysql:3306");
        let moved = resolver.addresses_with("mysql:3306", |name| found(name, 2)).await.unwrap();
        assert_eq!(&*moved, &*addresses(2));
    }

    #[tokio::test]
    async fn a_failed_lookup_falls_back_on_the_addresses_the_name_had() {
        let resolver = Resolver::default();
        let error = resolver.addresses_with("mysql:3306", unresolvable).await.unwrap_err();
        assert_eq!(error.to_string(), "no DNS server answered", "without earlier addresses the error stands");

        resolver.addresses_with("mysql:3306", |name| found(name, 1)).await.unwrap();
        resolver.lock().get_mut("mysql:3306").unwrap().next_lookup = Instant::now();
        let stale = resolver.addresses_with("mysql:3306", unresolvable).await.unwrap();
        assert_eq!(&*stale, &*addresses(1));
        let next_lookup = resolver.lock()["mysql:3306"].next_lookup;
        assert!(next_lookup <= Instant::now() + RETRY_AFTER_FAILURE, "retried after a second, not a whole TTL");
        let counters = &resolver.counters;
        assert_eq!((counters.resolved.get(), counters.stale.get(), counters.failed.get()), (1, 1, 1));
    }

    #[tokio::test]
    async fn a_name_without_an_address_is_an_error() {
        let resolver = Resolver::default();
        let error = resolver.addresses_with("mysql:3306", |_| async { Ok(Vec::new()) }).await.unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::NotFound);
    }
}
