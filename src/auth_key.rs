//! The proxy's own RSA key for caching_sha2_password's full authentication when only the server's leg is
//! encrypted.
//!
//! A server asks for the password itself (full authentication) when its cache of the account's hash is cold:
//! after every restart, for every account. Over TLS the client sends it in cleartext; in plaintext the client asks
//! for the server's RSA public key and sends the password encrypted with it (OAEP), XORed with the scramble. A
//! server reached over TLS reads the cleartext form only, so when the client's leg is plaintext and the server's
//! is TLS, the proxy answers the key request with its own public key, decrypts what the client sends, and hands
//! the server the cleartext inside TLS, as MySQL's own router does. The password exists in the proxy's memory
//! only while it is passed on, and is wiped after.
//!
//! The key pair is generated once per process (2048 bits, like MySQL's auto-generated pair), the first time it is
//! needed, and never leaves the process.

use aws_lc_rs::encoding::AsDer;
use std::sync::Arc;

use aws_lc_rs::rsa::{
    KeySize, OAEP_SHA1_MGF1SHA1, OaepPrivateDecryptingKey, OaepPublicEncryptingKey, PrivateDecryptingKey,
    PublicEncryptingKey,
};
use base64::Engine;
use zeroize::Zeroizing;

/// Why a password could not be recovered from what the client sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "the client's encrypted password does not decrypt with csmh-proxy's key (was it encrypted with the server's own \
     public key, such as one given to the client as a file?)"
)]
pub struct UndecryptablePassword;

/// An RSA key pair for caching_sha2_password's exchange with plaintext clients.
pub struct AuthKey {
    key: OaepPrivateDecryptingKey,
    public_pem: Vec<u8>,
}

impl std::fmt::Debug for AuthKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthKey").field("bits", &self.key.key_size_bits()).finish()
    }
}

impl AuthKey {
    /// Generates a new 2048-bit key pair (tens of milliseconds: run it off the runtime's threads).
    pub fn generate() -> Result<AuthKey, aws_lc_rs::error::Unspecified> {
        let private = PrivateDecryptingKey::generate(KeySize::Rsa2048)?;
        let der = private.public_key().as_der()?;
        let public_pem = pem("PUBLIC KEY", der.as_ref());
        Ok(AuthKey { key: OaepPrivateDecryptingKey::new(private)?, public_pem })
    }

    /// The public key as the PEM text a server sends in answer to the request for its key.
    pub fn public_pem(&self) -> &[u8] {
        &self.public_pem
    }

    /// The password the client encrypted with [`AuthKey::public_pem`] after XORing it (with its NUL) with the
    /// `scramble`: the password and its NUL, as the server reads it over TLS. Wiped when dropped.
    pub fn decrypt_password(
        &self,
        encrypted: &[u8],
        scramble: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, UndecryptablePassword> {
        if scramble.is_empty() {
            return Err(UndecryptablePassword);
        }
        let mut plain = Zeroizing::new(vec![0; self.key.min_output_size()]);
        let len = self
            .key
            .decrypt(&OAEP_SHA1_MGF1SHA1, encrypted, &mut plain, None)
            .map_err(|_| UndecryptablePassword)?
            .len();
        plain.truncate(len);
        xor_with_scramble(&mut plain, scramble);
        if plain.last() != Some(&0) {
            return Err(UndecryptablePassword);
        }
        Ok(plain)
    }
}

/// A server's RSA public key, given to the proxy as a PEM file (`[backends.<name>.tls] server_public_key`): what
/// the proxy encrypts its own password with when that server asks for it in full over a connection without TLS.
/// A key the server sends is never used for that: on a path without TLS it could be anyone's.
#[derive(Clone)]
pub struct ServerPublicKey(Arc<OaepPublicEncryptingKey>);

impl std::fmt::Debug for ServerPublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerPublicKey").field("bytes", &self.0.key_size_bytes()).finish()
    }
}

impl ServerPublicKey {
    /// Reads a PEM `PUBLIC KEY` (X.509 SubjectPublicKeyInfo, as MySQL writes `public_key.pem`) holding an RSA key.
    pub fn from_pem(pem: &[u8]) -> Result<ServerPublicKey, String> {
        let text = std::str::from_utf8(pem).map_err(|_| "not PEM text".to_owned())?;
        let body = text
            .split_once("-----BEGIN PUBLIC KEY-----")
            .and_then(|(_, rest)| rest.split_once("-----END PUBLIC KEY-----"))
            .map(|(body, _)| body)
            .ok_or_else(|| "no PEM block \"PUBLIC KEY\"".to_owned())?;
        let base64: String = body.chars().filter(|c| !c.is_ascii_whitespace()).collect();
        let der = base64::engine::general_purpose::STANDARD.decode(base64).map_err(|e| format!("bad base64: {e}"))?;
        let key = PublicEncryptingKey::from_der(&der).map_err(|e| format!("not an RSA public key: {e}"))?;
        let key = OaepPublicEncryptingKey::new(key).map_err(|_| "not an RSA key for OAEP".to_owned())?;
        Ok(ServerPublicKey(Arc::new(key)))
    }

    /// `password` (with its NUL) XORed with `scramble` and encrypted with the key (OAEP with SHA-1), as
    /// caching_sha2_password's full authentication sends it without TLS.
    pub fn encrypt_password(&self, password: &[u8], scramble: &[u8]) -> Result<Vec<u8>, UnencryptablePassword> {
        let mut masked = Zeroizing::new(password.to_vec());
        xor_with_scramble(&mut masked, scramble);
        let mut out = vec![0; self.0.ciphertext_size()];
        let len =
            self.0.encrypt(&OAEP_SHA1_MGF1SHA1, &masked, &mut out, None).map_err(|_| UnencryptablePassword)?.len();
        out.truncate(len);
        Ok(out)
    }
}

/// Why the proxy's password could not be encrypted with a server's key (too long for it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the password is too long to encrypt with the server's RSA key")]
pub struct UnencryptablePassword;

/// XORs `bytes` (a password and its NUL) with `scramble`, repeated: what caching_sha2_password's RSA exchange
/// encrypts, and what a decryption gives back.
pub fn xor_with_scramble(bytes: &mut [u8], scramble: &[u8]) {
    for (byte, mask) in bytes.iter_mut().zip(scramble.iter().cycle()) {
        *byte ^= mask;
    }
}

/// `der` as PEM text with the label `label`, lines of 64 characters.
fn pem(label: &str, der: &[u8]) -> Vec<u8> {
    let encoded = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in encoded.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).unwrap_or_default());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out.into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a client sends: the password and its NUL, XORed with the scramble, encrypted with the key.
    fn client_sends(pem: &[u8], password: &[u8], scramble: &[u8]) -> Vec<u8> {
        let mut block: Vec<u8> = password.iter().chain([&0]).copied().collect();
        xor_with_scramble(&mut block, scramble);
        mysql_common::crypto::encrypt(&block, pem)
    }

    #[test]
    fn a_password_encrypted_as_clients_do_is_recovered() {
        let key = AuthKey::generate().unwrap();
        assert!(key.public_pem().starts_with(b"-----BEGIN PUBLIC KEY-----\n"));
        let scramble = b"0123456789abcdefghij";
        let encrypted = client_sends(key.public_pem(), b"a password longer than the twenty-byte scramble", scramble);
        let plain = key.decrypt_password(&encrypted, scramble).unwrap();
        assert_eq!(plain.as_slice(), b"a password longer than the twenty-byte scramble\0");
    }

    #[test]
    fn the_proxys_password_encrypted_with_a_servers_key_file_decrypts_with_its_private_key() {
        let server = AuthKey::generate().unwrap();
        let key = ServerPublicKey::from_pem(server.public_pem()).unwrap();
        let scramble = b"0123456789abcdefghij";
        let encrypted = key.encrypt_password(b"the proxy's password\0", scramble).unwrap();
        assert_eq!(server.decrypt_password(&encrypted, scramble).unwrap().as_slice(), b"the proxy's password\0");
        assert!(ServerPublicKey::from_pem(b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n").is_err());
        assert!(ServerPublicKey::from_pem(b"not a key").is_err());
    }

    #[test]
    fn anything_else_is_refused() {
        let key = AuthKey::generate().unwrap();
        let other = AuthKey::generate().unwrap();
        let scramble = b"0123456789abcdefghij";
        let for_other = client_sends(other.public_pem(), b"secret", scramble);
        assert_eq!(key.decrypt_password(&for_other, scramble), Err(UndecryptablePassword));
        assert_eq!(key.decrypt_password(b"\x02", scramble), Err(UndecryptablePassword));
        let wrong_scramble = client_sends(key.public_pem(), b"secret", b"another scramble....");
        assert_eq!(key.decrypt_password(&wrong_scramble, scramble), Err(UndecryptablePassword));
    }
}
