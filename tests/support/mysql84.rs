//! A scripted MySQL 8.4 server for caching_sha2_password, which no server installable here implements (MariaDB
//! 10.11 has no caching_sha2_password server plugin). It follows the sequence MySQL documents in
//! "Caching_sha2_password information" (page_caching_sha2_authentication_exchanges in MySQL's source
//! documentation):
//!
//! - a greeting (protocol 10, version `8.4.3`, a 20-byte nonce, MySQL 8.4's capabilities, with CLIENT_SSL when
//!   the server has a certificate, and `caching_sha2_password` as the authentication method);
//! - an optional SSLRequest, then TLS;
//! - the handshake response, answered with an AuthSwitchRequest if the client used another method than the
//!   account's (caching_sha2_password, or mysql_native_password for accounts created with it);
//! - for mysql_native_password, the scramble is checked in that one round: OK or ERR 1045;
//! - for caching_sha2_password, the scramble `XOR(SHA256(pw), SHA256(SHA256(SHA256(pw)) || nonce))` is checked
//!   when the account's hash is cached ("fast" authentication: `[0x01, 0x03]` then OK). Otherwise, or when the
//!   scramble does not match, the server asks for the password (`[0x01, 0x04]`): over TLS it reads the password
//!   in cleartext; in plaintext it reads either a request for its RSA public key (`[0x02]`, answered with the
//!   key's PEM in an AuthMoreData packet) followed by the password, or the password directly (a client that
//!   already has the key): `password\0` XORed with the nonce and encrypted with RSA-OAEP (SHA-1). OK, with the
//!   account's hash now cached as MySQL does, or ERR 1045 (SQLSTATE 28000);
//! - commands: COM_QUERY (OK, or a one-row result for a SELECT), COM_PING, COM_INIT_DB, COM_RESET_CONNECTION,
//!   COM_QUIT, and COM_CHANGE_USER, which runs the same authentication again, after an AuthSwitchRequest with a
//!   new nonce if the server is so configured.
//!
//! Every packet's sequence id is checked as a server does (a packet out of order is recorded as a violation and
//! ends the connection), and the server records what it saw: each packet, whether its leg was TLS, and each
//! authentication's path and the password it recovered, so that tests assert on the server's side of the wire.

use std::collections::HashSet;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use aws_lc_rs::digest::{SHA1_FOR_LEGACY_USE_ONLY, SHA256, digest};
use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rsa::{KeySize, OAEP_SHA1_MGF1SHA1, OaepPrivateDecryptingKey, PrivateDecryptingKey};
use base64::Engine;
use mysql_common::constants::CapabilityFlags;
use mysql_common::io::ParseBuf;
use mysql_common::packets::HandshakeResponse;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use super::tls::CertFiles;

/// The version the server announces.
pub const VERSION: &str = "8.4.3";

/// The default authentication method, the one the greeting names.
pub const CACHING_SHA2: &[u8] = b"caching_sha2_password";

/// The legacy authentication method some accounts still use.
pub const NATIVE_PASSWORD: &[u8] = b"mysql_native_password";

/// AuthMoreData: fast authentication succeeded, an OK follows.
pub const FAST_AUTH_OK: [u8; 2] = [0x01, 0x03];

/// AuthMoreData: the server needs the password itself.
pub const PERFORM_FULL_AUTH: [u8; 2] = [0x01, 0x04];

/// The client's request for the server's RSA public key.
pub const REQUEST_PUBLIC_KEY: [u8; 1] = [0x02];

/// Access denied, the error of a wrong password.
pub const ER_ACCESS_DENIED_ERROR: u16 = 1045;

/// MySQL 8.4's capabilities (CLIENT_SSL is added when the server has a certificate). It implements all of them but
/// compression, query attributes and optional result set metadata, which a client negotiating them is told off
/// for (see [`UNIMPLEMENTED`]): the proxy masks them.
const CAPABILITIES: CapabilityFlags = CapabilityFlags::CLIENT_LONG_PASSWORD
    .union(CapabilityFlags::CLIENT_FOUND_ROWS)
    .union(CapabilityFlags::CLIENT_LONG_FLAG)
    .union(CapabilityFlags::CLIENT_CONNECT_WITH_DB)
    .union(CapabilityFlags::CLIENT_NO_SCHEMA)
    .union(CapabilityFlags::CLIENT_COMPRESS)
    .union(CapabilityFlags::CLIENT_ODBC)
    .union(CapabilityFlags::CLIENT_LOCAL_FILES)
    .union(CapabilityFlags::CLIENT_IGNORE_SPACE)
    .union(CapabilityFlags::CLIENT_PROTOCOL_41)
    .union(CapabilityFlags::CLIENT_INTERACTIVE)
    .union(CapabilityFlags::CLIENT_IGNORE_SIGPIPE)
    .union(CapabilityFlags::CLIENT_TRANSACTIONS)
    .union(CapabilityFlags::CLIENT_RESERVED)
    .union(CapabilityFlags::CLIENT_SECURE_CONNECTION)
    .union(CapabilityFlags::CLIENT_MULTI_STATEMENTS)
    .union(CapabilityFlags::CLIENT_MULTI_RESULTS)
    .union(CapabilityFlags::CLIENT_PS_MULTI_RESULTS)
    .union(CapabilityFlags::CLIENT_PLUGIN_AUTH)
    .union(CapabilityFlags::CLIENT_CONNECT_ATTRS)
    .union(CapabilityFlags::CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA)
    .union(CapabilityFlags::CLIENT_CAN_HANDLE_EXPIRED_PASSWORDS)
    .union(CapabilityFlags::CLIENT_SESSION_TRACK)
    .union(CapabilityFlags::CLIENT_DEPRECATE_EOF)
    .union(CapabilityFlags::CLIENT_OPTIONAL_RESULTSET_METADATA)
    .union(CapabilityFlags::CLIENT_ZSTD_COMPRESSION_ALGORITHM)
    .union(CapabilityFlags::CLIENT_QUERY_ATTRIBUTES)
    .union(CapabilityFlags::CLIENT_SSL_VERIFY_SERVER_CERT)
    .union(CapabilityFlags::CLIENT_REMEMBER_OPTIONS);

/// Offered capabilities that change the framing or the packets, which this server does not implement.
const UNIMPLEMENTED: CapabilityFlags = CapabilityFlags::CLIENT_COMPRESS
    .union(CapabilityFlags::CLIENT_ZSTD_COMPRESSION_ALGORITHM)
    .union(CapabilityFlags::CLIENT_QUERY_ATTRIBUTES)
    .union(CapabilityFlags::CLIENT_OPTIONAL_RESULTSET_METADATA);

/// SERVER_STATUS_AUTOCOMMIT, the status of every answer.
const STATUS_AUTOCOMMIT: u16 = 0x0002;

/// utf8mb4_0900_ai_ci, MySQL 8.4's default collation.
const COLLATION: u8 = 255;

/// How the server answers COM_CHANGE_USER.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ChangeUser {
    /// It checks the scramble in the command against the nonce of the connection's greeting.
    #[default]
    SameNonce,
    /// It first sends an AuthSwitchRequest for caching_sha2_password with a new nonce, which the client answers.
    NewNonce,
}

/// An account's authentication method.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// `caching_sha2_password`, MySQL 8.4's default.
    CachingSha2,
    /// `mysql_native_password`: `SHA1(pw) XOR SHA1(nonce || SHA1(SHA1(pw)))`, checked in one round.
    NativePassword,
}

impl Method {
    /// The method's name on the wire.
    pub fn name(self) -> &'static [u8] {
        match self {
            Method::CachingSha2 => CACHING_SHA2,
            Method::NativePassword => NATIVE_PASSWORD,
        }
    }
}

/// An account of the server.
#[derive(Debug, Clone)]
pub struct Account {
    /// Its user name (any host).
    pub user: String,
    /// Its password.
    pub password: String,
    /// How it authenticates.
    pub method: Method,
}

impl Account {
    /// A caching_sha2_password account.
    pub fn caching_sha2(user: &str, password: &str) -> Account {
        Account { user: user.to_owned(), password: password.to_owned(), method: Method::CachingSha2 }
    }

    /// A mysql_native_password account.
    pub fn native(user: &str, password: &str) -> Account {
        Account { user: user.to_owned(), password: password.to_owned(), method: Method::NativePassword }
    }
}

/// What the server is started with.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Its accounts.
    pub accounts: Vec<Account>,
    /// Its certificate: CLIENT_SSL is offered when there is one.
    pub certificate: Option<CertFiles>,
    /// How it answers COM_CHANGE_USER.
    pub change_user: ChangeUser,
}

/// Which side sent a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The server's peer: a client, or the proxy.
    Client,
    /// This server.
    Server,
}

/// One packet of a connection, as it crossed the wire (inside TLS where the leg has it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet {
    /// Who sent it.
    pub from: Side,
    /// Its sequence id.
    pub seq: u8,
    /// Its payload.
    pub payload: Vec<u8>,
}

/// How an authentication went on the server's side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthPath {
    /// The account's hash was cached and the scramble matched.
    Fast,
    /// Full authentication over TLS: the password in cleartext.
    FullCleartext,
    /// Full authentication in plaintext: the password encrypted with the server's RSA key, which the client asked
    /// for first (`key_requested`) or already had.
    FullRsa {
        /// The client sent `[0x02]` and got the key in this exchange.
        key_requested: bool,
    },
    /// The client sent an empty scramble: no password.
    NoPassword,
    /// mysql_native_password's one round.
    NativePassword,
}

/// What started an authentication.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// The connection's handshake response.
    Login,
    /// COM_CHANGE_USER.
    ChangeUser,
}

/// One authentication the server ran.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Login {
    /// The connection it ran on, counted from 0 in accept order.
    pub connection: usize,
    /// What started it.
    pub start: Start,
    /// The user.
    pub user: String,
    /// Whether the server's leg was inside TLS.
    pub tls: bool,
    /// How it went.
    pub path: AuthPath,
    /// The password the server read (decrypted, without its NUL) in a full authentication; `None` after a fast
    /// one, or when what the client sent did not decrypt.
    pub password: Option<String>,
    /// Whether the server said OK.
    pub granted: bool,
}

/// What the server saw of one connection.
#[derive(Debug, Clone, Default)]
pub struct Connection {
    /// Its packets, both ways, in order.
    pub packets: Vec<Packet>,
    /// Whether its leg went inside TLS.
    pub tls: bool,
    /// Whether it has ended.
    pub ended: bool,
}

/// Everything the server saw.
#[derive(Debug, Clone, Default)]
pub struct Record {
    /// The authentications, in order.
    pub logins: Vec<Login>,
    /// The connections, numbered in accept order.
    pub connections: Vec<Connection>,
    /// The statements of COM_QUERY, in order.
    pub queries: Vec<String>,
    /// Protocol violations the server saw (a packet out of order, a malformed packet, a capability it does not
    /// implement); each ended its connection.
    pub violations: Vec<String>,
}

/// The server, running on this test's runtime until dropped.
pub struct Mysql84 {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

impl Drop for Mysql84 {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Mysql84 {
    /// Starts a server on a free loopback port.
    pub async fn start(options: Options) -> Mysql84 {
        let key = tokio::task::spawn_blocking(ServerKey::shared).await.expect("the server's RSA key");
        let tls = options.certificate.as_ref().map(acceptor);
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.expect("bind the scripted server");
        let addr = listener.local_addr().expect("its address");
        let shared = Arc::new(Shared {
            options,
            tls,
            key,
            cache: Mutex::new(HashSet::new()),
            record: Mutex::new(Record::default()),
        });
        let task = tokio::spawn(accept(listener, shared.clone()));
        Mysql84 { addr, shared, task }
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// What it has seen so far.
    pub fn record(&self) -> Record {
        self.shared.record().clone()
    }

    /// The authentications so far.
    pub fn logins(&self) -> Vec<Login> {
        self.record().logins
    }

    /// Waits (up to 5 s) until the connection numbered `connection` has ended, and returns what the server saw
    /// of it.
    pub async fn ended(&self, connection: usize) -> Connection {
        for _ in 0..500 {
            match self.record().connections.get(connection) {
                Some(seen) if seen.ended => return seen.clone(),
                _ => tokio::time::sleep(std::time::Duration::from_millis(10)).await,
            }
        }
        panic!("connection {connection} to the scripted server has not ended: {:?}", self.record().connections);
    }

    /// Empties the cache of account hashes, as a restart or FLUSH PRIVILEGES does: the next login of every account
    /// is a full authentication.
    pub fn flush_cache(&self) {
        self.shared.cache.lock().unwrap_or_else(PoisonError::into_inner).clear();
    }

    /// Panics unless every packet came in order and followed the protocol.
    pub fn assert_no_violation(&self) {
        let violations = self.record().violations;
        assert!(violations.is_empty(), "the scripted server saw protocol violations: {violations:#?}");
    }

    /// The PEM of the server's RSA public key, the one it sends clients that ask for it.
    pub fn public_key_pem(&self) -> &[u8] {
        &self.shared.key.public_pem
    }
}

/// `XOR(SHA256(password), SHA256(SHA256(SHA256(password)) || nonce))`: caching_sha2_password's scramble.
pub fn scramble(password: &[u8], nonce: &[u8]) -> Vec<u8> {
    let stage1 = digest(&SHA256, password);
    let stage2 = digest(&SHA256, stage1.as_ref());
    let salted = digest(&SHA256, &[stage2.as_ref(), nonce].concat());
    stage1.as_ref().iter().zip(salted.as_ref()).map(|(a, b)| a ^ b).collect()
}

/// `SHA1(password) XOR SHA1(nonce || SHA1(SHA1(password)))`: mysql_native_password's scramble.
pub fn native_scramble(password: &[u8], nonce: &[u8]) -> Vec<u8> {
    let stage1 = digest(&SHA1_FOR_LEGACY_USE_ONLY, password);
    let stage2 = digest(&SHA1_FOR_LEGACY_USE_ONLY, stage1.as_ref());
    let salted = digest(&SHA1_FOR_LEGACY_USE_ONLY, &[nonce, stage2.as_ref()].concat());
    stage1.as_ref().iter().zip(salted.as_ref()).map(|(a, b)| a ^ b).collect()
}

/// The server's RSA key pair, one per test process (a key takes a while to generate in a debug build).
struct ServerKey {
    key: OaepPrivateDecryptingKey,
    public_pem: Vec<u8>,
}

impl ServerKey {
    fn shared() -> &'static ServerKey {
        static KEY: OnceLock<ServerKey> = OnceLock::new();
        KEY.get_or_init(|| {
            let private = PrivateDecryptingKey::generate(KeySize::Rsa2048).expect("an RSA key");
            let der = private.public_key().as_der().expect("its public key");
            let public_pem = pem_public_key(der.as_ref());
            ServerKey { key: OaepPrivateDecryptingKey::new(private).expect("an OAEP key"), public_pem }
        })
    }

    /// What the client sent decrypted and XORed with `nonce`: the password with its NUL, which is removed.
    fn password(&self, encrypted: &[u8], nonce: &[u8]) -> Option<Vec<u8>> {
        let mut plain = vec![0; self.key.min_output_size()];
        let len = self.key.decrypt(&OAEP_SHA1_MGF1SHA1, encrypted, &mut plain, None).ok()?.len();
        plain.truncate(len);
        for (byte, mask) in plain.iter_mut().zip(nonce.iter().cycle()) {
            *byte ^= mask;
        }
        plain.pop().filter(|&nul| nul == 0).map(|_| plain)
    }
}

/// A SubjectPublicKeyInfo as the PEM text MySQL sends.
fn pem_public_key(der: &[u8]) -> Vec<u8> {
    let encoded = base64::engine::general_purpose::STANDARD.encode(der);
    let lines: Vec<&str> = encoded.as_bytes().chunks(64).map(|line| std::str::from_utf8(line).unwrap_or("")).collect();
    format!("-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n", lines.join("\n")).into_bytes()
}

/// The TLS acceptor serving `certificate`.
fn acceptor(certificate: &CertFiles) -> TlsAcceptor {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&certificate.certificate)
        .and_then(|certs| certs.collect())
        .expect("the server's certificate");
    let key = PrivateKeyDer::from_pem_file(&certificate.key).expect("the server's key");
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .expect("a TLS server configuration");
    TlsAcceptor::from(Arc::new(config))
}

/// What the connections share.
struct Shared {
    options: Options,
    tls: Option<TlsAcceptor>,
    key: &'static ServerKey,
    /// Users whose hash is cached: their next login may be fast.
    cache: Mutex<HashSet<String>>,
    record: Mutex<Record>,
}

impl Shared {
    fn record(&self) -> std::sync::MutexGuard<'_, Record> {
        self.record.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn account(&self, user: &str) -> Option<&Account> {
        self.options.accounts.iter().find(|account| account.user == user)
    }

    /// The method `user` authenticates with: caching_sha2_password for an unknown user, as for a new account.
    fn method_of(&self, user: &str) -> Method {
        self.account(user).map_or(Method::CachingSha2, |account| account.method)
    }

    fn is_cached(&self, user: &str) -> bool {
        self.cache.lock().unwrap_or_else(PoisonError::into_inner).contains(user)
    }

    fn cache(&self, user: &str) {
        self.cache.lock().unwrap_or_else(PoisonError::into_inner).insert(user.to_owned());
    }
}

async fn accept(listener: TcpListener, shared: Arc<Shared>) {
    while let Ok((stream, _)) = listener.accept().await {
        let id = {
            let mut record = shared.record();
            record.connections.push(Connection::default());
            record.connections.len() - 1
        };
        let mut conn = Conn { wire: Wire::Plain(stream), seq: 0, id, shared: shared.clone(), nonce: nonce(), caps: 0 };
        tokio::spawn(async move {
            let end = conn.run().await;
            let mut record = conn.shared.record();
            if let Err(Stop::Violation(violation)) = end {
                record.violations.push(format!("connection {id}: {violation}"));
            }
            record.connections[id].ended = true;
        });
    }
}

/// Why a connection ended early.
enum Stop {
    /// The peer closed it, or the connection failed.
    Closed,
    /// The peer broke the protocol.
    Violation(String),
}

impl From<io::Error> for Stop {
    fn from(_: io::Error) -> Stop {
        Stop::Closed
    }
}

/// A step of a connection.
type Step<T> = Result<T, Stop>;

fn violation<T>(what: impl Into<String>) -> Step<T> {
    Err(Stop::Violation(what.into()))
}

/// 20 random bytes as MySQL makes a nonce: 7-bit, neither NUL nor `$`.
fn nonce() -> Vec<u8> {
    let mut bytes = [0u8; 20];
    aws_lc_rs::rand::fill(&mut bytes).expect("random bytes");
    bytes
        .iter()
        .map(|b| match b & 0x7F {
            0 => 1,
            b'$' => b'%',
            b => b,
        })
        .collect()
}

/// A connection's transport.
enum Wire {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
    /// Between the two, during the TLS handshake.
    Upgrading,
}

impl Wire {
    fn stream(&mut self) -> &mut (dyn AsyncStream + '_) {
        match self {
            Wire::Plain(stream) => stream,
            Wire::Tls(stream) => stream.as_mut(),
            Wire::Upgrading => unreachable!("no I/O during the TLS handshake"),
        }
    }
}

trait AsyncStream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> AsyncStream for T {}

/// One client connection.
struct Conn {
    wire: Wire,
    /// The sequence id of the next packet, either way.
    seq: u8,
    id: usize,
    shared: Arc<Shared>,
    /// The nonce the next scramble answers.
    nonce: Vec<u8>,
    /// The capabilities both sides have.
    caps: u32,
}

impl Conn {
    async fn run(&mut self) -> Step<()> {
        self.write(&self.greeting()).await?;
        let mut response = self.read().await?;
        if is_tls_request(&response) {
            self.start_tls().await?;
            response = self.read().await?;
        }
        let hello: HandshakeResponse<'_> = match ParseBuf(&response).parse(()) {
            Ok(hello) => hello,
            Err(e) => return violation(format!("malformed handshake response: {e}")),
        };
        self.caps = hello.capabilities().bits() & self.offered().bits();
        if self.caps & UNIMPLEMENTED.bits() != 0 {
            return violation(format!("the client negotiated {:?}", CapabilityFlags::from_bits_truncate(self.caps)));
        }
        let user = String::from_utf8_lossy(hello.user()).into_owned();
        let plugin = hello.auth_plugin().map(|plugin| plugin.as_bytes().to_vec()).unwrap_or_default();
        let scramble = hello.scramble_buf().to_vec();
        if !self.authenticate(Start::Login, &user, &plugin, scramble).await? {
            return Ok(());
        }
        self.commands(user).await
    }

    /// The capabilities of the greeting.
    fn offered(&self) -> CapabilityFlags {
        let mut caps = CAPABILITIES;
        if self.shared.tls.is_some() {
            caps |= CapabilityFlags::CLIENT_SSL;
        }
        caps
    }

    fn greeting(&self) -> Vec<u8> {
        let caps = self.offered().bits();
        let mut p = vec![10];
        p.extend_from_slice(VERSION.as_bytes());
        p.push(0);
        p.extend_from_slice(&(self.id as u32 + 1).to_le_bytes());
        p.extend_from_slice(&self.nonce[..8]);
        p.push(0);
        p.extend_from_slice(&(caps as u16).to_le_bytes());
        p.push(COLLATION);
        p.extend_from_slice(&STATUS_AUTOCOMMIT.to_le_bytes());
        p.extend_from_slice(&((caps >> 16) as u16).to_le_bytes());
        p.push(21);
        p.extend_from_slice(&[0; 10]);
        p.extend_from_slice(&self.nonce[8..]);
        p.push(0);
        p.extend_from_slice(CACHING_SHA2);
        p.push(0);
        p
    }

    async fn start_tls(&mut self) -> Step<()> {
        let Some(acceptor) = self.shared.tls.clone() else {
            return violation("an SSLRequest, and CLIENT_SSL was not offered");
        };
        let Wire::Plain(stream) = std::mem::replace(&mut self.wire, Wire::Upgrading) else {
            return violation("a second SSLRequest");
        };
        let stream = acceptor.accept(stream).await?;
        self.wire = Wire::Tls(Box::new(stream));
        self.shared.record().connections[self.id].tls = true;
        Ok(())
    }

    fn is_tls(&self) -> bool {
        matches!(self.wire, Wire::Tls(_))
    }

    /// Runs an authentication from the client's first answer (`scramble`, computed for `plugin`), switching the
    /// client to the account's method if it used another; returns whether it was granted.
    async fn authenticate(&mut self, start: Start, user: &str, plugin: &[u8], mut scramble: Vec<u8>) -> Step<bool> {
        let method = self.shared.method_of(user);
        let new_nonce = start == Start::ChangeUser && self.shared.options.change_user == ChangeUser::NewNonce;
        if new_nonce {
            self.nonce = nonce();
        }
        if new_nonce || plugin != method.name() {
            self.write(&[&[0xFE], method.name(), &[0], &self.nonce, &[0]].concat()).await?;
            scramble = self.read().await?;
        }
        let password = self.shared.account(user).map(|account| account.password.clone());
        let mut login = Login {
            connection: self.id,
            start,
            user: user.to_owned(),
            tls: self.is_tls(),
            path: AuthPath::Fast,
            password: None,
            granted: false,
        };
        if scramble.is_empty() {
            login.path = AuthPath::NoPassword;
            login.granted = password.as_deref() == Some("");
        } else if method == Method::NativePassword {
            login.path = AuthPath::NativePassword;
            login.granted =
                password.is_some_and(|password| native_scramble(password.as_bytes(), &self.nonce) == scramble);
        } else if self.shared.is_cached(user)
            && password.as_ref().is_some_and(|password| self::scramble(password.as_bytes(), &self.nonce) == scramble)
        {
            self.write(&FAST_AUTH_OK).await?;
            login.granted = true;
        } else {
            self.write(&PERFORM_FULL_AUTH).await?;
            let (path, sent) = self.full_authentication().await?;
            login.path = path;
            login.granted = sent.is_some() && sent == password.as_ref().map(|p| p.as_bytes().to_vec());
            login.password = sent.map(|sent| String::from_utf8_lossy(&sent).into_owned());
        }
        if login.granted {
            self.shared.cache(user);
            self.write(&ok_packet(self.session_track())).await?;
        } else {
            self.write(&access_denied(user)).await?;
        }
        let granted = login.granted;
        self.shared.record().logins.push(login);
        Ok(granted)
    }

    /// After `[0x01, 0x04]`: reads the password, in cleartext over TLS, else RSA-encrypted (sending the public
    /// key first if the client asks for it). `None` when what the client sent does not decrypt.
    async fn full_authentication(&mut self) -> Step<(AuthPath, Option<Vec<u8>>)> {
        let packet = self.read().await?;
        if self.is_tls() {
            return match packet.split_last() {
                Some((0, password)) => Ok((AuthPath::FullCleartext, Some(password.to_vec()))),
                _ => violation("a cleartext password without its NUL"),
            };
        }
        let key_requested = packet == REQUEST_PUBLIC_KEY;
        let encrypted = if key_requested {
            self.write(&[&[0x01], self.shared.key.public_pem.as_slice()].concat()).await?;
            self.read().await?
        } else {
            packet
        };
        Ok((AuthPath::FullRsa { key_requested }, self.shared.key.password(&encrypted, &self.nonce)))
    }

    /// The command phase of a connection logged in as `user`.
    async fn commands(&mut self, mut user: String) -> Step<()> {
        loop {
            self.seq = 0;
            let command = self.read().await?;
            match command.first() {
                Some(0x01) => return Ok(()),
                Some(0x03) => {
                    let sql = String::from_utf8_lossy(&command[1..]).into_owned();
                    self.shared.record().queries.push(sql.clone());
                    self.answer_query(&sql, &user).await?;
                }
                Some(0x02 | 0x0E | 0x1F) => self.write(&ok_packet(self.session_track())).await?,
                Some(0x11) => {
                    let Some(change) = ChangeUserCommand::parse(&command, self.caps) else {
                        return violation("malformed COM_CHANGE_USER");
                    };
                    if !self.authenticate(Start::ChangeUser, &change.user, &change.plugin, change.scramble).await? {
                        // A refused COM_CHANGE_USER ends the connection: no test relies on what MySQL does next.
                        return Ok(());
                    }
                    user = change.user;
                }
                _ => self.write(&error_packet(1047, b"08S01", "Unknown command")).await?,
            }
        }
    }

    /// A SELECT gets one row, its values from [`value_of`]; any other statement an OK.
    async fn answer_query(&mut self, sql: &str, user: &str) -> Step<()> {
        let Some(list) = select_list(sql) else {
            return self.write(&ok_packet(self.session_track())).await;
        };
        let items: Vec<&str> = list.split(',').map(str::trim).collect();
        self.write(&[items.len() as u8]).await?;
        for item in &items {
            self.write(&column_definition(item)).await?;
        }
        if !self.deprecate_eof() {
            self.write(&eof_packet()).await?;
        }
        let mut row = Vec::new();
        for item in &items {
            match value_of(item, user) {
                Some(value) => put_lenenc_str(&mut row, value.as_bytes()),
                None => row.push(0xFB),
            }
        }
        self.write(&row).await?;
        if self.deprecate_eof() {
            let mut end = ok_packet(self.session_track());
            end[0] = 0xFE;
            self.write(&end).await
        } else {
            self.write(&eof_packet()).await
        }
    }

    fn session_track(&self) -> bool {
        self.caps & CapabilityFlags::CLIENT_SESSION_TRACK.bits() != 0
    }

    fn deprecate_eof(&self) -> bool {
        self.caps & CapabilityFlags::CLIENT_DEPRECATE_EOF.bits() != 0
    }

    /// Reads a packet, checking its sequence id.
    async fn read(&mut self) -> Step<Vec<u8>> {
        let mut header = [0u8; 4];
        self.wire.stream().read_exact(&mut header).await?;
        let len = u32::from_le_bytes([header[0], header[1], header[2], 0]) as usize;
        let mut payload = vec![0; len];
        self.wire.stream().read_exact(&mut payload).await?;
        self.shared.record().connections[self.id].packets.push(Packet {
            from: Side::Client,
            seq: header[3],
            payload: payload.clone(),
        });
        if header[3] != self.seq {
            return violation(format!("packet out of order: sequence id {}, expected {}", header[3], self.seq));
        }
        self.seq = self.seq.wrapping_add(1);
        Ok(payload)
    }

    /// Writes a packet with the next sequence id.
    async fn write(&mut self, payload: &[u8]) -> Step<()> {
        let mut frame = (payload.len() as u32).to_le_bytes();
        frame[3] = self.seq;
        self.shared.record().connections[self.id].packets.push(Packet {
            from: Side::Server,
            seq: self.seq,
            payload: payload.to_vec(),
        });
        self.seq = self.seq.wrapping_add(1);
        let stream = self.wire.stream();
        stream.write_all(&[&frame[..], payload].concat()).await?;
        stream.flush().await?;
        Ok(())
    }
}

/// Whether a client's packet is an SSLRequest: the 32-byte fixed part of a handshake response with CLIENT_SSL.
fn is_tls_request(payload: &[u8]) -> bool {
    let caps = payload.first_chunk::<4>().map_or(0, |b| u32::from_le_bytes(*b));
    payload.len() == 32 && caps & CapabilityFlags::CLIENT_SSL.bits() != 0
}

/// The fields of COM_CHANGE_USER the server uses.
struct ChangeUserCommand {
    user: String,
    scramble: Vec<u8>,
    plugin: Vec<u8>,
}

impl ChangeUserCommand {
    /// Reads `0x11`, the user, the scramble (length-prefixed under CLIENT_SECURE_CONNECTION), the database, the
    /// character set and, under CLIENT_PLUGIN_AUTH, the method's name.
    fn parse(payload: &[u8], caps: u32) -> Option<ChangeUserCommand> {
        let rest = payload.strip_prefix(&[0x11])?;
        let (user, rest) = split_nul(rest)?;
        let (scramble, rest) = if caps & CapabilityFlags::CLIENT_SECURE_CONNECTION.bits() != 0 {
            let (&len, rest) = rest.split_first()?;
            (rest.get(..usize::from(len))?, &rest[usize::from(len)..])
        } else {
            split_nul(rest)?
        };
        let (_database, rest) = split_nul(rest)?;
        let plugin = match rest.get(2..) {
            Some(rest) if caps & CapabilityFlags::CLIENT_PLUGIN_AUTH.bits() != 0 => split_nul(rest)?.0,
            _ => &[],
        };
        Some(ChangeUserCommand {
            user: String::from_utf8_lossy(user).into_owned(),
            scramble: scramble.to_vec(),
            plugin: plugin.to_vec(),
        })
    }
}

/// The bytes before the first NUL, and those after it.
fn split_nul(bytes: &[u8]) -> Option<(&[u8], &[u8])> {
    let nul = bytes.iter().position(|&b| b == 0)?;
    Some((&bytes[..nul], &bytes[nul + 1..]))
}

/// The select list of a `SELECT` statement without FROM (all this server answers with rows).
fn select_list(sql: &str) -> Option<&str> {
    let sql = sql.trim();
    let head = sql.get(..7)?;
    head.eq_ignore_ascii_case("SELECT ").then(|| sql[7..].trim_end_matches(';'))
}

/// The value of one item of a select list: `CURRENT_USER()`, `@@version`, a number or a quoted string; `None`
/// (NULL) for anything else.
fn value_of(item: &str, user: &str) -> Option<String> {
    let lower = item.to_ascii_lowercase();
    match lower.as_str() {
        "current_user()" => Some(format!("{user}@%")),
        "@@version" => Some(VERSION.to_owned()),
        _ if item.parse::<i64>().is_ok() => Some(item.to_owned()),
        _ => item.strip_prefix('\'').and_then(|s| s.strip_suffix('\'')).map(str::to_owned),
    }
}

/// A VARCHAR column named `name`.
fn column_definition(name: &str) -> Vec<u8> {
    let mut p = Vec::new();
    for field in [&b"def"[..], b"", b"", b"", name.as_bytes(), b""] {
        put_lenenc_str(&mut p, field);
    }
    p.push(0x0C);
    p.extend_from_slice(&u16::from(COLLATION).to_le_bytes());
    p.extend_from_slice(&1024u32.to_le_bytes());
    p.push(0xFD);
    p.extend_from_slice(&[0, 0, 0, 0, 0]);
    p
}

/// A string prefixed with its length (under 251 bytes).
fn put_lenenc_str(out: &mut Vec<u8>, bytes: &[u8]) {
    out.push(u8::try_from(bytes.len()).ok().filter(|&len| len < 251).expect("a short value"));
    out.extend_from_slice(bytes);
}

/// OK: nothing affected, autocommit on, no warnings (and no info, under CLIENT_SESSION_TRACK).
fn ok_packet(session_track: bool) -> Vec<u8> {
    let mut p = vec![0x00, 0, 0];
    p.extend_from_slice(&STATUS_AUTOCOMMIT.to_le_bytes());
    p.extend_from_slice(&[0, 0]);
    if session_track {
        p.push(0);
    }
    p
}

/// A classic EOF packet.
fn eof_packet() -> Vec<u8> {
    let mut p = vec![0xFE, 0, 0];
    p.extend_from_slice(&STATUS_AUTOCOMMIT.to_le_bytes());
    p
}

/// ERR with `code`, `sqlstate` and `message`.
fn error_packet(code: u16, sqlstate: &[u8; 5], message: &str) -> Vec<u8> {
    [&[0xFF][..], &code.to_le_bytes(), b"#", sqlstate, message.as_bytes()].concat()
}

/// MySQL's ERR for a login refused.
fn access_denied(user: &str) -> Vec<u8> {
    error_packet(
        ER_ACCESS_DENIED_ERROR,
        b"28000",
        &format!("Access denied for user '{user}'@'localhost' (using password: YES)"),
    )
}
