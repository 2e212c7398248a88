//! Connections to the MySQL servers behind the proxy.

use std::io;
use std::time::Duration;

use bytes::BytesMut;
use mysql_common::constants::{CapabilityFlags, MariadbCapabilities};
use mysql_common::io::ParseBuf;
use mysql_common::packets::{AuthPlugin, AuthPluginData, AuthSwitchRequest, HandshakeResponse};
use mysql_common::proto::MySerialize;
use tokio::net::TcpStream;
use zeroize::Zeroizing;

use crate::auth_key::ServerPublicKey;
use crate::protocol::ProtocolError;
use crate::protocol::capabilities::{Negotiated, announces_mariadb};
use crate::protocol::command::COM_QUERY;
use crate::protocol::conn::Connection;
use crate::protocol::errors::MysqlError;
use crate::protocol::frame;
use crate::protocol::packets::{self, AuthAnswer};
use crate::protocol::reply::Reply;
use crate::protocol::response::{Expect, Progress, ResponseScanner};
use crate::resolver::Resolver;
use crate::tls::{BackendTls, Leg, LegRefusal};

/// Why a backend could not be reached.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// The TCP connection failed.
    #[error("cannot connect to backend {address}: {source}")]
    Connect {
        /// The backend's `host:port`.
        address: String,
        /// What the OS said.
        source: io::Error,
    },
    /// The TCP connection did not complete in time.
    #[error("cannot connect to backend {address}: no answer within {seconds} s")]
    Timeout {
        /// The backend's `host:port`.
        address: String,
        /// The configured connect timeout.
        seconds: u64,
    },
}

impl BackendError {
    /// The backend's address.
    pub fn address(&self) -> &str {
        match self {
            BackendError::Connect { address, .. } | BackendError::Timeout { address, .. } => address,
        }
    }
}

/// Opens a TCP connection to `address`, its host name looked up through `resolver`, giving up after
/// `timeout_secs` (the lookup included). After a failed attempt the next connection looks the name up again.
pub async fn connect(resolver: &Resolver, address: &str, timeout_secs: u64) -> Result<Connection, BackendError> {
    let attempt = tokio::time::timeout(Duration::from_secs(timeout_secs), async {
        let addresses = resolver.addresses(address).await?;
        TcpStream::connect(&addresses[..]).await
    });
    let result = match attempt.await {
        Ok(Ok(stream)) => return Ok(Connection::new(stream)),
        Ok(Err(source)) => Err(BackendError::Connect { address: address.to_owned(), source }),
        Err(_) => Err(BackendError::Timeout { address: address.to_owned(), seconds: timeout_secs }),
    };
    resolver.forget(address);
    result
}

/// Who the proxy logs in as on a server it authenticates to itself (the `csmh` backend on its own server).
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// User name.
    pub user: String,
    /// Password; `None` for an account without one.
    pub password: Option<String>,
    /// Default database.
    pub database: Option<String>,
}

/// Debug output that never shows the password, so that logging credentials leaks no secret.
impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("database", &self.database)
            .finish()
    }
}

/// Capabilities the proxy asks for when it logs in by itself; callers add session-specific ones such as
/// CLIENT_FOUND_ROWS to match their client.
pub const LOGIN_CAPABILITIES: CapabilityFlags = CapabilityFlags::CLIENT_LONG_PASSWORD
    .union(CapabilityFlags::CLIENT_LONG_FLAG)
    .union(CapabilityFlags::CLIENT_PROTOCOL_41)
    .union(CapabilityFlags::CLIENT_TRANSACTIONS)
    .union(CapabilityFlags::CLIENT_SECURE_CONNECTION)
    .union(CapabilityFlags::CLIENT_MULTI_RESULTS)
    .union(CapabilityFlags::CLIENT_PS_MULTI_RESULTS)
    .union(CapabilityFlags::CLIENT_PLUGIN_AUTH)
    .union(CapabilityFlags::CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA)
    .union(CapabilityFlags::CLIENT_SESSION_TRACK)
    .union(CapabilityFlags::CLIENT_DEPRECATE_EOF);

/// Why the proxy's own login to a backend failed.
#[derive(Debug, thiserror::Error)]
pub enum LoginError {
    /// The connection failed while logging in.
    #[error("connection lost while logging in: {0}")]
    Io(#[from] io::Error),
    /// The server answered something that is not a valid handshake.
    #[error("malformed handshake from the server: {0}")]
    Protocol(&'static str),
    /// The server refused the login (wrong password, unknown user, no access to the database).
    #[error("login refused: {0}")]
    Refused(String),
    /// The server asked for an authentication method the proxy cannot perform.
    #[error("unsupported authentication method {0}")]
    UnsupportedAuth(String),
    /// The connection cannot have the TLS its settings require.
    #[error(transparent)]
    TlsRefused(#[from] LegRefusal),
    /// The TLS handshake with the server failed (its certificate did not verify, or the handshake broke).
    #[error("TLS handshake: {0}")]
    Tls(io::Error),
    /// The server asked for the password in full over a connection without TLS, and the proxy has no key of
    /// the server's to encrypt it with: a key the server sent could be an attacker's.
    #[error(
        "the server asks for the password in full (caching_sha2_password) over a connection without TLS: \
         csmh-proxy sends it only inside TLS, or encrypted with the server's public key given in \
         tls.server_public_key, never with a key the server sends, which anyone on the path could replace; use TLS \
         to this server (tls.mode = \"required\" or stronger) or set tls.server_public_key"
    )]
    PasswordWithoutTls,
}

/// Logs in on a freshly connected server as `credentials`, asking for `capabilities` (usually
/// [`LOGIN_CAPABILITIES`] plus what the session needs; masked to what the server offers and the proxy implements).
/// Returns the capabilities in effect.
pub async fn login(
    conn: &mut Connection,
    credentials: &Credentials,
    capabilities: CapabilityFlags,
) -> Result<Negotiated, LoginError> {
    login_mariadb(conn, credentials, capabilities, MariadbCapabilities::empty()).await
}

/// [`login`], asking a MariaDB server for `mariadb`'s extended capabilities too (those the relay follows), in
/// plaintext.
pub async fn login_mariadb(
    conn: &mut Connection,
    credentials: &Credentials,
    capabilities: CapabilityFlags,
    mariadb: MariadbCapabilities,
) -> Result<Negotiated, LoginError> {
    login_over(conn, credentials, capabilities, mariadb, None).await
}

/// The TLS a login of the proxy's own runs with: a backend's settings, and whether the client the connection
/// serves reached the proxy over TLS (its traffic then never crosses in plaintext).
#[derive(Debug, Clone, Copy)]
pub struct LoginTls<'a> {
    /// The backend's `[backends.<name>.tls]`, built.
    pub settings: &'a BackendTls,
    /// The client's own connection runs inside TLS.
    pub client_tls: bool,
}

/// [`login_mariadb`] with TLS as `tls` says (plaintext when `None`); returns the capabilities in effect.
pub async fn login_over(
    conn: &mut Connection,
    credentials: &Credentials,
    capabilities: CapabilityFlags,
    mariadb: MariadbCapabilities,
    tls: Option<LoginTls<'_>>,
) -> Result<Negotiated, LoginError> {
    let (payload, seq) = read_packet(conn).await?;
    refused_if_err(&payload)?;
    let greeting = packets::parse_greeting(&payload).map_err(|_| LoginError::Protocol("initial handshake"))?;
    let mut caps = capabilities;
    caps.set(CapabilityFlags::CLIENT_CONNECT_WITH_DB, credentials.database.is_some());
    // A client says that MariaDB's extended capabilities follow by clearing CLIENT_MYSQL (CLIENT_LONG_PASSWORD).
    caps.set(CapabilityFlags::CLIENT_LONG_PASSWORD, mariadb.is_empty());
    let server = greeting.capabilities().bits();
    let server_mariadb = if announces_mariadb(server) { greeting.mariadb_ext_capabilities().bits() } else { 0 };
    let negotiated = Negotiated::new(server, caps.bits()).with_mariadb(server_mariadb, mariadb.bits());
    let offers_tls = greeting.capabilities().contains(CapabilityFlags::CLIENT_SSL);
    let leg = match tls {
        Some(tls) => tls.settings.leg(offers_tls, tls.client_tls)?,
        None => Leg::Plain,
    };
    let mut flags = negotiated.flags();
    flags.set(CapabilityFlags::CLIENT_SSL, matches!(leg, Leg::Tls(..)));
    let mut nonce = greeting.nonce();
    let plugin = greeting.auth_plugin().unwrap_or(AuthPlugin::MysqlNativePassword).into_owned();
    let data = auth_data(&plugin, credentials, &nonce)?;
    let response = HandshakeResponse::new(
        data.as_deref(),
        greeting.server_version_parsed().unwrap_or((5, 5, 5)),
        Some(credentials.user.as_bytes()),
        credentials.database.as_deref().map(str::as_bytes),
        Some(plugin),
        flags,
        None,
        frame::MAX_PAYLOAD as u32,
    )
    .with_mariadb_ext_capabilities(negotiated.mariadb());
    let mut payload = Vec::new();
    response.serialize(&mut payload);
    let mut seq = seq.wrapping_add(1);
    if let Leg::Tls(connector, name) = leg {
        let request = packets::tls_request(&payload).map_err(|_| LoginError::Protocol("handshake response"))?;
        send_raw(conn, seq, request).await?;
        conn.connect_tls(connector, name).await.map_err(LoginError::Tls)?;
        seq = seq.wrapping_add(1);
    }
    send_raw(conn, seq, &payload).await?;
    let server_key = tls.and_then(|tls| tls.settings.server_public_key());
    finish_auth(conn, credentials, &mut nonce, server_key).await?;
    Ok(negotiated)
}

/// Answers auth switches and extra rounds until the server says OK or ERR; `nonce` is the scramble in force
/// (an auth switch brings a new one); `server_key` encrypts the password in a full authentication without TLS.
async fn finish_auth(
    conn: &mut Connection,
    credentials: &Credentials,
    nonce: &mut Vec<u8>,
    server_key: Option<&ServerPublicKey>,
) -> Result<(), LoginError> {
    loop {
        let (payload, seq) = read_packet(conn).await?;
        match AuthAnswer::classify(&payload) {
            AuthAnswer::Ok => return Ok(()),
            AuthAnswer::Switch => {
                let switch: AuthSwitchRequest<'_> =
                    ParseBuf(&payload).parse(()).map_err(|_| LoginError::Protocol("auth switch request"))?;
                let data = switch.plugin_data();
                *nonce = data.strip_suffix(b"\0").unwrap_or(data).to_vec();
                let data = auth_data(&switch.auth_plugin(), credentials, nonce)?;
                let mut out = Vec::new();
                if let Some(data) = data {
                    data.serialize(&mut out);
                }
                send_raw(conn, seq.wrapping_add(1), &out).await?;
            }
            AuthAnswer::FastAuthOk => {}
            AuthAnswer::MoreData if payload[..] == packets::FULL_AUTH => {
                full_authentication(conn, credentials, nonce, seq.wrapping_add(1), server_key).await?;
            }
            AuthAnswer::MoreData => {
                return Err(LoginError::Protocol("unexpected authentication data"));
            }
            AuthAnswer::Err | AuthAnswer::Other => {
                refused_if_err(&payload).and(Err(LoginError::Protocol("authentication response")))?
            }
        }
    }
}

/// caching_sha2_password's full authentication, the server having asked for the password (packet `seq` is the
/// proxy's): in cleartext over TLS; in plaintext encrypted with the server's RSA public key the proxy was given
/// (`server_key`), never with one the server sends; refused without.
async fn full_authentication(
    conn: &mut Connection,
    credentials: &Credentials,
    nonce: &[u8],
    seq: u8,
    server_key: Option<&ServerPublicKey>,
) -> Result<(), LoginError> {
    let password: Zeroizing<Vec<u8>> =
        Zeroizing::new(credentials.password.as_deref().unwrap_or("").bytes().chain([0]).collect());
    if conn.is_tls() {
        return send_raw(conn, seq, &password).await;
    }
    let key = server_key.ok_or(LoginError::PasswordWithoutTls)?;
    let encrypted = key.encrypt_password(&password, nonce).map_err(|_| LoginError::Protocol("password too long"))?;
    send_raw(conn, seq, &encrypted).await
}

/// Computes the auth response for `plugin`, refusing methods the proxy does not implement.
fn auth_data<'a>(
    plugin: &AuthPlugin<'_>,
    credentials: &'a Credentials,
    nonce: &[u8],
) -> Result<Option<AuthPluginData<'a>>, LoginError> {
    match plugin {
        AuthPlugin::MysqlNativePassword | AuthPlugin::CachingSha2Password | AuthPlugin::Ed25519 => {
            Ok(plugin.gen_data(credentials.password.as_deref(), nonce))
        }
        other => Err(LoginError::UnsupportedAuth(String::from_utf8_lossy(other.as_bytes()).into_owned())),
    }
}

fn refused_if_err(payload: &[u8]) -> Result<(), LoginError> {
    if AuthAnswer::classify(payload) != AuthAnswer::Err {
        return Ok(());
    }
    let message = MysqlError::parse(payload).map_or_else(|| "malformed error packet".into(), |e| e.to_string());
    Err(LoginError::Refused(message))
}

async fn read_packet(conn: &mut Connection) -> Result<(bytes::Bytes, u8), LoginError> {
    let span = conn.next_packet().await?.ok_or_else(|| io::Error::from(io::ErrorKind::UnexpectedEof))?;
    let wire = conn.buf.split_to(span.wire_len).freeze();
    Ok((frame::payload(wire, &span), span.last_seq))
}

async fn send_raw(conn: &mut Connection, seq: u8, payload: &[u8]) -> Result<(), LoginError> {
    let mut out = BytesMut::new();
    frame::write_packet(&mut out, seq, payload);
    Ok(conn.write_all(&out).await?)
}

/// Why a statement the proxy runs for itself got no answer.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// The connection failed or closed.
    #[error("connection lost: {0}")]
    Io(#[from] io::Error),
    /// The answer does not follow the protocol.
    #[error("malformed answer: {0}")]
    Protocol(#[from] ProtocolError),
    /// The answer is larger than the caller keeps in memory.
    #[error("the answer is larger than {0} bytes")]
    TooLarge(usize),
}

/// Runs `sql` as a COM_QUERY on `conn` and reads the whole answer, refusing one larger than `limit` bytes (the
/// rest is read and dropped, so the connection stays usable).
pub async fn query_within(
    conn: &mut Connection,
    caps: Negotiated,
    sql: &[u8],
    limit: usize,
) -> Result<Reply, QueryError> {
    send_command(conn, COM_QUERY, sql).await?;
    let response = read_response_within(conn, caps, Expect::ResultSets, limit).await?;
    Ok(Reply::parse(&response, caps)?)
}

/// Runs `sql` as a COM_QUERY on `conn` and reads the whole answer (a small one: an OK, an ERR, or a few rows).
pub async fn query(conn: &mut Connection, caps: Negotiated, sql: &[u8]) -> Result<Reply, QueryError> {
    command(conn, caps, COM_QUERY, sql, Expect::ResultSets).await
}

/// Sends one command (`command` byte, then `body`) on `conn` and reads the whole answer, of shape `expect`.
pub async fn command(
    conn: &mut Connection,
    caps: Negotiated,
    command: u8,
    body: &[u8],
    expect: Expect,
) -> Result<Reply, QueryError> {
    send_command(conn, command, body).await?;
    let response = read_response(conn, caps, expect).await?;
    Ok(match expect {
        Expect::Prepare => Reply::parse_prepared(&response, caps)?,
        _ => Reply::parse(&response, caps)?,
    })
}

/// Reads one whole response of shape `expect` (a small one) from `conn` into memory, frame headers included.
pub async fn read_response(conn: &mut Connection, caps: Negotiated, expect: Expect) -> Result<BytesMut, QueryError> {
    read_response_within(conn, caps, expect, usize::MAX).await
}

/// [`read_response`], refusing a response larger than `limit` bytes once it has been read to its end.
async fn read_response_within(
    conn: &mut Connection,
    caps: Negotiated,
    expect: Expect,
    limit: usize,
) -> Result<BytesMut, QueryError> {
    let mut scanner = ResponseScanner::new(expect, caps);
    let mut response = BytesMut::new();
    let mut too_large = false;
    loop {
        let (n, progress) = scanner.scan(&conn.buf)?;
        too_large |= response.len() + n > limit;
        if too_large {
            response.clear();
        } else {
            response.extend_from_slice(&conn.buf[..n]);
        }
        conn.consume(n);
        match progress {
            Progress::NeedMore if conn.fill().await? == 0 => {
                return Err(io::Error::from(io::ErrorKind::UnexpectedEof).into());
            }
            Progress::NeedMore => {}
            Progress::Done(_) if too_large => return Err(QueryError::TooLarge(limit)),
            Progress::Done(_) => return Ok(response),
            Progress::ClientTurn(_) => {
                return Err(ProtocolError::Unsupported("the server asked the proxy for data").into());
            }
        }
    }
}

/// Sends one command packet (sequence id 0) with `body` after the command byte.
pub async fn send_command(conn: &mut Connection, command: u8, body: &[u8]) -> io::Result<()> {
    let mut out = BytesMut::with_capacity(body.len() + 8);
    put_command(&mut out, command, body);
    conn.write_all(&out).await
}

/// Sends `commands` (each a command byte and its body; each answered with an OK, an ERR or a few rows) in one
/// write, and reads their answers in order. The server answers one command after the other, so the whole costs
/// one round trip; every answer is read, an ERR among them included, so that the connection is between commands
/// again. Nothing is sent for no command.
pub async fn pipeline(
    conn: &mut Connection,
    caps: Negotiated,
    commands: &[(u8, &[u8])],
) -> Result<Vec<Reply>, QueryError> {
    if commands.is_empty() {
        return Ok(Vec::new());
    }
    let mut out = BytesMut::new();
    for (command, body) in commands {
        put_command(&mut out, *command, body);
    }
    conn.write_all(&out).await?;
    let mut replies = Vec::with_capacity(commands.len());
    for _ in commands {
        let response = read_response(conn, caps, Expect::ResultSets).await?;
        replies.push(Reply::parse(&response, caps)?);
    }
    Ok(replies)
}

/// Appends a command packet (sequence id 0) with `body` after the command byte to `out`.
fn put_command(out: &mut BytesMut, command: u8, body: &[u8]) {
    let mut payload = Vec::with_capacity(1 + body.len());
    payload.push(command);
    payload.extend_from_slice(body);
    frame::write_packet(out, 0, &payload);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_never_show_their_password() {
        let credentials =
            Credentials { user: "proxy".to_owned(), password: Some("s3cret-Pa55".to_owned()), database: None };
        let shown = format!("{credentials:?}");
        assert!(shown.contains("proxy") && !shown.contains("s3cret"), "{shown}");
    }
}
