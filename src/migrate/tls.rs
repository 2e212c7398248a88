//! TLS on the migration commands' logins: `[backends.<name>.tls]` means for them what it means for the proxy's
//! own connections ([`crate::tls`]). [`ssl_opts`] is the one place that turns it into mysql_async's options;
//! `LoginTls::connect` adds what mysql_async lacks (MySQL's `preferred`, and a `verify-ca` that ignores the
//! name) and turns a refusal into a message naming the key at fault.

use std::fmt;
use std::path::PathBuf;

use mysql_async::{ClientIdentity, Conn, DriverError, IoError, Opts, OptsBuilder, SslOpts};
use rustls::CertificateError;

use crate::config::{self, Backend, TlsMode};
use crate::tls::{BackendTls, TlsError};
use crate::topology::Server;

/// How a command's connections to one server use TLS: mysql_async's options, and what the refusals mean.
#[derive(Debug, Clone)]
pub(super) struct LoginTls {
    /// The `[backends.<section>.tls]` followed, named in messages.
    section: Server,
    mode: TlsMode,
    ca: Option<PathBuf>,
    /// The name the certificate must be valid for with `verify-identity`.
    server_name: String,
    /// Whether `server_name` is written in the file (or is the host of `address`).
    name_written: bool,
    /// `None` when the mode is `disabled`.
    ssl: Option<SslOpts>,
    /// `server_public_key` is given: the proxy encrypts its password with that key without TLS, but the commands'
    /// client library would take the key the server sends, so they log in over TLS only.
    key_given: bool,
}

/// Why a command could not log in to a server.
#[derive(Debug, thiserror::Error)]
pub enum LoginError {
    /// The mode requires TLS, and the server does not offer it.
    #[error("the server does not offer TLS, which backends.{section}.tls.mode = \"{mode}\" requires")]
    ServerWithoutTls {
        /// The `[backends]` section whose `tls` applies.
        section: Server,
        /// Its mode, as written.
        mode: &'static str,
    },
    /// The server accepts only logins over TLS (MySQL says so), and the mode is `disabled`.
    #[error(
        "the server accepts only logins over TLS ({source}); set backends.{section}.tls.mode to \"required\" or \
         stronger"
    )]
    ServerRequiresTls {
        /// The `[backends]` section whose `tls` applies.
        section: Server,
        /// The server's refusal.
        source: mysql_async::Error,
    },
    /// The server denied a login without TLS (the mode is `disabled`), which MariaDB also does when it accepts
    /// only logins over TLS.
    #[error(
        "{source}; if the server accepts only logins over TLS (require_secure_transport, which MariaDB reports \
         as access denied), set backends.{section}.tls.mode to \"required\" or stronger"
    )]
    DeniedWithoutTls {
        /// The `[backends]` section whose `tls` applies.
        section: Server,
        /// The server's refusal.
        source: mysql_async::Error,
    },
    /// The server's certificate failed the mode's checks.
    #[error("its certificate does not verify: backends.{section}.tls.mode = \"{mode}\" {checks}: {reason}")]
    Certificate {
        /// The `[backends]` section whose `tls` applies.
        section: Server,
        /// Its mode, as written.
        mode: &'static str,
        /// What the mode checks, naming the file and the name.
        checks: Checks,
        /// rustls's verdict.
        reason: rustls::Error,
    },
    /// The TLS handshake failed for another reason than the certificate.
    #[error("TLS with the server failed (backends.{section}.tls.mode = \"{mode}\"): {reason}")]
    Handshake {
        /// The `[backends]` section whose `tls` applies.
        section: Server,
        /// Its mode, as written.
        mode: &'static str,
        /// rustls's error.
        reason: rustls::Error,
    },
    /// `server_public_key` is given, and the login would be without TLS.
    #[error(
        "backends.{section}.tls.server_public_key is given, which the migration commands cannot use (their MySQL \
         client would encrypt the password with the key the server sends, which anyone on the path could \
         replace): they log in to this server over TLS only; {remedy}"
    )]
    KeyWithoutTls {
        /// The `[backends]` section whose `tls` applies.
        section: Server,
        /// What to do, as the mode and the server stand.
        remedy: &'static str,
    },
    /// Any other failure: the client library's or the server's error.
    #[error("{}", ClientError(.0))]
    Client(mysql_async::Error),
}

/// The client library's error as the operator reads it: its I/O errors once, not as mysql_async words them
/// (`Input/output error: Input/output error: Connection refused`).
pub struct ClientError<'a>(pub &'a mysql_async::Error);

impl fmt::Display for ClientError<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            mysql_async::Error::Io(IoError::Io(io)) => write!(f, "{io}"),
            other => write!(f, "{other}"),
        }
    }
}

/// What a `verify-*` mode checks of the server's certificate, as the message of [`LoginError::Certificate`]
/// says it.
#[derive(Debug, Clone)]
pub struct Checks {
    section: Server,
    ca: Option<PathBuf>,
    /// The name it must be valid for, and whether `server_name` gives it; `None` with `verify-ca`.
    name: Option<(String, bool)>,
}

impl fmt::Display for Checks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let section = self.section;
        let ca = self.ca.as_ref().map_or_else(|| "(none)".into(), |ca| ca.display().to_string());
        write!(f, "wants a certificate that chains to backends.{section}.tls.ca ({ca})")?;
        match &self.name {
            Some((name, true)) => write!(f, " and is valid for \"{name}\" (backends.{section}.tls.server_name)"),
            Some((name, false)) => write!(
                f,
                " and is valid for \"{name}\" (the host of backends.{section}.address; set \
                 backends.{section}.tls.server_name to expect another name)"
            ),
            None => Ok(()),
        }
    }
}

/// mysql_async's TLS options for `tls`, with `server_name` the name the proxy uses ([`BackendTls::server_name`]);
/// `None` for plaintext. The one place where MySQL's `--ssl-mode` semantics become mysql_async's, as the proxy's
/// data path applies them:
///
/// - `disabled`: no TLS;
/// - `preferred`, `required`: TLS, any certificate (`with_danger_accept_invalid_certs`), or with a `ca` given
///   one that chains to it, as `verify-ca`; the commands' login falls back to plaintext under `preferred` when
///   the server offers no TLS;
/// - `verify-ca`: TLS, a certificate that chains to `ca` alone (built-in roots off), for any name
///   (`with_danger_skip_domain_validation`, which the login completes for mysql_async 0.37.1);
/// - `verify-identity`: TLS, a certificate that chains to `ca` alone and is valid for `server_name`
///   (`with_danger_tls_hostname_override`).
///
/// A client certificate, when given, goes with every mode but `disabled`.
pub fn ssl_opts(tls: &config::BackendTls, server_name: &str) -> Option<SslOpts> {
    let identity = match (&tls.certificate, &tls.key) {
        (Some(certificate), Some(key)) => Some(ClientIdentity::new(certificate.clone().into(), key.clone().into())),
        _ => None,
    };
    let base = SslOpts::default()
        .with_client_identity(identity)
        .with_danger_tls_hostname_override(Some(server_name.to_owned()));
    let verified = || {
        base.clone()
            .with_root_certs(tls.ca.iter().map(|ca| ca.clone().into()).collect())
            .with_disable_built_in_roots(true)
    };
    match tls.mode {
        TlsMode::Disabled => None,
        // The built-in roots stay: mysql_async refuses to build a verifier without any, even one it never asks.
        TlsMode::Preferred | TlsMode::Required if tls.ca.is_none() => Some(base.with_danger_accept_invalid_certs(true)),
        TlsMode::Preferred | TlsMode::Required | TlsMode::VerifyCa => {
            Some(verified().with_danger_skip_domain_validation(true))
        }
        TlsMode::VerifyIdentity => Some(verified()),
    }
}

/// A name no certificate is valid for, which makes mysql_async 0.37.1 skip the name check of `verify-ca`.
///
/// That version recognises a name mismatch only by the text `NotValidForName` in rustls's message
/// (blackbeam/mysql_async#404), and rustls 0.23 words the mismatch without it, except that its message quotes the
/// name expected. With this name expected, the mismatch is recognised and skipped; the chain to `ca` is still
/// verified. It is only tried after a login with the real name failed on the name alone, so a certificate
/// valid for the server's name is checked with that name (and the handshake names the server, SNI), as the proxy
/// does.
const SKIPPED_NAME: &str = "NotValidForName.invalid";

impl LoginTls {
    /// The TLS of logins to `backend` under `[backends.<section>.tls]`, with its files read and checked as the
    /// proxy checks them.
    pub(super) fn new(section: Server, backend: &Backend) -> Result<LoginTls, TlsError> {
        let checked = BackendTls::load(section, backend)?;
        // mysql_async builds its rustls configurations with the process's default provider, which rustls picks
        // by itself only while a single one is compiled in: make it the proxy's own (aws-lc-rs) in any case. An
        // error means one is in place already.
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let server_name = checked.server_name().to_str().into_owned();
        Ok(LoginTls {
            section,
            mode: backend.tls.mode,
            ca: backend.tls.ca.clone(),
            ssl: ssl_opts(&backend.tls, &server_name),
            server_name,
            name_written: backend.tls.server_name.is_some(),
            key_given: backend.tls.server_public_key.is_some(),
        })
    }

    /// Logs in with `opts` (everything but TLS) as the mode says. A `preferred` login to a server that offers no
    /// TLS is retried in plaintext, as MySQL's clients do (mysql_async has no such mode: it refuses the server),
    /// unless a `ca` or a `server_public_key` is given;
    /// a login that checks the chain alone (`verify-ca`, or `preferred`/`required` with a `ca`) refused on the
    /// certificate's name alone is retried with [`SKIPPED_NAME`].
    pub(super) async fn connect(&self, opts: &Opts) -> Result<Conn, LoginError> {
        let Some(ssl) = &self.ssl else {
            if self.key_given {
                let remedy = "set its tls.mode to \"required\" or stronger to run them";
                return Err(LoginError::KeyWithoutTls { section: self.section, remedy });
            }
            return self.login(opts, None).await;
        };
        let error = match Conn::new(with_tls(opts, Some(ssl.clone()))).await {
            Ok(conn) => return Ok(conn),
            Err(error) => error,
        };
        match self.mode {
            TlsMode::Preferred if offers_no_tls(&error) && self.key_given => {
                let remedy = "the server offers no TLS";
                Err(LoginError::KeyWithoutTls { section: self.section, remedy })
            }
            TlsMode::Preferred if offers_no_tls(&error) && self.ca.is_none() => self.login(opts, None).await,
            TlsMode::Preferred | TlsMode::Required | TlsMode::VerifyCa
                if self.ca.is_some() && name_mismatch(&error) =>
            {
                self.login(opts, Some(ssl.clone().with_danger_tls_hostname_override(Some(SKIPPED_NAME)))).await
            }
            _ => Err(self.refusal(error)),
        }
    }

    async fn login(&self, opts: &Opts, ssl: Option<SslOpts>) -> Result<Conn, LoginError> {
        Conn::new(with_tls(opts, ssl)).await.map_err(|error| self.refusal(error))
    }

    /// What a failed login means under this mode.
    fn refusal(&self, error: mysql_async::Error) -> LoginError {
        let (section, mode) = (self.section, self.mode.as_str());
        if offers_no_tls(&error) {
            return LoginError::ServerWithoutTls { section, mode };
        }
        if self.ssl.is_none() {
            match server_code(&error) {
                Some(ER_SECURE_TRANSPORT_REQUIRED) => return LoginError::ServerRequiresTls { section, source: error },
                Some(ER_ACCESS_DENIED) => return LoginError::DeniedWithoutTls { section, source: error },
                _ => {}
            }
        }
        match rustls_error(&error) {
            Some(reason @ rustls::Error::InvalidCertificate(_)) => {
                let name =
                    (self.mode == TlsMode::VerifyIdentity).then(|| (self.server_name.clone(), self.name_written));
                let checks = Checks { section, ca: self.ca.clone(), name };
                LoginError::Certificate { section, mode, checks, reason: reason.clone() }
            }
            Some(reason) => LoginError::Handshake { section, mode, reason: reason.clone() },
            None => LoginError::Client(error),
        }
    }
}

/// `opts` with `ssl`.
fn with_tls(opts: &Opts, ssl: Option<SslOpts>) -> OptsBuilder {
    OptsBuilder::from_opts(opts.clone()).ssl_opts(ssl)
}

/// Whether the login failed because the server's greeting has no CLIENT_SSL.
fn offers_no_tls(error: &mysql_async::Error) -> bool {
    matches!(error, mysql_async::Error::Driver(DriverError::NoClientSslFlagFromServer))
}

/// MySQL's refusal of a plaintext login to a server with `require_secure_transport`.
const ER_SECURE_TRANSPORT_REQUIRED: u16 = 3159;
/// A denied login: a wrong user or password, or (MariaDB 10.11) a plaintext login to a server with
/// `require_secure_transport`.
const ER_ACCESS_DENIED: u16 = 1045;

/// The server's error code, if the server refused.
fn server_code(error: &mysql_async::Error) -> Option<u16> {
    match error {
        mysql_async::Error::Server(server) => Some(server.code),
        _ => None,
    }
}

/// Whether the certificate failed only because it is not valid for the name expected.
fn name_mismatch(error: &mysql_async::Error) -> bool {
    matches!(
        rustls_error(error),
        Some(rustls::Error::InvalidCertificate(
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. }
        ))
    )
}

/// The rustls error inside a failed login, if TLS is what failed.
fn rustls_error(error: &mysql_async::Error) -> Option<&rustls::Error> {
    match error {
        // tokio-rustls reports a failed handshake as an I/O error carrying rustls's.
        mysql_async::Error::Io(IoError::Io(io)) => io.get_ref()?.downcast_ref(),
        mysql_async::Error::Io(IoError::Tls(mysql_async::TlsError::Tls(tls))) => Some(tls),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
    use rustls::RootCertStore;
    use rustls::client::WebPkiServerVerifier;
    use rustls::client::danger::ServerCertVerifier;
    use rustls::pki_types::{ServerName, UnixTime};

    use super::*;

    fn tls(mode: TlsMode) -> config::BackendTls {
        config::BackendTls { mode, ca: Some("ca.pem".into()), ..Default::default() }
    }

    #[test]
    fn each_mode_maps_to_what_it_checks() {
        assert_eq!(ssl_opts(&tls(TlsMode::Disabled), "db"), None);
        for mode in [TlsMode::Preferred, TlsMode::Required] {
            let ssl = ssl_opts(&config::BackendTls { mode, ..Default::default() }, "db").unwrap();
            assert!(ssl.accept_invalid_certs(), "{mode:?}");
            assert!(ssl.root_certs().is_empty(), "{mode:?}");
        }
        // A `ca` given is checked in every mode with TLS (checked: before, `preferred` and `required` ignored it).
        for mode in [TlsMode::Preferred, TlsMode::Required, TlsMode::VerifyCa, TlsMode::VerifyIdentity] {
            let ssl = ssl_opts(&tls(mode), "db").unwrap();
            assert!(!ssl.accept_invalid_certs(), "{mode:?}");
            assert!(ssl.disable_built_in_roots(), "only `ca` is trusted: {mode:?}");
            assert_eq!(ssl.root_certs(), [PathBuf::from("ca.pem").into()], "{mode:?}");
            assert_eq!(ssl.skip_domain_validation(), mode != TlsMode::VerifyIdentity);
            assert_eq!(ssl.tls_hostname_override(), Some("db"), "{mode:?}");
        }
    }

    #[test]
    fn a_client_certificate_goes_with_every_tls_mode() {
        let with_identity = config::BackendTls {
            certificate: Some("client.pem".into()),
            key: Some("client.key".into()),
            ..tls(TlsMode::Required)
        };
        let identity = ssl_opts(&with_identity, "db").unwrap().client_identity().cloned().unwrap();
        assert_eq!(identity.cert_chain(), PathBuf::from("client.pem").into());
        assert_eq!(identity.priv_key(), PathBuf::from("client.key").into());
        assert!(ssl_opts(&tls(TlsMode::Required), "db").unwrap().client_identity().is_none());
    }

    #[test]
    fn a_certificate_refusal_says_where_the_name_came_from() {
        let checks = |name| Checks { section: Server::Csmh, ca: Some("ca.pem".into()), name };
        let written = checks(Some(("db".to_owned(), true))).to_string();
        assert!(written.ends_with("valid for \"db\" (backends.csmh.tls.server_name)"), "{written}");
        let host = checks(Some(("10.0.0.1".to_owned(), false))).to_string();
        assert!(host.contains("valid for \"10.0.0.1\" (the host of backends.csmh.address;"), "{host}");
        let any = checks(None).to_string();
        assert_eq!(any, "wants a certificate that chains to backends.csmh.tls.ca (ca.pem)");
    }

    /// mysql_async 0.37.1 skips a name mismatch only when rustls's message holds `NotValidForName`: expecting
    /// [`SKIPPED_NAME`] must keep producing such a message, or `verify-ca` refuses every certificate issued for
    /// another name than the server's (it never accepts one that does not chain to `ca`).
    #[test]
    fn a_mismatch_with_the_skipped_name_is_one_mysql_async_skips() {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        let leaf = CertificateParams::new(vec!["db.example.org".to_owned()])
            .unwrap()
            .signed_by(&KeyPair::generate().unwrap(), &issuer)
            .unwrap();
        let mut roots = RootCertStore::empty();
        roots.add(issuer.der().clone()).unwrap();
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let verifier = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider).build().unwrap();
        let name = ServerName::try_from(SKIPPED_NAME).unwrap();
        let error = verifier.verify_server_cert(leaf.der(), &[], &name, &[], UnixTime::now()).unwrap_err();
        assert!(
            matches!(&error, rustls::Error::InvalidCertificate(CertificateError::NotValidForNameContext { .. })),
            "{error:?}"
        );
        assert!(error.to_string().contains("NotValidForName"), "{error}");
    }
}
