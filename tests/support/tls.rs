//! Certificates made at test time (rcgen): a test authority, a server certificate it signs for `localhost` and
//! `127.0.0.1`, and a client certificate; written as PEM files into a directory of the test's own. Also the
//! `mariadbd` options that serve a certificate, for MariaDB servers with TLS.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use tempfile::TempDir;

/// A test certificate authority and the PEM files it signed, removed with it.
pub struct TestPki {
    dir: TempDir,
    issuer: CertifiedIssuer<'static, KeyPair>,
    /// The authority's certificate.
    pub ca: PathBuf,
}

/// A certificate and its key, as PEM files.
#[derive(Debug, Clone)]
pub struct CertFiles {
    /// The certificate.
    pub certificate: PathBuf,
    /// Its private key.
    pub key: PathBuf,
}

impl TestPki {
    /// A new authority named `name`, in a new directory.
    pub fn new(name: &str) -> TestPki {
        let dir = tempfile::Builder::new().prefix("csmh-tls-").tempdir().expect("a directory for certificates");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA parameters");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().expect("a CA key")).expect("a CA");
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, issuer.pem()).expect("write the CA certificate");
        TestPki { dir, issuer, ca }
    }

    /// The directory the files are in.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// A certificate signed by the authority for `names` (host names or IP addresses), written as `<file>.pem`
    /// and `<file>.key`.
    pub fn issue(&self, file: &str, names: &[&str]) -> CertFiles {
        let names: Vec<String> = names.iter().map(|name| (*name).to_owned()).collect();
        let mut params = CertificateParams::new(names).expect("certificate parameters");
        params.distinguished_name.push(DnType::CommonName, file);
        let key = KeyPair::generate().expect("a key");
        let certificate = params.signed_by(&key, &self.issuer).expect("a signed certificate");
        let files = CertFiles {
            certificate: self.dir.path().join(format!("{file}.pem")),
            key: self.dir.path().join(format!("{file}.key")),
        };
        std::fs::write(&files.certificate, certificate.pem()).expect("write the certificate");
        std::fs::write(&files.key, key.serialize_pem()).expect("write the key");
        files
    }

    /// A server certificate for `localhost` and `127.0.0.1`.
    pub fn localhost(&self, file: &str) -> CertFiles {
        self.issue(file, &["localhost", "127.0.0.1"])
    }

    /// The `mariadbd` options serving `server` with this authority.
    pub fn mariadb_options(&self, server: &CertFiles) -> Vec<OsString> {
        let option = |name: &str, path: &Path| {
            let mut option = OsString::from(format!("--{name}="));
            option.push(path);
            option
        };
        vec![option("ssl-ca", &self.ca), option("ssl-cert", &server.certificate), option("ssl-key", &server.key)]
    }
}
