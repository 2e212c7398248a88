//! What differs between two configurations, key by key, as the reload log line lists it: flags by their
//! edx-platform names, everything else by its dotted key, passwords never by value.

use std::fmt;
use std::path::Path;

use super::{
    Admin, Backend, BackendTls, Backends, Config, HistoryTables, Listen, ListenCertificate, ListenTls, Preconnect,
};
use crate::history::{Flag, Flags};

/// Keys whose new value only takes effect when the proxy is restarted: the sockets it listens on.
pub const RESTART_KEYS: [&str; 2] = ["listen.address", "admin.address"];

/// One key whose value differs between two configurations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// The key: a flag's edx-platform name, or a dotted path such as `backends.csmh.address`.
    pub key: String,
    /// What it was and what it becomes.
    pub values: Values,
}

/// The two sides of a [`Change`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Values {
    /// Values that may be logged: absent ones read `unset` (`off` for the admin listener).
    Shown {
        /// The value in force before.
        from: String,
        /// The new value.
        to: String,
    },
    /// A secret: only the fact that it changed is told.
    Secret,
}

impl Change {
    /// Whether the change takes effect only at the next restart (see [`RESTART_KEYS`]).
    pub fn needs_restart(&self) -> bool {
        RESTART_KEYS.contains(&self.key.as_str())
    }
}

/// `ENABLE_CSMH_EXTENDED: false -> true`, or `backends.csmh.password changed`.
impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.values {
            Values::Shown { from, to } => write!(f, "{}: {from} -> {to}", self.key),
            Values::Secret => write!(f, "{} changed", self.key),
        }
    }
}

/// Every key whose value differs from `old` to `new`: the flags first (the usual reason for a reload), then the
/// tables, the backends and the listeners. Empty exactly when the two are equal.
pub fn changes(old: &Config, new: &Config) -> Vec<Change> {
    // Taken apart field by field, so that a key added to `Config` cannot be forgotten here.
    let Config { listen, admin, backends, history, flags, shadow } = new;
    let mut found = Found::default();
    found.flags(&old.flags, flags);
    found.shown("shadow.sample", old.shadow.sample, shadow.sample);
    found.history(&old.history, history);
    found.backends(&old.backends, backends);
    found.listen(&old.listen, listen);
    found.shown("admin.address", admin_address(old.admin.as_ref()), admin_address(admin.as_ref()));
    found.0
}

/// Changes as they are found.
#[derive(Default)]
struct Found(Vec<Change>);

impl Found {
    /// Notes `key` if its value differs, showing both values.
    fn shown<T: PartialEq + fmt::Display>(&mut self, key: impl Into<String>, from: T, to: T) {
        if from != to {
            let values = Values::Shown { from: from.to_string(), to: to.to_string() };
            self.0.push(Change { key: key.into(), values });
        }
    }

    /// Notes `key` if its value differs, without showing either value.
    fn secret<T: PartialEq>(&mut self, key: impl Into<String>, from: T, to: T) {
        if from != to {
            self.0.push(Change { key: key.into(), values: Values::Secret });
        }
    }

    fn flags(&mut self, old: &Flags, new: &Flags) {
        let Flags { enable_csmh_extended: _, enable_reading_from_multiple_history_tables: _, read_only_from_csmhe: _ } =
            new;
        for flag in Flag::ALL {
            self.shown(flag.name(), old.is_on(flag), new.is_on(flag));
        }
    }

    fn history(&mut self, old: &HistoryTables, new: &HistoryTables) {
        let HistoryTables { old_table, extended_table, id_offset } = new;
        self.shown("history.old_table", &old.old_table, old_table);
        self.shown("history.extended_table", &old.extended_table, extended_table);
        self.shown("history.id_offset", old.id_offset, *id_offset);
    }

    fn backends(&mut self, old: &Backends, new: &Backends) {
        let Backends { edxapp, csmh } = new;
        self.backend("backends.edxapp", &old.edxapp, edxapp);
        self.backend("backends.csmh", &old.csmh, csmh);
    }

    fn backend(&mut self, prefix: &str, old: &Backend, new: &Backend) {
        let Backend {
            address,
            user,
            password,
            password_env,
            connect_timeout_secs,
            read_timeout_secs,
            tls,
            preconnect,
            keep_idle,
            grants_valid_secs,
        } = new;
        self.shown(format!("{prefix}.address"), &old.address, address);
        self.shown(format!("{prefix}.user"), or_unset(old.user.as_deref()), or_unset(user.as_deref()));
        self.secret(format!("{prefix}.password"), &old.password, password);
        self.shown(
            format!("{prefix}.password_env"),
            or_unset(old.password_env.as_deref()),
            or_unset(password_env.as_deref()),
        );
        self.shown(format!("{prefix}.connect_timeout_secs"), old.connect_timeout_secs, *connect_timeout_secs);
        self.shown(format!("{prefix}.read_timeout_secs"), old.read_timeout_secs, *read_timeout_secs);
        self.backend_tls(&format!("{prefix}.tls"), &old.tls, tls);
        self.preconnect(&format!("{prefix}.preconnect"), old.preconnect, *preconnect);
        let default = super::DEFAULT_KEEP_IDLE;
        self.shown(format!("{prefix}.keep_idle"), old.keep_idle.unwrap_or(default), keep_idle.unwrap_or(default));
        let default = super::DEFAULT_GRANTS_VALID_SECS;
        let (old_valid, valid) = (old.grants_valid_secs.unwrap_or(default), grants_valid_secs.unwrap_or(default));
        self.shown(format!("{prefix}.grants_valid_secs"), old_valid, valid);
    }

    fn preconnect(&mut self, prefix: &str, old: Option<Preconnect>, new: Option<Preconnect>) {
        let Preconnect { max, max_age_ms } = new.unwrap_or_default();
        let old = old.unwrap_or_default();
        self.shown(format!("{prefix}.max"), old.max, max);
        self.shown(format!("{prefix}.max_age_ms"), old.max_age_ms, max_age_ms);
    }

    fn backend_tls(&mut self, prefix: &str, old: &BackendTls, new: &BackendTls) {
        let BackendTls { mode, ca, certificate, key, server_name, server_public_key } = new;
        self.shown(format!("{prefix}.mode"), old.mode.as_str(), mode.as_str());
        self.shown(format!("{prefix}.ca"), path_or_unset(old.ca.as_deref()), path_or_unset(ca.as_deref()));
        self.shown(
            format!("{prefix}.certificate"),
            path_or_unset(old.certificate.as_deref()),
            path_or_unset(certificate.as_deref()),
        );
        self.shown(format!("{prefix}.key"), path_or_unset(old.key.as_deref()), path_or_unset(key.as_deref()));
        self.shown(
            format!("{prefix}.server_name"),
            or_unset(old.server_name.as_deref()),
            or_unset(server_name.as_deref()),
        );
        self.shown(
            format!("{prefix}.server_public_key"),
            path_or_unset(old.server_public_key.as_deref()),
            path_or_unset(server_public_key.as_deref()),
        );
    }

    fn listen_tls(&mut self, old: Option<&ListenTls>, new: Option<&ListenTls>) {
        let path = |tls: Option<&ListenTls>, pick: fn(&Path, &Path) -> String| match tls.map(|tls| &tls.certificate) {
            None => "off".to_owned(),
            Some(ListenCertificate::SelfSigned) => "self-signed".to_owned(),
            Some(ListenCertificate::Files { certificate, key }) => pick(certificate, key),
        };
        let certificate = |certificate: &Path, _: &Path| certificate.display().to_string();
        let key = |_: &Path, key: &Path| key.display().to_string();
        self.shown("listen.tls.certificate", path(old, certificate), path(new, certificate));
        self.shown("listen.tls.key", path(old, key), path(new, key));
        let required = |tls: Option<&ListenTls>| tls.is_some_and(|tls| tls.required);
        self.shown("listen.tls.required", required(old), required(new));
    }

    fn listen(&mut self, old: &Listen, new: &Listen) {
        let Listen {
            address,
            shutdown_timeout_secs,
            drain_secs,
            max_connections,
            max_handshakes,
            handshake_timeout_secs,
            max_packet_bytes,
            max_parsed_statement_bytes,
            answer_settings_early,
            tls,
        } = new;
        self.shown("listen.address", &old.address, address);
        self.shown("listen.shutdown_timeout_secs", old.shutdown_timeout_secs, *shutdown_timeout_secs);
        self.shown("listen.drain_secs", old.drain_secs, *drain_secs);
        self.shown("listen.max_connections", old.max_connections, *max_connections);
        self.shown("listen.max_handshakes", old.max_handshakes, *max_handshakes);
        self.shown("listen.handshake_timeout_secs", old.handshake_timeout_secs, *handshake_timeout_secs);
        self.shown("listen.max_packet_bytes", old.max_packet_bytes, *max_packet_bytes);
        self.shown("listen.max_parsed_statement_bytes", old.max_parsed_statement_bytes, *max_parsed_statement_bytes);
        self.shown("listen.answer_settings_early", old.answer_settings_early, *answer_settings_early);
        self.listen_tls(old.tls.as_ref(), tls.as_ref());
    }
}

/// An optional value as the log shows it.
fn or_unset(value: Option<&str>) -> &str {
    value.unwrap_or("unset")
}

/// A file's path as the log shows it.
fn path_or_unset(path: Option<&Path>) -> String {
    path.map_or_else(|| "unset".to_owned(), |path| path.display().to_string())
}

/// The admin listener's address, or `off`.
fn admin_address(admin: Option<&Admin>) -> &str {
    admin.map_or("off", |admin| admin.address.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = r#"
[listen]
address = "127.0.0.1:6033"

[backends.edxapp]
address = "127.0.0.1:3306"

[backends.csmh]
address = "127.0.0.1:3307"
user = "edxapp001"
password = "first-secret"
"#;

    fn config(text: &str) -> Config {
        Config::parse(text).unwrap_or_else(|e| panic!("{e}\n{text}"))
    }

    fn listed(old: &str, new: &str) -> Vec<String> {
        changes(&config(old), &config(new)).iter().map(Change::to_string).collect()
    }

    #[test]
    fn equal_configurations_have_no_changes() {
        assert!(listed(BASE, BASE).is_empty());
        let with_comment = format!("# a comment\n{BASE}");
        assert!(listed(BASE, &with_comment).is_empty());
    }

    #[test]
    fn flags_are_listed_by_their_edx_platform_names_in_the_documented_order() {
        let new = format!("{BASE}\n[flags]\nREAD_ONLY_FROM_CSMHE = true\nENABLE_CSMH_EXTENDED = true\n");
        assert_eq!(listed(BASE, &new), ["ENABLE_CSMH_EXTENDED: false -> true", "READ_ONLY_FROM_CSMHE: false -> true"]);
    }

    #[test]
    fn a_password_change_is_told_without_either_value() {
        let new = BASE.replace("first-secret", "second-secret");
        let found = listed(BASE, &new);
        assert_eq!(found, ["backends.csmh.password changed"]);
        assert!(!found.concat().contains("secret"));
    }

    #[test]
    fn addresses_timeouts_tables_and_logins_are_listed_with_both_values() {
        let new = BASE
            .replace("127.0.0.1:3307\"", "127.0.0.1:3308\"\nconnect_timeout_secs = 2")
            .replace("user = \"edxapp001\"", "user = \"proxy\"")
            .replace("password = \"first-secret\"", "password_env = \"HOME\"")
            + "\n[history]\nold_table = \"edxapp.other_history\"\n";
        assert_eq!(
            listed(BASE, &new),
            [
                "history.old_table: edxapp.courseware_studentmodulehistory -> edxapp.other_history",
                "backends.csmh.address: 127.0.0.1:3307 -> 127.0.0.1:3308",
                "backends.csmh.user: edxapp001 -> proxy",
                "backends.csmh.password changed",
                "backends.csmh.password_env: unset -> HOME",
                "backends.csmh.connect_timeout_secs: 5 -> 2",
            ]
        );
    }

    #[test]
    fn listener_addresses_need_a_restart_and_its_limits_do_not() {
        let limits = "shutdown_timeout_secs = 3\nmax_connections = 10\nmax_handshakes = 2\nhandshake_timeout_secs = 1\n\
                      max_packet_bytes = 4096\nmax_parsed_statement_bytes = 1024";
        let new = BASE.replace("127.0.0.1:6033\"", &format!("127.0.0.1:6034\"\n{limits}"))
            + "\n[admin]\naddress = \"127.0.0.1:6080\"\n";
        let found = changes(&config(BASE), &config(&new));
        let described: Vec<(String, bool)> = found.iter().map(|c| (c.to_string(), c.needs_restart())).collect();
        assert_eq!(
            described,
            [
                ("listen.address: 127.0.0.1:6033 -> 127.0.0.1:6034".to_owned(), true),
                ("listen.shutdown_timeout_secs: 10 -> 3".to_owned(), false),
                ("listen.max_connections: 2000 -> 10".to_owned(), false),
                ("listen.max_handshakes: 256 -> 2".to_owned(), false),
                ("listen.handshake_timeout_secs: 5 -> 1".to_owned(), false),
                ("listen.max_packet_bytes: 67108864 -> 4096".to_owned(), false),
                ("listen.max_parsed_statement_bytes: 4194304 -> 1024".to_owned(), false),
                ("admin.address: off -> 127.0.0.1:6080".to_owned(), true),
            ]
        );
    }
}
