//! MariaDB accounts: [`Account`] and its [`AuthPlugin`], the edxapp application account, creating accounts and
//! granting them databases, and the connection options of a TCP login.

use std::net::SocketAddr;

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Opts, OptsBuilder};

use super::sql::{quote_ident, quote_string};

/// The application account edxapp logs in as, in the sandbox and in the tests.
pub const APP_USER: &str = "edxapp001";
/// The application account's password (the servers listen on 127.0.0.1 only).
pub const APP_PASSWORD: &str = "sandbox-password";

/// How an account proves its password.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthPlugin {
    /// `mysql_native_password`, what edxapp's accounts use.
    NativePassword,
    /// MariaDB's `ed25519` (the servers load the plugin), to show that other methods pass through too.
    Ed25519,
}

impl AuthPlugin {
    fn sql_name(self) -> &'static str {
        match self {
            AuthPlugin::NativePassword => "mysql_native_password",
            AuthPlugin::Ed25519 => "ed25519",
        }
    }
}

/// A MariaDB account: who logs in, with what password, checked how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    /// The user name; the account's host is `%`.
    pub user: String,
    /// The password.
    pub password: String,
    /// How the password is checked.
    pub plugin: AuthPlugin,
}

impl Account {
    /// A `mysql_native_password` account.
    pub fn native(user: &str, password: &str) -> Account {
        Account { user: user.to_owned(), password: password.to_owned(), plugin: AuthPlugin::NativePassword }
    }

    /// edxapp's application account, [`APP_USER`].
    pub fn app() -> Account {
        Account::native(APP_USER, APP_PASSWORD)
    }

    /// Connection options for this account at `addr`, over TCP.
    pub fn opts(&self, addr: SocketAddr, database: Option<&str>) -> Opts {
        tcp_opts(addr, &self.user, Some(&self.password), database)
    }
}

/// Connection options for a TCP login. `prefer_socket` is off: mysql_async would otherwise switch a loopback
/// connection to the server's Unix socket, where accounts match as `localhost` and no proxy is in the way.
pub fn tcp_opts(addr: SocketAddr, user: &str, password: Option<&str>, database: Option<&str>) -> Opts {
    OptsBuilder::default()
        .ip_or_hostname(addr.ip().to_string())
        .tcp_port(addr.port())
        .user(Some(user))
        .pass(password)
        .db_name(database)
        .prefer_socket(false)
        .into()
}

/// Creates `account` as `'user'@'%'`. With `skip-name-resolve`, `%` is what a TCP login from 127.0.0.1
/// matches (`localhost` entries only match Unix-socket logins).
pub async fn create_account(conn: &mut Conn, account: &Account) -> mysql_async::Result<()> {
    let sql = format!(
        "CREATE USER {}@'%' IDENTIFIED VIA {} USING PASSWORD({})",
        quote_string(&account.user),
        account.plugin.sql_name(),
        quote_string(&account.password)
    );
    conn.query_drop(sql).await
}

/// Grants `user@'%'` every privilege on `database` (which need not exist yet). LOAD DATA LOCAL needs nothing
/// more than INSERT on the table and the server's `local-infile`.
pub async fn grant_all(conn: &mut Conn, user: &str, database: &str) -> mysql_async::Result<()> {
    let sql = format!("GRANT ALL PRIVILEGES ON {}.* TO {}@'%'", quote_ident(database), quote_string(user));
    conn.query_drop(sql).await
}
