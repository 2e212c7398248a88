//! The grants checks the proxy remembers across sessions. edxapp opens a connection per web request, so a check
//! remembered by one session alone would be paid again by almost every request; remembered here by the account
//! (the `edxapp` server and the user name: every client reaches that server from the proxy's host, so one name
//! is one account there), it is paid about once a minute per account and kind of statement.
//!
//! A verdict older than its validity (`[backends.csmh] grants_valid_secs`) is checked again by the first session
//! that needs it, while the others go
//! on with it meanwhile: a check that waits (for the old table's lock during `csmh-proxy truncate-old`) holds up
//! one session, not every one. A refusal is never remembered.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::routing::Rights;

/// The most checks remembered; beyond it all are forgotten (a bound against unbounded numbers of user names).
const MOST: usize = 4096;

/// Whom a check was for, and for what.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct GrantKey {
    /// The `edxapp` server's address, as the session connected to it.
    pub server: String,
    /// The user the client logged in as, its bytes as sent: a name in a character set other than UTF-8 is not
    /// read, so that two names never become one.
    pub user: Vec<u8>,
    /// The rights on the old table the statements need.
    pub rights: Rights,
}

/// What a session does about its statement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// It was allowed recently enough (or another session is checking it again right now).
    Allowed,
    /// Check it, and report the result.
    Check,
}

/// When a check was last allowed, and whether a session is checking it again.
#[derive(Debug, Clone, Copy)]
struct Entry {
    allowed_at: Instant,
    checking_since: Option<Instant>,
}

/// The checks remembered, shared by every session of the proxy.
#[derive(Debug, Default)]
pub struct GrantCache {
    entries: Mutex<HashMap<GrantKey, Entry>>,
}

impl GrantCache {
    /// What to do about a statement needing `key` at `now`, when an allowed check stands for `valid_for` (also
    /// how long a REVOKE takes to reach sessions through the proxy).
    pub fn verdict(&self, key: &GrantKey, now: Instant, valid_for: Duration) -> Verdict {
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(entry) = entries.get_mut(key) else { return Verdict::Check };
        if now.duration_since(entry.allowed_at) < valid_for {
            return Verdict::Allowed;
        }
        match entry.checking_since {
            Some(since) if now.duration_since(since) < valid_for => Verdict::Allowed,
            _ => {
                entry.checking_since = Some(now);
                Verdict::Check
            }
        }
    }

    /// Records that the server allowed `key` at `now`.
    pub fn allowed(&self, key: GrantKey, now: Instant) {
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        if entries.len() >= MOST && !entries.contains_key(&key) {
            entries.clear();
        }
        entries.insert(key, Entry { allowed_at: now, checking_since: None });
    }

    /// Records that the server refused `key`: nothing is remembered of it.
    pub fn refused(&self, key: &GrantKey) {
        self.entries.lock().unwrap_or_else(PoisonError::into_inner).remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(user: &str) -> GrantKey {
        GrantKey { server: "a:3306".into(), user: user.as_bytes().to_vec(), rights: Rights::INSERT }
    }

    const VALID_FOR: Duration = Duration::from_secs(60);

    #[test]
    fn an_allowed_check_stands_for_a_minute_then_one_session_checks_it_again_while_the_others_go_on() {
        let cache = GrantCache::default();
        let start = Instant::now();
        let verdict = |user: &str, at: Instant| cache.verdict(&key(user), at, VALID_FOR);
        assert_eq!(verdict("app", start), Verdict::Check);
        cache.allowed(key("app"), start);
        assert_eq!(verdict("app", start + Duration::from_secs(59)), Verdict::Allowed);
        assert_eq!(verdict("other", start), Verdict::Check, "one account's checks are its own");
        let stale = start + VALID_FOR + Duration::from_secs(1);
        assert_eq!(verdict("app", stale), Verdict::Check, "the first session checks again");
        assert_eq!(verdict("app", stale), Verdict::Allowed, "the others go on meanwhile");
        let abandoned = stale + VALID_FOR;
        assert_eq!(verdict("app", abandoned), Verdict::Check, "a check that never reported is redone");
        cache.refused(&key("app"));
        assert_eq!(verdict("app", abandoned), Verdict::Check, "a refusal is not remembered");
    }

    #[test]
    fn with_no_validity_every_statement_is_checked() {
        let cache = GrantCache::default();
        let now = Instant::now();
        cache.allowed(key("app"), now);
        assert_eq!(cache.verdict(&key("app"), now, Duration::ZERO), Verdict::Check);
        assert_eq!(cache.verdict(&key("app"), now, Duration::ZERO), Verdict::Check, "no one waits on another");
    }
}
