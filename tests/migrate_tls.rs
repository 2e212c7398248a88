//! The migration commands log in with `[backends.<name>.tls]` as the proxy does: `csmh-proxy status` against
//! MariaDB servers that accept only TLS logins (`require_secure_transport`), serving certificates of a test
//! authority, and against the shared server, which offers no TLS.

mod migrate_support;
mod support;

use std::path::Path;
use std::process::Output;

use migrate_support::{MigrationSite, outputs};
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, OptsBuilder, SslOpts};
use support::tls::TestPki;
use support::{EdxDatabases, MariaDb, app, require_secure_transport, tls_server};

/// Root's connection to `server` over TLS (it may refuse plaintext).
async fn tls_root(server: &MariaDb) -> Conn {
    let ssl = SslOpts::default().with_danger_accept_invalid_certs(true);
    Conn::new(OptsBuilder::from_opts(server.root_opts()).ssl_opts(ssl)).await.expect("root logs in over TLS")
}

/// `[backends.<section>.tls]` with `settings` (values written as TOML strings).
fn tls(section: &str, settings: &[(&str, &str)]) -> String {
    let mut table = format!("[backends.{section}.tls]\n");
    for (key, value) in settings {
        table.push_str(&format!("{key} = {}\n", toml::Value::String((*value).to_owned())));
    }
    table
}

/// A path as a TOML value.
fn path(path: &Path) -> &str {
    path.to_str().expect("a UTF-8 path")
}

/// `status` with `extra` appended to the site's configuration, which must succeed.
async fn logs_in(site: &MigrationSite, extra: &str) {
    let output = site.command_with(extra, &["status"]).await;
    assert_eq!(output.status.code(), Some(0), "with\n{extra}\n{}", outputs(&output));
}

/// `status` with `extra` appended to the site's configuration, which must fail to log in; its error message.
async fn refused(site: &MigrationSite, extra: &str) -> String {
    let output: Output = site.command_with(extra, &["status"]).await;
    assert_eq!(output.status.code(), Some(2), "with\n{extra}\n{}", outputs(&output));
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[tokio::test]
async fn every_tls_mode_logs_in_to_a_server_that_requires_tls_and_disabled_says_which_key_to_change() {
    let pki = TestPki::new("csmh-proxy test authority");
    let server = tls_server(&pki, &pki.localhost("server")).await;
    let site = MigrationSite::on(EdxDatabases::fresh_on(server.clone(), server.clone()).await).await;
    require_secure_transport(&server).await;
    let ca = path(&pki.ca);

    for mode in ["preferred", "required"] {
        logs_in(&site, &tls("edxapp", &[("mode", mode)])).await;
    }
    // The certificate is valid for 127.0.0.1, the host of the address, and for localhost.
    logs_in(&site, &tls("edxapp", &[("mode", "verify-identity"), ("ca", ca)])).await;
    logs_in(&site, &tls("edxapp", &[("mode", "verify-identity"), ("ca", ca), ("server_name", "localhost")])).await;
    logs_in(&site, &tls("edxapp", &[("mode", "verify-ca"), ("ca", ca)])).await;
    // On one server, `[backends.csmh]` without a user logs in as `[backends.edxapp]` does, TLS included: the proxy
    // never uses `[backends.csmh.tls]` there.
    let csmh_disabled = tls("csmh", &[("mode", "disabled")]);
    logs_in(&site, &format!("{}{csmh_disabled}", tls("edxapp", &[("mode", "required")]))).await;

    let error = refused(&site, &tls("edxapp", &[("mode", "disabled")])).await;
    assert!(error.contains("cannot connect to [backends.edxapp] at 127.0.0.1:"), "{error}");
    assert!(error.contains("Access denied"), "{error}");
    assert!(error.contains("if the server accepts only logins over TLS"), "{error}");
    assert!(error.contains("set backends.edxapp.tls.mode to \"required\" or stronger"), "{error}");

    // A client certificate, for an account that requires one.
    let client = pki.issue("client", &["edxapp-client"]);
    let mut root = tls_root(&server).await;
    root.query_drop(format!("ALTER USER '{}'@'%' REQUIRE X509", app().user)).await.expect("require a certificate");
    let identity = [("certificate", path(&client.certificate)), ("key", path(&client.key))];
    logs_in(&site, &tls("edxapp", &[&[("mode", "verify-identity"), ("ca", ca)][..], &identity].concat())).await;
    let error = refused(&site, &tls("edxapp", &[("mode", "verify-identity"), ("ca", ca)])).await;
    assert!(error.contains("Access denied"), "{error}");
}

#[tokio::test]
async fn verify_identity_refuses_a_certificate_for_another_name_and_verify_ca_checks_only_the_authority() {
    let pki = TestPki::new("csmh-proxy test authority");
    let elsewhere = tls_server(&pki, &pki.issue("other", &["db.example.org"])).await;
    // `edxapp` on the shared server (no TLS), `csmh` on a server of its own whose certificate names another host.
    let site = MigrationSite::on(EdxDatabases::fresh_on(support::server().await, elsewhere.clone()).await).await;
    require_secure_transport(&elsewhere).await;
    let ca = path(&pki.ca);

    let error = refused(&site, &tls("csmh", &[("mode", "verify-identity"), ("ca", ca)])).await;
    assert!(error.contains("cannot connect to [backends.csmh] at 127.0.0.1:"), "{error}");
    assert!(error.contains("its certificate does not verify: backends.csmh.tls.mode = \"verify-identity\""), "{error}");
    assert!(error.contains("backends.csmh.tls.ca"), "{error}");
    assert!(error.contains("valid for \"127.0.0.1\" (the host of backends.csmh.address;"), "{error}");
    assert!(error.contains("db.example.org"), "{error}");
    logs_in(&site, &tls("csmh", &[("mode", "verify-identity"), ("ca", ca), ("server_name", "db.example.org")])).await;

    // verify-ca takes a certificate of the authority whatever name it is issued for (mysql_async 0.37.1 alone
    // would check the name: `migrate::tls` completes it), and nothing else.
    logs_in(&site, &tls("csmh", &[("mode", "verify-ca"), ("ca", ca)])).await;
    logs_in(&site, &tls("csmh", &[("mode", "required")])).await;
    // With a server_public_key, `preferred` logs in over the TLS the server offers (without one it is refused).
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("server_public_key.pem");
    std::fs::write(&key, PUBLIC_KEY).unwrap();
    logs_in(&site, &tls("csmh", &[("mode", "preferred"), ("server_public_key", path(&key))])).await;
    let stranger = TestPki::new("another authority");
    for mode in ["verify-ca", "verify-identity"] {
        let error = refused(&site, &tls("csmh", &[("mode", mode), ("ca", path(&stranger.ca))])).await;
        assert!(error.contains(&format!("backends.csmh.tls.mode = \"{mode}\"")), "{error}");
        assert!(error.contains("UnknownIssuer"), "{error}");
    }

    let error = refused(&site, &tls("csmh", &[("mode", "disabled")])).await;
    assert!(error.contains("set backends.csmh.tls.mode to \"required\" or stronger"), "{error}");
}

#[tokio::test]
async fn preferred_logs_in_without_tls_to_a_server_without_it_and_required_refuses_it() {
    let site = MigrationSite::new(false).await;
    logs_in(&site, &tls("edxapp", &[("mode", "preferred")])).await;

    // The files are read before any login, and checked as the proxy checks them.
    let error = refused(&site, &tls("edxapp", &[("mode", "verify-ca"), ("ca", "/nonexistent/ca.pem")])).await;
    assert!(error.contains("backends.edxapp.tls.ca: cannot read /nonexistent/ca.pem"), "{error}");

    let error = refused(&site, &tls("edxapp", &[("mode", "required")])).await;
    assert!(error.contains("cannot connect to [backends.edxapp] at 127.0.0.1:"), "{error}");
    assert!(
        error.contains("the server does not offer TLS, which backends.edxapp.tls.mode = \"required\" requires"),
        "{error}"
    );
}

/// An RSA public key, for `server_public_key` (the commands refuse it before any login).
const PUBLIC_KEY: &str = "-----BEGIN PUBLIC KEY-----
MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAs68OhfM+LFbmUGIHwGxn
9TR+7a771ZKMrcZxwigbujzjPb+WT+aE9rOSEndvZlk7WYg/FKWzAMilL0/yqITz
vkC+r9+DCqK/Ap/3oOHHZ9aQQZbcbWgWyFPP37CO3x8801cjdDimMCqDlYhrkyDi
0Hs4aqd+TJxvrCiGEEO/oWnPRU4cEA6e/bF0Qdcj2SRxIQ2AKNaqvjyEArkkA7mE
BTmVGrJchIEGUejGwlJ6bS+rvrWw7UvB49xgOKjtwBMcd7PvrViDo4950a4iLF1x
7HhW6ZJUMiuDyw7anzrBZmyqBjQjvGPP/b80VjDnGyD2K722eBkOIWU0iZChjxHp
MQIDAQAB
-----END PUBLIC KEY-----
";

#[tokio::test]
async fn with_a_server_public_key_the_commands_log_in_over_tls_only() {
    // The proxy encrypts its own password with the key given; mysql_async would take whichever key the server
    // sends, so the commands refuse to log in without TLS rather than ignore the key (checked: before, both
    // logged in in plaintext).
    let site = MigrationSite::new(true).await;
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("server_public_key.pem");
    std::fs::write(&key, PUBLIC_KEY).unwrap();
    for (mode, remedy) in [("preferred", "the server offers no TLS"), ("disabled", "or stronger to run them")] {
        let error = refused(&site, &tls("csmh", &[("mode", mode), ("server_public_key", path(&key))])).await;
        assert!(error.contains("backends.csmh.tls.server_public_key is given"), "{error}");
        assert!(error.contains(remedy), "{error}");
    }
    logs_in(&site, &tls("csmh", &[("mode", "preferred")])).await;
}
