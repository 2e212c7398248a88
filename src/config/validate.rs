//! The checks that a well-formed `proxy.toml` must also pass before the proxy runs with it: addresses, timeouts,
//! credentials, table names and the flag combination. Each problem names the dotted key at fault.

use std::net::Ipv6Addr;

use super::error::Problem;
use super::{Backend, Backends, Config, Listen, MAX_ID_OFFSET, MAX_PACKET_BYTES_LIMIT, PasswordError, TlsMode};
use crate::history::{TableName, routing_table};

/// Every problem with `config`, section by section; empty when the proxy can run with it.
pub(super) fn problems(config: &Config) -> Vec<Problem> {
    let mut problems = Vec::new();
    check_address(&mut problems, "listen.address", &config.listen.address, PortZero::PicksAFreePort);
    check_listen_limits(&mut problems, &config.listen);
    if let Some(admin) = &config.admin {
        check_address(&mut problems, "admin.address", &admin.address, PortZero::PicksAFreePort);
    }
    check_backend(&mut problems, "backends.edxapp", &config.backends.edxapp);
    check_backend(&mut problems, "backends.csmh", &config.backends.csmh);
    check_user(&mut problems, "backends.edxapp", &config.backends.edxapp, Login::RelayedFromClients);
    let csmh_login = if config.backends.same_server() { Login::RelayedFromClients } else { Login::ByTheProxy };
    check_user(&mut problems, "backends.csmh", &config.backends.csmh, csmh_login);
    check_preconnect(&mut problems, &config.backends);
    check_keep_idle(&mut problems, &config.backends);
    check_history_tables(&mut problems, &config.history.old_table, &config.history.extended_table);
    check_id_offset(&mut problems, config.history.id_offset);
    check_flags(&mut problems, config);
    check_shadow(&mut problems, config);
    problems
}

/// What port 0 means for an address.
#[derive(Clone, Copy, PartialEq, Eq)]
enum PortZero {
    /// A listener binds any free port (tests and the sandbox read the port back).
    PicksAFreePort,
    /// A server to connect to cannot be on port 0.
    Refused,
}

/// Checks that `address` is `host:port`.
fn check_address(problems: &mut Vec<Problem>, key: &str, address: &str, port_zero: PortZero) {
    if let Err(reason) = check_host_and_port(address, port_zero) {
        problems.push(Problem::new(key, format!("`{address}` is not host:port ({reason}), e.g. 127.0.0.1:3306")));
    }
}

/// Checks `host:port`, accepting a host name, an IPv4 address or a bracketed IPv6 address.
fn check_host_and_port(address: &str, port_zero: PortZero) -> Result<(), String> {
    let (host, port) = address.rsplit_once(':').ok_or("no port")?;
    check_host(host)?;
    let port: u16 = port.parse().map_err(|_| format!("port `{port}` is not a number from 1 to 65535"))?;
    if port == 0 && port_zero == PortZero::Refused {
        return Err("port 0 cannot be connected to".to_owned());
    }
    Ok(())
}

/// Checks the host part of an address.
fn check_host(host: &str) -> Result<(), String> {
    if host.is_empty() {
        return Err("no host".to_owned());
    }
    if let Some(inner) = host.strip_prefix('[').and_then(|rest| rest.strip_suffix(']')) {
        return inner.parse::<Ipv6Addr>().map(|_| ()).map_err(|_| format!("`{inner}` is not an IPv6 address"));
    }
    if host.contains(':') {
        return Err("an IPv6 address must be in brackets, as in [::1]:3306".to_owned());
    }
    if host.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_')) {
        Ok(())
    } else {
        Err(format!("`{host}` is not a host name or IP address"))
    }
}

/// Checks that a timeout is positive: zero would fail every connection or drop every statement at shutdown.
fn check_timeout(problems: &mut Vec<Problem>, key: &str, seconds: u64) {
    if seconds == 0 {
        problems.push(Problem::new(key, "must be at least 1 second"));
    }
}

/// Checks `[listen]`'s timeouts and limits: a zero would refuse every client, and a packet limit must lie
/// within what the protocol can carry.
fn check_listen_limits(problems: &mut Vec<Problem>, listen: &Listen) {
    check_timeout(problems, "listen.shutdown_timeout_secs", listen.shutdown_timeout_secs);
    check_timeout(problems, "listen.handshake_timeout_secs", listen.handshake_timeout_secs);
    check_at_least(problems, "listen.max_connections", listen.max_connections, 1);
    check_at_least(problems, "listen.max_handshakes", listen.max_handshakes, 1);
    check_at_least(problems, "listen.max_parsed_statement_bytes", listen.max_parsed_statement_bytes, 1);
    check_at_least(problems, "listen.max_packet_bytes", listen.max_packet_bytes, MIN_PACKET_BYTES);
    if listen.max_packet_bytes > MAX_PACKET_BYTES_LIMIT {
        problems.push(Problem::new(
            "listen.max_packet_bytes",
            format!("must be at most {MAX_PACKET_BYTES_LIMIT} (1 GiB, the largest packet MySQL accepts)"),
        ));
    }
}

/// The smallest `listen.max_packet_bytes`: room for any ordinary statement.
const MIN_PACKET_BYTES: usize = 1024;

/// Checks that a count or size is at least `least`.
fn check_at_least(problems: &mut Vec<Problem>, key: &str, value: usize, least: usize) {
    if value < least {
        problems.push(Problem::new(key, format!("must be at least {least}")));
    }
}

/// Checks one `[backends.*]` table: its address, timeout and how its password is given.
fn check_backend(problems: &mut Vec<Problem>, table: &str, backend: &Backend) {
    check_address(problems, &format!("{table}.address"), &backend.address, PortZero::Refused);
    check_timeout(problems, &format!("{table}.connect_timeout_secs"), backend.connect_timeout_secs);
    check_timeout(problems, &format!("{table}.read_timeout_secs"), backend.read_timeout_secs);
    check_backend_tls(problems, table, backend);
    if let Err(error) = backend.password() {
        let key = match error {
            PasswordError::BothGiven => "password",
            PasswordError::VariableUnset { .. } | PasswordError::VariableNotUnicode { .. } => "password_env",
        };
        problems.push(Problem::new(format!("{table}.{key}"), error.to_string()));
    }
}

/// The most connections `[backends.edxapp.preconnect]` may keep ready: each is a server thread, and each one
/// closed unused counts against the proxy's host in the server's `max_connect_errors` (100 by default) until a
/// login succeeds.
const MAX_PRECONNECT: usize = 32;

/// The ages `[backends.edxapp.preconnect] max_age_ms` may have: long enough to be of use, and within the range
/// of a server's `connect_timeout` that any deployment keeps.
const PRECONNECT_AGES_MS: std::ops::RangeInclusive<u64> = 100..=60_000;

/// Checks `[backends.edxapp.preconnect]`, and that `csmh` has none (the proxy opens that connection for its own
/// login, on a session's first history read).
fn check_preconnect(problems: &mut Vec<Problem>, backends: &Backends) {
    if backends.csmh.preconnect.is_some() {
        problems.push(Problem::new(
            "backends.csmh.preconnect",
            "preconnecting applies to `backends.edxapp` only, whose connections clients log in on",
        ));
    }
    let preconnect = backends.edxapp_preconnect();
    if preconnect.max > MAX_PRECONNECT {
        problems.push(Problem::new("backends.edxapp.preconnect.max", format!("must be at most {MAX_PRECONNECT}")));
    }
    if !PRECONNECT_AGES_MS.contains(&preconnect.max_age_ms) {
        problems.push(Problem::new(
            "backends.edxapp.preconnect.max_age_ms",
            format!(
                "must be from {} to {} ms, and below the server's connect_timeout",
                PRECONNECT_AGES_MS.start(),
                PRECONNECT_AGES_MS.end()
            ),
        ));
    }
}

/// The most connections `[backends.csmh] keep_idle` may keep: each is a server thread and one of its
/// `max_connections`, per proxy replica.
const MAX_KEEP_IDLE: usize = 64;

/// Checks `[backends.csmh] keep_idle` and `grants_valid_secs`, and that `edxapp` has neither (clients log in on
/// their own connections there).
fn check_keep_idle(problems: &mut Vec<Problem>, backends: &Backends) {
    if backends.edxapp.keep_idle.is_some() {
        problems.push(Problem::new(
            "backends.edxapp.keep_idle",
            "applies to `backends.csmh` only, which the proxy logs in to with its own account",
        ));
    }
    if backends.csmh_keep_idle() > MAX_KEEP_IDLE {
        problems.push(Problem::new("backends.csmh.keep_idle", format!("must be at most {MAX_KEEP_IDLE}")));
    }
    if backends.edxapp.grants_valid_secs.is_some() {
        problems.push(Problem::new(
            "backends.edxapp.grants_valid_secs",
            "applies to `backends.csmh` only: on `edxapp` the server checks the client's grants itself",
        ));
    }
    if backends.csmh_grants_valid_for().as_secs() > MAX_GRANTS_VALID_SECS {
        problems.push(Problem::new(
            "backends.csmh.grants_valid_secs",
            format!("must be at most {MAX_GRANTS_VALID_SECS}: it is how long a REVOKE takes to reach the proxy"),
        ));
    }
}

/// The longest `[backends.csmh] grants_valid_secs`: an hour.
const MAX_GRANTS_VALID_SECS: u64 = 3600;

/// Checks `[<table>.tls]`: a mode that checks the certificate needs the authorities to check it against, and a
/// client certificate needs its key (and the other way round).
fn check_backend_tls(problems: &mut Vec<Problem>, table: &str, backend: &Backend) {
    let tls = &backend.tls;
    if tls.mode.verifies() && tls.ca.is_none() {
        problems.push(Problem::new(
            format!("{table}.tls.mode"),
            format!(
                "`{}` checks the server's certificate and needs `ca`, the PEM file of the authorities it must chain to",
                tls.mode.as_str()
            ),
        ));
    }
    match (&tls.certificate, &tls.key) {
        (Some(_), None) => {
            problems.push(Problem::new(format!("{table}.tls.certificate"), "a client certificate needs its `key`"))
        }
        (None, Some(_)) => {
            problems.push(Problem::new(format!("{table}.tls.key"), "a `key` needs its client `certificate`"))
        }
        _ => {}
    }
    if table == "backends.edxapp" && tls.server_public_key.is_some() {
        problems.push(Problem::new(
            format!("{table}.tls.server_public_key"),
            "is only used by the proxy's own login to a separate `csmh` server: clients log in to `edxapp` \
             themselves",
        ));
    }
    if tls.mode == TlsMode::Disabled && (tls.ca.is_some() || tls.certificate.is_some()) {
        problems.push(Problem::new(
            format!("{table}.tls.mode"),
            "is `disabled`, but certificates are given: say `required`, `verify-ca` or `verify-identity` to use them",
        ));
    }
}

/// Who logs in to a backend on the client path.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Login {
    /// The clients' own logins are relayed: the proxy needs no user of its own.
    RelayedFromClients,
    /// The proxy opens its own connection (the `csmh` backend on another server), so it needs a user.
    ByTheProxy,
}

/// Checks that a backend has a `user` where one is needed: when the proxy logs in itself, or a password is given.
fn check_user(problems: &mut Vec<Problem>, table: &str, backend: &Backend, login: Login) {
    if backend.user.is_some() {
        return;
    }
    let key = format!("{table}.user");
    if login == Login::ByTheProxy {
        problems.push(Problem::new(
            key,
            "`backends.csmh` is another server than `backends.edxapp` (its address differs), so the proxy logs in \
             to it itself and needs `user` (and `password` or `password_env`); if both are the same server, give \
             them the same address",
        ));
    } else if backend.password.is_some() || backend.password_env.is_some() {
        problems.push(Problem::new(key, "a password is given but no `user` to log in as"));
    }
}

/// Checks that both table names are `schema.table` and that they name two different tables.
fn check_history_tables(problems: &mut Vec<Problem>, old: &str, extended: &str) {
    let old = parse_table(problems, "history.old_table", old);
    let extended = parse_table(problems, "history.extended_table", extended);
    let same = matches!((&old, &extended), (Some(old), Some(extended)) if old.same_table_as(extended));
    if same {
        problems.push(Problem::new(
            "history.extended_table",
            "names the same table as `history.old_table`: the extended table must be another one",
        ));
    }
}

/// Checks that the extended table's ids start above the old table's (an offset of 0 would give the next new row
/// the old table's largest id) and not absurdly far above them.
fn check_id_offset(problems: &mut Vec<Problem>, offset: u64) {
    if offset == 0 {
        problems.push(Problem::new(
            "history.id_offset",
            "must be at least 1: the extended table's first id must be above every id of the old table",
        ));
    } else if offset > MAX_ID_OFFSET {
        problems.push(Problem::new(
            "history.id_offset",
            format!("must be at most {MAX_ID_OFFSET} (2^32, more than the old table's ids can ever use)"),
        ));
    }
}

/// Parses one table name, recording why it is unusable.
fn parse_table(problems: &mut Vec<Problem>, key: &str, name: &str) -> Option<TableName> {
    name.parse().map_err(|error| problems.push(Problem::new(key, format!("{error}")))).ok()
}

/// Checks that the flags are a combination the routing table (docs/routing.md) has a row for.
/// Checks `[shadow]`: a fraction, and a login for the reads it runs itself on the `csmh` server.
fn check_shadow(problems: &mut Vec<Problem>, config: &Config) {
    let sample = config.shadow.sample;
    if !(0.0..=1.0).contains(&sample) {
        problems
            .push(Problem::new("shadow.sample", format!("{sample} is not a fraction from 0 (off) to 1 (every read)")));
    }
    if config.shadow.is_on() && config.backends.csmh.user.is_none() {
        problems.push(Problem::new(
            "shadow.sample",
            "shadow reads log in to the csmh server as [backends.csmh] does: give it a `user` (and `password` or \
             `password_env`), with SELECT on the extended table",
        ));
    }
}

fn check_flags(problems: &mut Vec<Problem>, config: &Config) {
    if let Err(refused) = routing_table(config.flags) {
        problems.push(Problem::new(format!("flags.{}", refused.flag()), refused.to_string()));
    }
}
