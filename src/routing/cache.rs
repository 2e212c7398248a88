//! The route cache: edxapp sends the same few history statements over and over with other literals, so the
//! route of a statement is kept under its key (the statement with its literals masked, `routing/literals.rs`) as a
//! template (`routing/template.rs`), and a statement with the same key is routed by splicing its literals into it,
//! without tokenizing or parsing.
//!
//! An entry is made only when it is sound (docs/routing.md, "Route cache"): for a text statement (COM_QUERY) the
//! scanner is sure of, whose route is not a refusal; the literals the router reads are kept in the entry
//! (`routing/masking.rs`) and must be equal for a hit; and the template, filled with the statement's own literals,
//! must give exactly the route the router gave, or nothing is cached.
//!
//! The cache belongs to the [`Router`] of one configuration snapshot, so a reload starts an empty one. It is split
//! into shards, each behind its own lock held only to look up or insert an entry, and bounded: entries per shard,
//! bytes per shard, and the size of a statement it keeps. A full shard drops entries at random (in the hash
//! map's order) to make room. A key is cached the second time it is seen, so a statement seen once costs no more
//! than routing it, and one seen again costs the router twice more (the parse that tells which literals it reads,
//! the probe's route) and a comparison, once; a key whose entry was rejected is not tried again.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::{Arc, Mutex, PoisonError};

use super::literals::{self, Scan};
use super::masking;
use super::source::Source;
use super::template::{self, MARKER_CORE, RouteTemplate};
use super::{PARSE_RED_ZONE, PARSE_STACK, Route, Router, parse_one};

/// How the cache served one statement, as the metrics count it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CacheOutcome {
    /// Routed from an entry.
    Hit,
    /// Looked up and not found (or found with other values where the router reads them): routed by the router.
    Miss,
    /// Not looked up: a prepared statement, a statement over the cache's size limit or the parse limit, or one the
    /// scanner is not sure of.
    Skipped,
}

impl CacheOutcome {
    /// Every outcome, in the metrics' order.
    pub const ALL: [CacheOutcome; 3] = [CacheOutcome::Hit, CacheOutcome::Miss, CacheOutcome::Skipped];

    /// The `result` label's value.
    pub fn label(self) -> &'static str {
        match self {
            CacheOutcome::Hit => "hit",
            CacheOutcome::Miss => "miss",
            CacheOutcome::Skipped => "skipped",
        }
    }
}

/// Shards: enough that sessions on a few worker threads rarely wait for one another.
const SHARDS: usize = 16;

/// Entries a shard holds: 1,024 in all.
const ENTRIES_PER_SHARD: usize = 64;

/// Bytes of entries a shard holds: 16 MiB in all. An entry larger than a quarter of it is not kept.
const BYTES_PER_SHARD: usize = 1 << 20;

/// Keys a shard remembers having seen without an entry, before they are forgotten all at once.
const SEEN_PER_SHARD: usize = 1024;

/// The longest statement the cache keeps.
pub const MAX_STATEMENT_BYTES: usize = 16 << 10;

/// Routes of statements by their masked literals.
pub struct RouteCache {
    hasher: RandomState,
    shards: Box<[Mutex<Shard>]>,
}

#[derive(Default)]
struct Shard {
    entries: HashMap<u64, Arc<Entry>>,
    bytes: usize,
    /// Keys seen and not cached.
    seen: HashMap<u64, Sighting>,
}

/// What a shard remembers of a key it has no entry for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sighting {
    /// Seen once: the next statement with it is cached.
    Once,
    /// Its entry was rejected (its template did not give the router's route back): not tried again.
    Rejected,
}

/// One cached route.
struct Entry {
    key: Box<[u8]>,
    /// The literals the router reads: their indexes and values, which a statement must have to hit the entry.
    pinned: Box<[(usize, Box<[u8]>)]>,
    template: RouteTemplate,
    size: usize,
}

impl Default for RouteCache {
    fn default() -> Self {
        RouteCache { hasher: RandomState::new(), shards: (0..SHARDS).map(|_| Mutex::default()).collect() }
    }
}

impl std::fmt::Debug for RouteCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RouteCache").field("entries", &self.len()).finish()
    }
}

impl RouteCache {
    /// The route of the text statement `sql` by `router`, from an entry when there is one, and how the cache
    /// served it.
    pub fn route(&self, router: &Router, sql: &[u8]) -> (Route, CacheOutcome) {
        let scan = (sql.len() <= router.parse_limit.min(MAX_STATEMENT_BYTES)).then(|| literals::scan(sql)).flatten();
        let Some(scan) = scan else { return (router.route(sql), CacheOutcome::Skipped) };
        let hash = self.hasher.hash_one(&scan.key);
        match self.lookup(hash, &scan) {
            Lookup::Found(entry) if entry.matches(sql, &scan) => return (entry.render(sql, &scan), CacheOutcome::Hit),
            Lookup::SeenOnce => {}
            Lookup::Found(_) | Lookup::Other => return (router.route(sql), CacheOutcome::Miss),
        }
        let route = router.route(sql);
        match Admission::of(router, sql, scan, &route) {
            Admission::Entry(entry) => self.insert(hash, entry),
            Admission::Rejected => self.remember(hash, Sighting::Rejected),
            Admission::NotThisOne => {}
        }
        (route, CacheOutcome::Miss)
    }

    /// Entries held now.
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().unwrap_or_else(PoisonError::into_inner).entries.len()).sum()
    }

    /// Whether it holds no entry.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn shard(&self, hash: u64) -> std::sync::MutexGuard<'_, Shard> {
        self.shards[(hash as usize) % SHARDS].lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The entry under `hash` if it is `scan`'s key; otherwise whether the key was seen once before (a key not
    /// seen before is remembered as seen once now).
    fn lookup(&self, hash: u64, scan: &Scan) -> Lookup {
        let mut shard = self.shard(hash);
        if let Some(entry) = shard.entries.get(&hash).filter(|e| *e.key == scan.key[..]) {
            return Lookup::Found(Arc::clone(entry));
        }
        match shard.seen.get(&hash) {
            Some(Sighting::Once) => {
                shard.seen.remove(&hash);
                Lookup::SeenOnce
            }
            Some(Sighting::Rejected) => Lookup::Other,
            None => {
                shard.remember(hash, Sighting::Once);
                Lookup::Other
            }
        }
    }

    fn remember(&self, hash: u64, sighting: Sighting) {
        self.shard(hash).remember(hash, sighting);
    }

    fn insert(&self, hash: u64, entry: Entry) {
        if entry.size > BYTES_PER_SHARD / 4 {
            return;
        }
        let mut shard = self.shard(hash);
        if let Some(old) = shard.entries.remove(&hash) {
            shard.bytes -= old.size;
        }
        while shard.entries.len() >= ENTRIES_PER_SHARD || shard.bytes + entry.size > BYTES_PER_SHARD {
            let Some(&victim) = shard.entries.keys().next() else { break };
            let removed = shard.entries.remove(&victim).map_or(0, |e| e.size);
            shard.bytes -= removed;
        }
        shard.bytes += entry.size;
        shard.entries.insert(hash, Arc::new(entry));
    }
}

impl Shard {
    /// Remembers a key without an entry; all are forgotten when there are too many.
    fn remember(&mut self, hash: u64, sighting: Sighting) {
        if self.seen.len() >= SEEN_PER_SHARD {
            self.seen.clear();
        }
        self.seen.insert(hash, sighting);
    }
}

/// What a shard has for a key.
enum Lookup {
    /// An entry.
    Found(Arc<Entry>),
    /// No entry, and the key was seen once before.
    SeenOnce,
    /// No entry: the key is new, or its entry was rejected.
    Other,
}

/// What became of a statement seen a second time.
enum Admission {
    /// Its entry.
    Entry(Entry),
    /// Its template did not give its route back: the key is not tried again.
    Rejected,
    /// This statement cannot make the entry (its route is a refusal, it holds the markers' digits, or it does
    /// not parse), but another with the same key may.
    NotThisOne,
}

impl Admission {
    /// The entry for `sql` (scanned as `scan`) whose route is `route`, if it can be cached soundly: the router's
    /// parse of it tells which literals it reads, the route of the probe gives the template, and the template
    /// must give `route` back with the statement's own literals.
    fn of(router: &Router, sql: &[u8], scan: Scan, route: &Route) -> Admission {
        let unsure = scan.literals.len() > template::MAX_LITERALS || template::find(sql, MARKER_CORE).is_some();
        if unsure || !template::is_cacheable(route) {
            return Admission::NotThisOne;
        }
        let Some(masked) = stacker::maybe_grow(PARSE_RED_ZONE, PARSE_STACK, || maskable(sql, &scan)) else {
            return Admission::NotThisOne;
        };
        let probe = router.route(&probe(sql, &scan, &masked));
        let template = RouteTemplate::from_probe(probe, &scan.literals, &masked);
        let Some(template) = template.filter(|t| t.render(|i| scan.literal(sql, i)) == *route) else {
            return Admission::Rejected;
        };
        let pinned: Box<[(usize, Box<[u8]>)]> =
            (0..scan.literals.len()).filter(|&i| !masked[i]).map(|i| (i, scan.literal(sql, i).into())).collect();
        let pinned_size =
            pinned.iter().map(|(_, v)| v.len() + std::mem::size_of::<(usize, Box<[u8]>)>()).sum::<usize>();
        let size = scan.key.len() + template.size() + pinned_size;
        Admission::Entry(Entry { key: scan.key.into(), pinned, template, size })
    }
}

impl Entry {
    /// Whether `sql` has the entry's values where the router reads them.
    fn matches(&self, sql: &[u8], scan: &Scan) -> bool {
        self.pinned.iter().all(|(i, value)| scan.literal(sql, *i) == &**value)
    }

    /// The route of `sql`, the entry's literals replaced by its own.
    fn render(&self, sql: &[u8], scan: &Scan) -> Route {
        self.template.render(|i| scan.literal(sql, i))
    }
}

/// Which literals of `sql` may be masked, from the router's own tokens and parse; `None` when it does not parse
/// (its route is then a refusal, which is not cached anyway).
fn maskable(sql: &[u8], scan: &Scan) -> Option<Vec<bool>> {
    let source = Source::new(sql);
    let statement = parse_one(&source.tokens().ok()?).ok()?;
    Some(masking::maskable(&statement, &source, &scan.literals))
}

/// `sql` with each maskable literal replaced by its marker.
fn probe(sql: &[u8], scan: &Scan, masked: &[bool]) -> Vec<u8> {
    let mut probe = Vec::with_capacity(sql.len() + scan.literals.len() * 16);
    let mut at = 0;
    for (index, literal) in scan.literals.iter().enumerate().filter(|(i, _)| masked[*i]) {
        probe.extend_from_slice(&sql[at..literal.range.start]);
        probe.extend_from_slice(&template::marker(index, literal.kind));
        at = literal.range.end;
    }
    probe.extend_from_slice(&sql[at..]);
    probe
}

#[cfg(test)]
mod tests;
