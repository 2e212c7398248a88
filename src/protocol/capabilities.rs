//! Capability bits: which the proxy lets client and server negotiate, and which it masks on both sides.
//!
//! The proxy relays frames without decoding them, so any capability that changes the framing or the packet
//! layout in ways the relay does not follow (compression, TLS for now, MariaDB's progress reports, metadata
//! caching, bulk operations, query attributes, optional metadata) is removed from the server's greeting and from
//! the client's answer, so both sides agree that it is off.

use mysql_common::constants::CapabilityFlags;

/// Capability bits the proxy does not implement.
pub const UNSUPPORTED: CapabilityFlags = CapabilityFlags::CLIENT_COMPRESS
    .union(CapabilityFlags::CLIENT_SSL)
    .union(CapabilityFlags::CLIENT_ZSTD_COMPRESSION_ALGORITHM)
    .union(CapabilityFlags::CLIENT_QUERY_ATTRIBUTES)
    .union(CapabilityFlags::CLIENT_OPTIONAL_RESULTSET_METADATA)
    .union(CapabilityFlags::CLIENT_PROGRESS_OBSOLETE)
    .union(CapabilityFlags::CLIENT_SSL_VERIFY_SERVER_CERT);

/// Removes what the proxy does not implement from a 32-bit capability word.
pub fn mask(bits: u32) -> u32 {
    bits & !UNSUPPORTED.bits()
}

/// The capabilities a session runs with: what both sides announced, after masking.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Negotiated(CapabilityFlags);

impl Negotiated {
    /// The agreement between the server's greeting and the client's answer.
    pub fn new(server: u32, client: u32) -> Negotiated {
        Negotiated(CapabilityFlags::from_bits_truncate(mask(server) & mask(client)))
    }

    /// The flags themselves.
    pub fn flags(&self) -> CapabilityFlags {
        self.0
    }

    /// Result sets end with an OK packet (`0xFE` header) instead of EOF, and metadata has no EOF after it.
    pub fn deprecate_eof(&self) -> bool {
        self.0.contains(CapabilityFlags::CLIENT_DEPRECATE_EOF)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masking_keeps_what_the_relay_follows() {
        let both = CapabilityFlags::CLIENT_PROTOCOL_41
            | CapabilityFlags::CLIENT_DEPRECATE_EOF
            | CapabilityFlags::CLIENT_SESSION_TRACK
            | CapabilityFlags::CLIENT_MULTI_RESULTS
            | CapabilityFlags::CLIENT_COMPRESS
            | CapabilityFlags::CLIENT_SSL;
        let negotiated = Negotiated::new(both.bits(), both.bits());
        assert!(negotiated.deprecate_eof());
        assert!(negotiated.flags().contains(CapabilityFlags::CLIENT_SESSION_TRACK));
        assert!(!negotiated.flags().contains(CapabilityFlags::CLIENT_COMPRESS));
        assert!(!negotiated.flags().contains(CapabilityFlags::CLIENT_SSL));
    }

    #[test]
    fn negotiation_is_the_intersection() {
        let server = (CapabilityFlags::CLIENT_DEPRECATE_EOF | CapabilityFlags::CLIENT_PROTOCOL_41).bits();
        let client = CapabilityFlags::CLIENT_PROTOCOL_41.bits();
        assert!(!Negotiated::new(server, client).deprecate_eof());
    }
}
