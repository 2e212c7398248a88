//! [`ProxyToml`]: the `proxy.toml` the sandbox and the tests' fixture write for a proxy in front of local
//! servers.

use std::fmt::Write as _;
use std::net::SocketAddr;

use crate::config::{Config, ConfigError};
use crate::history::{Flag, Flags};

use super::accounts::Account;
use super::schema::{CSMH_DB, EDXAPP_DB, EXTENDED_TABLE, OLD_TABLE};

/// The `proxy.toml` of a proxy in front of local servers, as the sandbox and the tests' fixture write it.
#[derive(Debug, Clone)]
pub struct ProxyToml {
    /// `[listen] address`; port 0 picks a free port.
    pub listen: SocketAddr,
    /// The server of the `edxapp` database.
    pub edxapp: SocketAddr,
    /// The server of the `edxapp_csmh` database (may be `edxapp`'s).
    pub csmh: SocketAddr,
    /// The account the proxy logs in to `csmh` with; written only when it is another server.
    pub csmh_account: Account,
    /// The account the migration commands log in to `edxapp` with (`[backends.edxapp] user`), so that `status`,
    /// `init`, `migrate` and the rest run against the same file; `None` writes none.
    pub migration_account: Option<Account>,
    /// `[history] old_table`, schema-qualified.
    pub old_table: String,
    /// `[history] extended_table`, schema-qualified.
    pub extended_table: String,
    /// `[flags]`.
    pub flags: Flags,
    /// `[admin] address`; none when `None`.
    pub admin: Option<SocketAddr>,
    /// `[shadow] sample`; written when above 0.
    pub shadow_sample: f64,
    /// `[backends.csmh] keep_idle`; written when set.
    pub csmh_keep_idle: Option<usize>,
}

impl ProxyToml {
    /// The real edX names on `edxapp` and `csmh`, the app account, every flag off.
    pub fn edx(listen: SocketAddr, edxapp: SocketAddr, csmh: SocketAddr) -> ProxyToml {
        ProxyToml {
            listen,
            edxapp,
            csmh,
            csmh_account: Account::app(),
            migration_account: Some(Account::app()),
            old_table: format!("{EDXAPP_DB}.{OLD_TABLE}"),
            extended_table: format!("{CSMH_DB}.{EXTENDED_TABLE}"),
            flags: Flags::default(),
            admin: None,
            shadow_sample: 0.0,
            csmh_keep_idle: None,
        }
    }

    /// The file's text.
    pub fn render(&self) -> String {
        let quoted = |text: &str| toml::Value::String(text.to_owned()).to_string();
        let mut text =
            format!("[listen]\naddress = \"{}\"\n\n[backends.edxapp]\naddress = \"{}\"\n", self.listen, self.edxapp);
        if let Some(account) = &self.migration_account {
            let (user, password) = (quoted(&account.user), quoted(&account.password));
            let _ = writeln!(text, "user = {user}\npassword = {password}");
        }
        text.push('\n');
        let _ = writeln!(text, "[backends.csmh]\naddress = \"{}\"", self.csmh);
        if self.csmh != self.edxapp {
            let (user, password) = (quoted(&self.csmh_account.user), quoted(&self.csmh_account.password));
            let _ = writeln!(text, "user = {user}\npassword = {password}");
        }
        if let Some(keep_idle) = self.csmh_keep_idle {
            let _ = writeln!(text, "keep_idle = {keep_idle}");
        }
        let (old, extended) = (quoted(&self.old_table), quoted(&self.extended_table));
        let _ = writeln!(text, "\n[history]\nold_table = {old}\nextended_table = {extended}\n\n[flags]");
        for flag in Flag::ALL {
            let _ = writeln!(text, "{flag} = {}", self.flags.is_on(flag));
        }
        if let Some(admin) = self.admin {
            let _ = writeln!(text, "\n[admin]\naddress = \"{admin}\"");
        }
        if self.shadow_sample > 0.0 {
            let _ = writeln!(text, "\n[shadow]\nsample = {:?}", self.shadow_sample);
        }
        text
    }

    /// The parsed and validated configuration.
    pub fn config(&self) -> Result<Config, ConfigError> {
        Config::parse(&self.render())
    }
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, SocketAddrV4};

    use super::*;
    use crate::sandbox::APP_USER;

    #[test]
    fn the_generated_proxy_toml_is_a_valid_configuration() {
        let addr = |port| SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, port));
        let two = ProxyToml::edx(addr(0), addr(3306), addr(3307));
        let config = two.config().unwrap_or_else(|e| panic!("{e}\n{}", two.render()));
        assert_eq!(config.backends.csmh.user.as_deref(), Some(APP_USER));
        assert_eq!(config.flags, Flags::default());
        let one = ProxyToml { flags: Flags { enable_csmh_extended: true, ..Flags::default() }, ..two };
        let one = ProxyToml { csmh: one.edxapp, ..one };
        let config = one.config().unwrap_or_else(|e| panic!("{e}\n{}", one.render()));
        assert_eq!(config.backends.csmh.user, None);
        assert!(config.flags.enable_csmh_extended);
    }
}
