//! Capability bits: which the proxy lets client and server negotiate, and which it masks on both sides.
//!
//! The proxy relays frames without decoding them, so any capability that changes the framing or the packet
//! layout in ways the relay does not follow (compression, TLS for now, query attributes, optional metadata,
//! MariaDB's COM_MULTI) is removed from the server's greeting and from the client's answer, so both sides agree
//! that it is off. MariaDB's other extensions (progress reports, bulk execution, extended type metadata,
//! metadata caching) are relayed: `docs/protocol.md` gives the decision for each.

use mysql_common::constants::{CapabilityFlags, MariadbCapabilities};

/// Capability bits the proxy does not implement.
pub const UNSUPPORTED: CapabilityFlags = CapabilityFlags::CLIENT_COMPRESS
    .union(CapabilityFlags::CLIENT_SSL)
    .union(CapabilityFlags::CLIENT_ZSTD_COMPRESSION_ALGORITHM)
    .union(CapabilityFlags::CLIENT_QUERY_ATTRIBUTES)
    .union(CapabilityFlags::CLIENT_OPTIONAL_RESULTSET_METADATA)
    .union(CapabilityFlags::CLIENT_PROGRESS_OBSOLETE)
    .union(CapabilityFlags::CLIENT_SSL_VERIFY_SERVER_CERT);

/// MariaDB's extended capabilities the relay follows: progress reports (ERR-shaped packets with code 0xFFFF that
/// do not end a response), COM_STMT_BULK_EXECUTE and its per-row results, extended type metadata (one more
/// field in column definitions) and metadata caching (a byte after a result's column count saying whether the
/// definitions follow; a prepared statement executed again may leave them out). COM_MULTI is not.
pub const RELAYED_MARIADB: MariadbCapabilities = MariadbCapabilities::MARIADB_CLIENT_PROGRESS
    .union(MariadbCapabilities::MARIADB_CLIENT_STMT_BULK_OPERATIONS)
    .union(MariadbCapabilities::MARIADB_CLIENT_EXTENDED_METADATA)
    .union(MariadbCapabilities::MARIADB_CLIENT_CACHE_METADATA)
    .union(MariadbCapabilities::MARIADB_CLIENT_BULK_UNIT_RESULTS);

/// The MariaDB extensions that change the layout of responses: a connection whose responses are relayed to a
/// client must have exactly the client's.
pub const LAYOUT_MARIADB: MariadbCapabilities =
    MariadbCapabilities::MARIADB_CLIENT_EXTENDED_METADATA.union(MariadbCapabilities::MARIADB_CLIENT_CACHE_METADATA);

/// Removes what the proxy does not implement from a 32-bit capability word.
pub fn mask(bits: u32) -> u32 {
    bits & !UNSUPPORTED.bits()
}

/// Removes what the proxy does not implement from MariaDB's extended capability word.
pub fn mask_mariadb(bits: u32) -> u32 {
    bits & RELAYED_MARIADB.bits()
}

/// Whether a capability word says that MariaDB's extended capabilities follow it: MariaDB servers and clients
/// clear CLIENT_MYSQL (the old CLIENT_LONG_PASSWORD bit) to say so.
pub fn announces_mariadb(bits: u32) -> bool {
    bits & CapabilityFlags::CLIENT_LONG_PASSWORD.bits() == 0
}

/// The capabilities a session runs with: what both sides announced, after masking.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Negotiated {
    flags: CapabilityFlags,
    mariadb: MariadbCapabilities,
}

impl Negotiated {
    /// The agreement between the server's greeting and the client's answer (without MariaDB's extensions).
    pub fn new(server: u32, client: u32) -> Negotiated {
        Negotiated {
            flags: CapabilityFlags::from_bits_truncate(mask(server) & mask(client)),
            mariadb: MariadbCapabilities::empty(),
        }
    }

    /// The same agreement with MariaDB's extended capabilities, each side's as it announced them (zero when it
    /// announced none).
    pub fn with_mariadb(self, server: u32, client: u32) -> Negotiated {
        let mariadb = MariadbCapabilities::from_bits_truncate(mask_mariadb(server) & mask_mariadb(client));
        Negotiated { mariadb, ..self }
    }

    /// The flags themselves.
    pub fn flags(&self) -> CapabilityFlags {
        self.flags
    }

    /// MariaDB's extended capabilities in effect.
    pub fn mariadb(&self) -> MariadbCapabilities {
        self.mariadb
    }

    /// Result sets end with an OK packet (`0xFE` header) instead of EOF, and metadata has no EOF after it.
    pub fn deprecate_eof(&self) -> bool {
        self.flags.contains(CapabilityFlags::CLIENT_DEPRECATE_EOF)
    }

    /// A result's column count is followed by a byte saying whether its column definitions follow (MariaDB's
    /// metadata caching).
    pub fn cache_metadata(&self) -> bool {
        self.mariadb.contains(MariadbCapabilities::MARIADB_CLIENT_CACHE_METADATA)
    }

    /// Column definitions carry MariaDB's extended type metadata after the original column name.
    pub fn extended_metadata(&self) -> bool {
        self.mariadb.contains(MariadbCapabilities::MARIADB_CLIENT_EXTENDED_METADATA)
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
    fn mariadb_extensions_are_relayed_except_com_multi() {
        let all = MariadbCapabilities::all().bits();
        let negotiated = Negotiated::new(0, 0).with_mariadb(all, all);
        assert!(negotiated.extended_metadata());
        assert!(negotiated.mariadb().contains(MariadbCapabilities::MARIADB_CLIENT_PROGRESS));
        assert!(negotiated.mariadb().contains(MariadbCapabilities::MARIADB_CLIENT_STMT_BULK_OPERATIONS));
        assert!(negotiated.cache_metadata());
        assert!(!negotiated.mariadb().contains(MariadbCapabilities::MARIADB_CLIENT_RESERVED_1));
        let client_without = MariadbCapabilities::MARIADB_CLIENT_PROGRESS.bits();
        assert!(!Negotiated::new(0, 0).with_mariadb(all, client_without).extended_metadata());
    }

    #[test]
    fn negotiation_is_the_intersection() {
        let server = (CapabilityFlags::CLIENT_DEPRECATE_EOF | CapabilityFlags::CLIENT_PROTOCOL_41).bits();
        let client = CapabilityFlags::CLIENT_PROTOCOL_41.bits();
        assert!(!Negotiated::new(server, client).deprecate_eof());
    }
}
