//! TLS on both legs of a session: the certificate the proxy shows clients that ask for TLS (`[listen.tls]`), and
//! how it connects to each backend (`[backends.<name>.tls]`), built into rustls configurations once per
//! configuration snapshot, so that a reload with new certificate files serves new connections with them while
//! the running ones keep theirs.
//!
//! The rule the session enforces with [`BackendTls::leg`]: what a client sent over TLS never crosses a plaintext
//! backend connection.

use std::fmt;
use std::path::Path;
use std::sync::{Arc, OnceLock};

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::{CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme};
use tokio_rustls::{TlsAcceptor, TlsConnector};

use crate::auth_key::ServerPublicKey;
use crate::config::{self, Config, ListenCertificate, TlsMode};
use crate::topology::Server;

/// Why the TLS files of a configuration cannot be used: the key at fault and what is wrong, with the file's path.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {reason}")]
pub struct TlsError {
    /// The dotted key of `proxy.toml` naming the file (or the setting) at fault.
    pub key: String,
    /// What is wrong, naming the file.
    pub reason: String,
}

impl TlsError {
    fn new(key: impl Into<String>, reason: impl Into<String>) -> TlsError {
        TlsError { key: key.into(), reason: reason.into() }
    }
}

/// A fingerprint of the contents of the certificate and key files `config` names (a file that cannot be read
/// counts by its error), to tell when a certificate was rotated on disk while `proxy.toml` stayed the same.
pub fn files_fingerprint(config: &Config) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::hash::DefaultHasher::new();
    for path in config.tls_files() {
        match std::fs::read(path) {
            Ok(bytes) => bytes.hash(&mut hasher),
            Err(error) => error.kind().hash(&mut hasher),
        }
    }
    hasher.finish()
}

/// The TLS side of a configuration: the client listener's, and each backend's.
#[derive(Clone)]
pub struct Tls {
    /// TLS for clients; `None`: plaintext only (CLIENT_SSL is not offered).
    pub listener: Option<ListenerTls>,
    /// The `edxapp` backend's.
    pub edxapp: BackendTls,
    /// The `csmh` backend's, for the proxy's own connections to a separate server.
    pub csmh: BackendTls,
}

impl Tls {
    /// Reads the certificate and key files `config` names and builds the rustls configurations.
    pub fn load(config: &Config) -> Result<Tls, TlsError> {
        Ok(Tls {
            listener: config.listen.tls.as_ref().map(ListenerTls::load).transpose()?,
            edxapp: BackendTls::load(Server::Edxapp, &config.backends.edxapp)?,
            csmh: BackendTls::load(Server::Csmh, &config.backends.csmh)?,
        })
    }

    /// The settings of the backend `server`.
    pub fn backend(&self, server: Server) -> &BackendTls {
        match server {
            Server::Edxapp => &self.edxapp,
            Server::Csmh => &self.csmh,
        }
    }
}

impl fmt::Debug for Tls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tls")
            .field("listener", &self.listener.as_ref().map(|listener| listener.required))
            .field("edxapp", &self.edxapp.mode)
            .field("csmh", &self.csmh.mode)
            .finish()
    }
}

/// TLS for clients: the certificate to show, and whether plaintext clients are refused.
#[derive(Clone)]
pub struct ListenerTls {
    /// Runs the server side of a client's TLS handshake.
    pub acceptor: TlsAcceptor,
    /// Clients that do not ask for TLS are refused.
    pub required: bool,
}

impl ListenerTls {
    fn load(tls: &config::ListenTls) -> Result<ListenerTls, TlsError> {
        let (chain, key) = match &tls.certificate {
            ListenCertificate::Files { certificate, key } => {
                (certificates("listen.tls.certificate", certificate)?, private_key("listen.tls.key", key)?)
            }
            ListenCertificate::SelfSigned => self_signed()?,
        };
        let config = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::new("listen.tls", e.to_string()))?
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .map_err(|e| TlsError::new("listen.tls.key", format!("does not go with the certificate: {e}")))?;
        Ok(ListenerTls { acceptor: TlsAcceptor::from(Arc::new(config)), required: tls.required })
    }
}

/// How the proxy's connections to one backend use TLS.
#[derive(Clone)]
pub struct BackendTls {
    server: Server,
    mode: TlsMode,
    /// `None` when the mode is `disabled`.
    connector: Option<TlsConnector>,
    /// The name sent in the handshake and, with `verify-identity`, checked against the certificate.
    server_name: ServerName<'static>,
    /// The server's RSA public key, for the proxy's own password without TLS (`server_public_key`).
    server_public_key: Option<ServerPublicKey>,
    /// A `ca` is given, so the certificate is checked, and `preferred` does not fall back to plaintext either
    /// (a man in the middle could otherwise strip the server's offer of TLS and skip the check).
    checks_chain: bool,
}

/// Whether one backend connection runs in plaintext or inside TLS.
pub enum Leg<'a> {
    /// Plaintext.
    Plain,
    /// TLS, with this connector and server name.
    Tls(&'a TlsConnector, ServerName<'static>),
}

/// Why a backend connection cannot be made with the TLS it needs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LegRefusal {
    /// The mode requires TLS and the server does not offer it.
    #[error("the {server} server does not offer TLS, which backends.{server}.tls.mode = \"{mode}\" requires")]
    ServerWithoutTls {
        /// The backend.
        server: Server,
        /// Its mode, as written.
        mode: &'static str,
    },
    /// A `ca` asks for the server's certificate to be checked, and the server offers no TLS (`preferred`).
    #[error(
        "the {server} server does not offer TLS, and backends.{server}.tls.ca asks for its certificate to be \
         checked; remove ca to let mode = \"preferred\" fall back to plaintext"
    )]
    CertificateToCheck {
        /// The backend.
        server: Server,
    },
    /// The client connected with TLS, and the backend connection would be plaintext.
    #[error(
        "the client connected with TLS, and its traffic would cross to the {server} server in plaintext ({reason}); \
         set backends.{server}.tls.mode to \"required\" or stronger on a server that offers TLS"
    )]
    WouldDowngrade {
        /// The backend.
        server: Server,
        /// Why the backend connection would be plaintext.
        reason: &'static str,
    },
}

impl BackendTls {
    /// Reads the files `backend`'s `[tls]` names and builds the connector for the backend `server`: the checks
    /// every user of these settings (the proxy, and the migration commands before they log in) makes first.
    pub fn load(server: Server, backend: &config::Backend) -> Result<BackendTls, TlsError> {
        let tls = &backend.tls;
        let key = |field: &str| format!("backends.{server}.tls.{field}");
        let name = tls.server_name.clone().unwrap_or_else(|| host_of(&backend.address).to_owned());
        let server_name = ServerName::try_from(name.clone())
            .map_err(|_| TlsError::new(key("server_name"), format!("`{name}` is not a host name or IP address")))?;
        let connector = match tls.mode {
            TlsMode::Disabled => None,
            mode => Some(TlsConnector::from(Arc::new(client_config(server, mode, tls)?))),
        };
        let server_public_key = match &tls.server_public_key {
            Some(path) => Some(public_key(&key("server_public_key"), path)?),
            None => None,
        };
        let checks_chain = tls.ca.is_some() && tls.mode != TlsMode::Disabled;
        Ok(BackendTls { server, mode: tls.mode, connector, server_name, server_public_key, checks_chain })
    }

    /// The server's RSA public key the proxy was given, if any: what its own password is encrypted with when the
    /// server asks for it in full without TLS.
    pub fn server_public_key(&self) -> Option<&ServerPublicKey> {
        self.server_public_key.as_ref()
    }

    /// The mode in force.
    pub fn mode(&self) -> TlsMode {
        self.mode
    }

    /// The name sent in the handshake and, with `verify-identity`, checked against the certificate: `server_name`,
    /// or the host of `address`.
    pub fn server_name(&self) -> &ServerName<'static> {
        &self.server_name
    }

    /// Whether the connection to a server that `offers_tls` (CLIENT_SSL in its greeting) runs inside TLS, for a
    /// client that connected with TLS or not (`client_tls`; `false` for the proxy's own connections).
    pub fn leg(&self, offers_tls: bool, client_tls: bool) -> Result<Leg<'_>, LegRefusal> {
        let server = self.server;
        match (&self.connector, offers_tls) {
            (Some(connector), true) => Ok(Leg::Tls(connector, self.server_name.clone())),
            (None, _) if client_tls => {
                Err(LegRefusal::WouldDowngrade { server, reason: "its tls.mode is \"disabled\"" })
            }
            (None, _) => Ok(Leg::Plain),
            (Some(_), false) => match self.mode {
                TlsMode::Preferred if client_tls => {
                    Err(LegRefusal::WouldDowngrade { server, reason: "the server does not offer TLS" })
                }
                TlsMode::Preferred if self.checks_chain => Err(LegRefusal::CertificateToCheck { server }),
                TlsMode::Preferred => Ok(Leg::Plain),
                mode => Err(LegRefusal::ServerWithoutTls { server, mode: mode.as_str() }),
            },
        }
    }
}

impl fmt::Debug for BackendTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BackendTls").field("server", &self.server).field("mode", &self.mode).finish()
    }
}

/// The host part of `host:port` (brackets of an IPv6 address removed).
fn host_of(address: &str) -> &str {
    let host = address.rsplit_once(':').map_or(address, |(host, _)| host);
    host.strip_prefix('[').and_then(|inner| inner.strip_suffix(']')).unwrap_or(host)
}

/// The rustls client configuration for a backend in `mode` (not `disabled`).
fn client_config(server: Server, mode: TlsMode, tls: &config::BackendTls) -> Result<ClientConfig, TlsError> {
    let key = |field: &str| format!("backends.{server}.tls.{field}");
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::new(key("mode"), e.to_string()))?;
    // A `ca` given with `preferred` or `required` is checked too, as with `verify-ca`: an operator who names the
    // authority expects it to be checked, and a certificate that does not chain to it fails the login.
    let verifier: Arc<dyn ServerCertVerifier> = match (mode, &tls.ca) {
        (_, Some(ca)) => {
            let mut roots = RootCertStore::empty();
            for certificate in certificates(&key("ca"), ca)? {
                roots.add(certificate).map_err(|e| TlsError::new(key("ca"), format!("{}: {e}", ca.display())))?;
            }
            let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider())
                .build()
                .map_err(|e| TlsError::new(key("ca"), format!("{}: {e}", ca.display())))?;
            if mode == TlsMode::VerifyIdentity { webpki } else { name_blind(Some(webpki)) }
        }
        (TlsMode::VerifyCa | TlsMode::VerifyIdentity, None) => {
            return Err(TlsError::new(key("ca"), "is needed to verify the server's certificate"));
        }
        _ => name_blind(None),
    };
    let builder = builder.dangerous().with_custom_certificate_verifier(verifier);
    match (&tls.certificate, &tls.key) {
        (Some(certificate), Some(private)) => builder
            .with_client_auth_cert(certificates(&key("certificate"), certificate)?, private_key(&key("key"), private)?)
            .map_err(|e| TlsError::new(key("key"), format!("does not go with the client certificate: {e}"))),
        _ => Ok(builder.with_no_client_auth()),
    }
}

/// A [`NameBlind`] verifier checking the chain against `authorities`, or nothing of the certificate without.
fn name_blind(authorities: Option<Arc<WebPkiServerVerifier>>) -> Arc<dyn ServerCertVerifier> {
    Arc::new(NameBlind { authorities, algorithms: provider().signature_verification_algorithms })
}

/// The one cryptography provider of the proxy's TLS: rustls's default, aws-lc-rs.
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// Reads a PEM file of certificates (at least one).
fn certificates(key: &str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let unreadable = |e: &pem::Error| TlsError::new(key, format!("cannot read {}: {}", path.display(), pem_failure(e)));
    let chain: Vec<_> = CertificateDer::pem_file_iter(path)
        .map_err(|e| unreadable(&e))?
        .collect::<Result<_, _>>()
        .map_err(|e| unreadable(&e))?;
    if chain.is_empty() {
        return Err(TlsError::new(key, format!("{} holds no PEM certificate", path.display())));
    }
    Ok(chain)
}

/// Reads a PEM file holding a server's RSA public key.
fn public_key(key: &str, path: &Path) -> Result<ServerPublicKey, TlsError> {
    let pem = std::fs::read(path).map_err(|e| TlsError::new(key, format!("cannot read {}: {e}", path.display())))?;
    ServerPublicKey::from_pem(&pem).map_err(|e| TlsError::new(key, format!("{}: {e}", path.display())))
}

/// The names the self-signed certificate is made for.
const SELF_SIGNED_NAMES: [&str; 2] = ["csmh-proxy", "localhost"];

/// The certificate of `[listen.tls] self_signed = true` and its key: made once per process, with an ECDSA P-256
/// key, so that a reload keeps it.
fn self_signed() -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), TlsError> {
    static MADE: OnceLock<Result<(CertificateDer<'static>, PrivatePkcs8KeyDer<'static>), String>> = OnceLock::new();
    let made = MADE.get_or_init(|| {
        let names = SELF_SIGNED_NAMES.map(str::to_owned).to_vec();
        let certified = rcgen::generate_simple_self_signed(names).map_err(|e| e.to_string())?;
        Ok((certified.cert.der().clone(), PrivatePkcs8KeyDer::from(certified.signing_key.serialize_der())))
    });
    match made {
        Ok((certificate, key)) => Ok((vec![certificate.clone()], PrivateKeyDer::Pkcs8(key.clone_key()))),
        Err(error) => Err(TlsError::new("listen.tls.self_signed", format!("cannot make a certificate: {error}"))),
    }
}

/// Reads a PEM file holding a private key. The key's bytes never appear in an error.
fn private_key(key: &str, path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| {
        TlsError::new(key, format!("cannot read a PEM private key from {}: {}", path.display(), pem_failure(&e)))
    })
}

/// What is wrong with a PEM file, without any of its bytes: the parser's own message quotes the line it choked
/// on, which in a key file whose line breaks were lost is the whole key.
fn pem_failure(error: &pem::Error) -> String {
    match error {
        pem::Error::MissingSectionEnd { .. } => {
            "a section has no END line (were the file's line breaks lost?)".to_owned()
        }
        pem::Error::IllegalSectionStart { .. } => "a BEGIN line is malformed".to_owned(),
        pem::Error::Base64Decode(_) => "a section is not valid base64".to_owned(),
        pem::Error::Io(e) => e.to_string(),
        pem::Error::NoItemsFound => "it holds no item of the kind expected".to_owned(),
        pem::Error::SectionTooLarge => "a section is larger than 256 MB".to_owned(),
        _ => "it is not a PEM file the proxy can read".to_owned(),
    }
}

/// The verifier of the modes that do not check the server's name: `preferred` and `required` (encryption
/// without checking who the server is, as MySQL's clients do in those modes: `authorities` is `None`), and
/// `verify-ca` (a certificate that chains to the configured authorities and is valid now, for whatever name it
/// carries). The handshake's signatures are always checked against the certificate.
#[derive(Debug)]
struct NameBlind {
    authorities: Option<Arc<WebPkiServerVerifier>>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for NameBlind {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some(authorities) = &self.authorities else { return Ok(ServerCertVerified::assertion()) };
        match authorities.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now) {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            verdict => verdict,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backend(mode: TlsMode) -> BackendTls {
        let connector = (mode != TlsMode::Disabled).then(|| {
            TlsConnector::from(Arc::new(client_config(Server::Edxapp, TlsMode::Required, &Default::default()).unwrap()))
        });
        let server_name = ServerName::try_from("db").unwrap();
        BackendTls {
            server: Server::Edxapp,
            mode,
            connector,
            server_name,
            server_public_key: None,
            checks_chain: false,
        }
    }

    fn tls(leg: Result<Leg<'_>, LegRefusal>) -> Result<bool, LegRefusal> {
        leg.map(|leg| matches!(leg, Leg::Tls(..)))
    }

    #[test]
    fn a_key_file_that_lost_its_line_breaks_is_refused_without_showing_the_key() {
        let key = rcgen::KeyPair::generate().unwrap().serialize_pem();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tls.key");
        std::fs::write(&path, key.replace('\n', " ")).unwrap();
        let error = private_key("listen.tls.key", &path).expect_err("refused").to_string();
        assert!(error.contains("line breaks"), "{error}");
        let body: String = key.lines().filter(|line| !line.starts_with("-----")).collect();
        for chunk in body.as_bytes().chunks(8) {
            let chunk = std::str::from_utf8(chunk).unwrap();
            assert!(!error.contains(chunk), "the error shows the key's `{chunk}`: {error}");
        }
        assert!(!error.contains("80, 82, 73"), "nor its bytes: {error}");
    }

    #[test]
    fn a_self_signed_certificate_is_made_once_and_serves() {
        let tls = config::ListenTls { certificate: ListenCertificate::SelfSigned, required: false };
        let first = ListenerTls::load(&tls).expect("a certificate is made");
        assert!(!first.required);
        let (chain, _) = self_signed().unwrap();
        assert_eq!(self_signed().unwrap().0, chain, "the same certificate for every configuration");
    }

    #[test]
    fn preferred_follows_the_server_unless_the_client_used_tls() {
        let preferred = backend(TlsMode::Preferred);
        assert_eq!(tls(preferred.leg(true, false)), Ok(true));
        assert_eq!(tls(preferred.leg(true, true)), Ok(true));
        assert_eq!(tls(preferred.leg(false, false)), Ok(false));
        assert!(matches!(preferred.leg(false, true), Err(LegRefusal::WouldDowngrade { .. })));
    }

    #[test]
    fn required_modes_refuse_a_server_without_tls() {
        for mode in [TlsMode::Required, TlsMode::VerifyCa, TlsMode::VerifyIdentity] {
            let backend = backend(mode);
            assert_eq!(tls(backend.leg(true, false)), Ok(true));
            assert!(matches!(backend.leg(false, false), Err(LegRefusal::ServerWithoutTls { .. })));
            assert!(matches!(backend.leg(false, true), Err(LegRefusal::ServerWithoutTls { .. })));
        }
    }

    #[test]
    fn disabled_is_plaintext_and_refuses_tls_clients() {
        let disabled = backend(TlsMode::Disabled);
        assert_eq!(tls(disabled.leg(true, false)), Ok(false));
        let refusal = disabled.leg(true, true).err().unwrap();
        assert!(refusal.to_string().contains("backends.edxapp.tls.mode"), "{refusal}");
    }

    #[test]
    fn the_server_name_is_the_host_of_the_address() {
        assert_eq!(host_of("db.example.org:3306"), "db.example.org");
        assert_eq!(host_of("[::1]:3306"), "::1");
        assert_eq!(host_of("10.0.0.1:3306"), "10.0.0.1");
    }
}
