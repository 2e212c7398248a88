//! The packets the proxy reads or writes itself: the handshake (whose capability bits it masks in place, so
//! everything else reaches the other side byte for byte), the status words of OK and EOF packets, and ERR.
//!
//! mysql_common parses and validates; the patching is done on the original bytes because re-serializing
//! through mysql_common would drop capability bits it does not know and reorder connection attributes.

use std::borrow::Cow;

use bytes::BytesMut;
use mysql_common::constants::{CapabilityFlags, StatusFlags};
use mysql_common::io::BufMutExt;
use mysql_common::io::ParseBuf;
use mysql_common::packets::{CommonOkPacket, HandshakePacket, HandshakeResponse, OkPacketDeserializer};

use super::ProtocolError;
use super::capabilities::{Negotiated, announces_mariadb, mask, mask_mariadb};
use super::errors::ERR_HEADER;
use super::frame;

/// The largest handshake packet the proxy reads, either side's: the greeting, the client's handshake response
/// and each packet of the authentication exchange. A real one is at most a few hundred bytes (a response with
/// every connection attribute a driver sends is under 1 KiB, an RSA-encrypted password 512 bytes); reading stops
/// at the header of a larger one, before its body is buffered.
pub const MAX_HANDSHAKE_PACKET: usize = 16 * 1024;

/// What the proxy keeps from the server's initial handshake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Greeting {
    /// Server capabilities after masking.
    pub capabilities: u32,
    /// The server offers TLS (CLIENT_SSL), whatever the client is told.
    pub offers_tls: bool,
    /// The scramble (nonce) the client's authentication answers, both parts joined, without the NUL after it.
    pub scramble: Vec<u8>,
    /// MariaDB's extended capabilities after masking (0 when the server announced none).
    pub mariadb_capabilities: u32,
    /// The backend's connection (thread) id.
    pub connection_id: u32,
    /// The backend's version string.
    pub server_version: String,
}

impl Greeting {
    /// Whether the server is MariaDB rather than MySQL: every MariaDB names itself in its version string
    /// (`5.5.5-10.11.6-MariaDB`, `11.4.2-MariaDB-log`).
    pub fn is_mariadb(&self) -> bool {
        self.server_version.contains("MariaDB")
    }
}

/// Offsets of the fields the proxy patches, counted from the byte after the server version's NUL.
const GREETING_CAPS_LOW: usize = 13;
const GREETING_CAPS_HIGH: usize = 18;
const GREETING_MARIADB_CAPS: usize = 27;

/// Offset of the length of the scramble's second part, counted like the fields above, and the fixed part's length.
const GREETING_AUTH_DATA_LEN: usize = 20;
const GREETING_FIXED_LEN: usize = 31;

/// Reads the server's initial handshake.
///
/// The fields are checked before mysql_common parses them: it subtracts from the scramble length as a signed
/// byte, which overflows (a panic in a debug build) for lengths from 0x80 on, which no server sends.
pub fn parse_greeting(payload: &[u8]) -> Result<HandshakePacket<'_>, ProtocolError> {
    let malformed = || ProtocolError::Malformed("initial handshake");
    let fixed = greeting_fixed_start(payload).ok_or_else(malformed)?;
    match payload.get(fixed + GREETING_AUTH_DATA_LEN) {
        Some(&len) if len < 0x80 && payload.len() >= fixed + GREETING_FIXED_LEN => {
            ParseBuf(payload).parse(()).map_err(|_| malformed())
        }
        _ => Err(malformed()),
    }
}

/// Where the greeting's fields after the server version start: past the protocol version byte and the version's
/// NUL.
fn greeting_fixed_start(payload: &[u8]) -> Option<usize> {
    let version_nul = payload.get(1..)?.iter().position(|&b| b == 0)?;
    Some(1 + version_nul + 1)
}

/// Validates the server's initial handshake and masks the capabilities the proxy does not implement, in place;
/// CLIENT_SSL is offered to the client when `offer_tls` (the proxy has a certificate), whatever the server
/// offers the proxy.
pub fn patch_greeting(payload: &mut [u8], offer_tls: bool) -> Result<Greeting, ProtocolError> {
    let parsed = parse_greeting(payload)?;
    let server = parsed.capabilities().bits();
    let mut capabilities = mask(server);
    if offer_tls {
        capabilities |= CapabilityFlags::CLIENT_SSL.bits();
    }
    let greeting = Greeting {
        capabilities,
        offers_tls: server & CapabilityFlags::CLIENT_SSL.bits() != 0,
        scramble: parsed.nonce(),
        mariadb_capabilities: mariadb_capabilities(capabilities, parsed.mariadb_ext_capabilities().bits()),
        connection_id: parsed.connection_id(),
        server_version: parsed.server_version_str().into_owned(),
    };
    // parse_greeting checked that the fixed part is there.
    let fixed = greeting_fixed_start(payload).ok_or(ProtocolError::Malformed("initial handshake"))?;
    let low = fixed + GREETING_CAPS_LOW;
    let high = fixed + GREETING_CAPS_HIGH;
    payload[low..low + 2].copy_from_slice(&(greeting.capabilities as u16).to_le_bytes());
    payload[high..high + 2].copy_from_slice(&((greeting.capabilities >> 16) as u16).to_le_bytes());
    // MariaDB announces its own extensions in otherwise reserved bytes (zero from other servers).
    let mariadb = fixed + GREETING_MARIADB_CAPS;
    patch_mariadb_capabilities(&mut payload[mariadb..mariadb + 4]);
    Ok(greeting)
}

/// What the proxy keeps from the client's handshake response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientHello {
    /// Client capabilities after masking.
    pub capabilities: u32,
    /// MariaDB's extended capabilities after masking (0 when the client announced none).
    pub mariadb_capabilities: u32,
    /// The user the client logs in as, as the client sent it: in its character set, which need not be UTF-8
    /// (two names that differ only in bytes UTF-8 cannot read are two accounts).
    pub user: Vec<u8>,
    /// The default database the client asked for.
    pub database: Option<String>,
    /// The authentication method the client answered with (empty without CLIENT_PLUGIN_AUTH).
    pub plugin: Vec<u8>,
}

/// Length of the fixed part of a protocol-4.1 handshake response (and of a whole TLS request).
const RESPONSE_FIXED_LEN: usize = 32;
const RESPONSE_MARIADB_CAPS: usize = 28;

/// Whether the client's first packet is an SSLRequest: the fixed part of a handshake response alone, with
/// CLIENT_SSL, after which the client starts a TLS handshake.
pub fn is_tls_request(payload: &[u8]) -> bool {
    let caps = payload.first_chunk::<4>().map_or(0, |b| u32::from_le_bytes(*b));
    payload.len() == RESPONSE_FIXED_LEN && caps & CapabilityFlags::CLIENT_SSL.bits() != 0
}

/// The SSLRequest the proxy sends a server before its TLS handshake: the fixed part of the handshake response it
/// relays next (patched with CLIENT_SSL by [`patch_client_response`]), as a client sends it.
pub fn tls_request(response: &[u8]) -> Result<&[u8], ProtocolError> {
    response.get(..RESPONSE_FIXED_LEN).ok_or(ProtocolError::Malformed("handshake response"))
}

/// Validates the client's handshake response and masks the capabilities the proxy does not implement, in place;
/// CLIENT_SSL is set when the proxy's connection to the server runs inside TLS (`tls`), whatever the client's
/// connection to the proxy does.
pub fn patch_client_response(payload: &mut [u8], tls: bool) -> Result<ClientHello, ProtocolError> {
    let Some(caps) = payload.first_chunk::<4>().map(|b| u32::from_le_bytes(*b)) else {
        return Err(ProtocolError::Malformed("handshake response"));
    };
    if caps & CapabilityFlags::CLIENT_PROTOCOL_41.bits() == 0 {
        return Err(ProtocolError::Unsupported("the client does not speak protocol 4.1"));
    }
    if is_tls_request(payload) {
        return Err(ProtocolError::Unsupported("a second TLS request"));
    }
    let parsed: HandshakeResponse<'_> =
        ParseBuf(payload).parse(()).map_err(|_| ProtocolError::Malformed("handshake response"))?;
    if payload.len() < RESPONSE_FIXED_LEN {
        return Err(ProtocolError::Malformed("handshake response"));
    }
    let mut relayed = mask(caps);
    if tls {
        relayed |= CapabilityFlags::CLIENT_SSL.bits();
    }
    let hello = ClientHello {
        capabilities: mask(caps),
        mariadb_capabilities: mariadb_capabilities(caps, parsed.mariadb_ext_capabilities().bits()),
        user: parsed.user().to_vec(),
        database: parsed.db_name().map(|db| String::from_utf8_lossy(db).into_owned()),
        plugin: parsed.auth_plugin().map(|plugin| plugin.as_bytes().to_vec()).unwrap_or_default(),
    };
    payload[..4].copy_from_slice(&relayed.to_le_bytes());
    patch_mariadb_capabilities(&mut payload[RESPONSE_MARIADB_CAPS..RESPONSE_FIXED_LEN]);
    Ok(hello)
}

/// The MariaDB extended capabilities a side announced with `capabilities`, masked: `extended` counts only when
/// the capability word says it is there.
fn mariadb_capabilities(capabilities: u32, extended: u32) -> u32 {
    if announces_mariadb(capabilities) { mask_mariadb(extended) } else { 0 }
}

/// Masks MariaDB's extended capability word in place (four little-endian bytes).
fn patch_mariadb_capabilities(word: &mut [u8]) {
    let bits = word.first_chunk::<4>().map_or(0, |b| u32::from_le_bytes(*b));
    word.copy_from_slice(&mask_mariadb(bits).to_le_bytes());
}

/// A column definition's payload in the standard layout: MariaDB's extended type metadata, present when
/// `extended_metadata` was negotiated, is cut out (it follows the original column name), so that the definition
/// parses as any other. `None` when the payload is too short to hold the fields before it.
pub fn standard_column_definition(payload: &[u8], extended_metadata: bool) -> Option<Cow<'_, [u8]>> {
    if !extended_metadata {
        return Some(Cow::Borrowed(payload));
    }
    // catalog, schema, table, original table, name, original name: six length-encoded strings.
    let mut at = 0;
    for _ in 0..6 {
        at = skip_lenenc_string(payload, at)?;
    }
    let end = skip_lenenc_string(payload, at)?;
    Some(Cow::Owned([&payload[..at], &payload[end..]].concat()))
}

/// The name a column definition gives its column (the `AS` alias, or the column's own name): the fifth of its
/// length-encoded strings, after catalog, schema, table and original table.
pub fn column_name(payload: &[u8]) -> Option<&[u8]> {
    let mut at = 0;
    for _ in 0..4 {
        at = skip_lenenc_string(payload, at)?;
    }
    let (len, taken) = lenenc_int(payload.get(at..)?)?;
    payload.get(at + taken..skip_lenenc_string(payload, at)?).filter(|name| name.len() as u64 == len)
}

/// The offset just past the length-encoded string at `at`.
fn skip_lenenc_string(payload: &[u8], at: usize) -> Option<usize> {
    let (len, taken) = lenenc_int(payload.get(at..)?)?;
    let end = at.checked_add(taken)?.checked_add(usize::try_from(len).ok()?)?;
    (end <= payload.len()).then_some(end)
}

/// Reads a length-encoded integer at the start of `buf`, returning it and the bytes it took.
pub fn lenenc_int(buf: &[u8]) -> Option<(u64, usize)> {
    let mut parse = ParseBuf(buf);
    let value = parse.checked_eat_lenenc_int()?;
    Some((value, buf.len() - parse.0.len()))
}

/// The packet that begins a result set: how many columns it has, and whether their definitions follow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResultHead {
    /// The number of columns.
    pub columns: u64,
    /// The column definitions follow; `false` when the server left them out because the client has them
    /// (MariaDB's metadata caching, for a prepared statement executed again).
    pub metadata_follows: bool,
}

impl ResultHead {
    /// Reads the first packet of a result set; `cache_metadata` says whether the session negotiated MariaDB's
    /// metadata caching, which adds the "metadata follows" byte. `None` if it is malformed or counts no column.
    pub fn parse(payload: &[u8], cache_metadata: bool) -> Option<ResultHead> {
        let (columns, taken) = lenenc_int(payload).filter(|&(columns, _)| columns > 0)?;
        let metadata_follows = if cache_metadata { *payload.get(taken)? != 0 } else { true };
        Some(ResultHead { columns, metadata_follows })
    }

    /// The payload of a result set's first packet announcing `columns` columns whose definitions follow.
    pub fn with_metadata(columns: u64, cache_metadata: bool) -> Vec<u8> {
        let mut payload = Vec::with_capacity(10);
        payload.put_lenenc_int(columns);
        if cache_metadata {
            payload.push(1);
        }
        payload
    }
}

/// Whether a packet is a MariaDB progress report (`0xFF 0xFF 0xFF ...`, sent to clients that negotiated
/// MARIADB_CLIENT_PROGRESS during long statements): ERR-shaped, but the response goes on after it.
pub fn is_progress_report(payload: &[u8]) -> bool {
    payload.starts_with(&[0xFF, 0xFF, 0xFF])
}

/// The first packet of a successful answer to COM_STMT_PREPARE.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PrepareOk {
    /// The new statement's id.
    pub statement_id: u32,
    /// How many column definitions follow the parameter definitions.
    pub columns: u16,
    /// How many parameter definitions follow this packet.
    pub params: u16,
}

impl PrepareOk {
    /// Reads the packet (`0x00`, id, columns, parameters, ...); `None` if it is something else.
    pub fn parse(payload: &[u8]) -> Option<PrepareOk> {
        let fields = payload.get(..9).filter(|p| p[0] == 0x00)?;
        Some(PrepareOk {
            statement_id: u32::from_le_bytes([fields[1], fields[2], fields[3], fields[4]]),
            columns: u16::from_le_bytes([fields[5], fields[6]]),
            params: u16::from_le_bytes([fields[7], fields[8]]),
        })
    }

    /// Gives the statement in a prepare answer's first packet another id, in place, so that the client knows it
    /// by that one; `false` (and nothing changed) if the packet is not a prepare OK.
    pub fn set_statement_id(payload: &mut [u8], id: u32) -> bool {
        match payload.get_mut(..9) {
            Some(fields) if fields[0] == 0x00 => {
                fields[1..5].copy_from_slice(&id.to_le_bytes());
                true
            }
            _ => false,
        }
    }
}

/// The head of an OK packet's payload: its header, affected rows, last insert id, status flags and warning count,
/// without the info and session-state parts that follow. Two OKs with the same head leave the session in the same
/// state and say the same of the statement; MariaDB may list the tracked variables of the rest in another order.
pub fn ok_head(payload: &[u8]) -> Option<&[u8]> {
    payload.get(..ok_status_offset(payload)? + 4)
}

/// The status flags of an OK packet (`0x00`, or `0xFE` ending a result set under CLIENT_DEPRECATE_EOF).
pub fn ok_status(payload: &[u8]) -> Option<u16> {
    let at = ok_status_offset(payload)?;
    let status = payload.get(at..at + 2)?;
    Some(u16::from_le_bytes([status[0], status[1]]))
}

/// Where an OK packet's status flags begin: after its header byte, affected rows and last insert id.
fn ok_status_offset(payload: &[u8]) -> Option<usize> {
    let rest = payload.get(1..)?;
    let (_, affected) = lenenc_int(rest)?;
    let (_, insert_id) = lenenc_int(rest.get(affected..)?)?;
    Some(1 + affected + insert_id)
}

/// The status flags of a classic EOF packet (`0xFE`, warnings, status).
pub fn eof_status(payload: &[u8]) -> Option<u16> {
    let status = payload.get(3..5)?;
    Some(u16::from_le_bytes([status[0], status[1]]))
}

/// The fields of an OK packet the proxy combines when it answers one statement with several.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OkFields {
    /// Affected (or, with CLIENT_FOUND_ROWS, matched) rows.
    pub affected_rows: u64,
    /// Last insert id.
    pub last_insert_id: u64,
    /// Server status flags.
    pub status: u16,
    /// Warning count.
    pub warnings: u16,
}

impl OkFields {
    /// Reads an OK packet's payload (header `0x00`).
    pub fn parse(payload: &[u8], capabilities: CapabilityFlags) -> Option<OkFields> {
        let ok: OkPacketDeserializer<'_, CommonOkPacket> = ParseBuf(payload).parse(capabilities).ok()?;
        let ok = ok.into_inner();
        Some(OkFields {
            affected_rows: ok.affected_rows(),
            last_insert_id: ok.last_insert_id().unwrap_or(0),
            status: ok.status_flags().bits(),
            warnings: ok.warnings(),
        })
    }

    /// Reads the OK packet (header `0xFE`) that ends a result set under CLIENT_DEPRECATE_EOF.
    pub fn parse_end_of_rows(payload: &[u8], capabilities: CapabilityFlags) -> Option<OkFields> {
        let mut as_ok = payload.to_vec();
        *as_ok.first_mut()? = 0x00;
        OkFields::parse(&as_ok, capabilities)
    }

    /// Appends these fields as the OK packet (header `0xFE`) that ends a result set under CLIENT_DEPRECATE_EOF.
    pub fn write_end_of_rows(&self, out: &mut BytesMut, seq: u8, session_track: bool) {
        let start = out.len();
        self.write_packet(out, seq, session_track);
        out[start + frame::HEADER_LEN] = 0xFE;
    }

    /// Appends these fields as an OK packet with sequence id `seq`: no info text and no session-state changes
    /// (so that status flag is cleared), in the layout CLIENT_SESSION_TRACK asks for when `session_track`.
    pub fn write_packet(&self, out: &mut BytesMut, seq: u8, session_track: bool) {
        let status = self.status & !StatusFlags::SERVER_SESSION_STATE_CHANGED.bits();
        let mut payload = vec![0x00];
        payload.put_lenenc_int(self.affected_rows);
        payload.put_lenenc_int(self.last_insert_id);
        payload.extend_from_slice(&status.to_le_bytes());
        payload.extend_from_slice(&self.warnings.to_le_bytes());
        if session_track {
            payload.put_lenenc_int(0);
        }
        frame::write_packet(out, seq, &payload);
    }
}

/// What a packet after a result's column definitions is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RowPacket {
    /// A row.
    Row,
    /// The end of the rows (EOF, or OK under CLIENT_DEPRECATE_EOF), with its warning count and status flags.
    End {
        /// Warnings of the statement.
        warnings: u16,
        /// Status flags.
        status: u16,
    },
    /// An ERR: the statement failed while sending rows.
    Err,
}

impl RowPacket {
    /// Classifies a whole packet read after a result's column definitions.
    pub fn classify(payload: &[u8], caps: Negotiated) -> RowPacket {
        match payload.first() {
            Some(&ERR_HEADER) => RowPacket::Err,
            first if ends_rows(first.copied(), payload.len()) => {
                let (warnings, status) = if caps.deprecate_eof() {
                    let ok = OkFields::parse_end_of_rows(payload, caps.flags());
                    (ok.as_ref().map_or(0, |ok| ok.warnings), ok_status(payload).unwrap_or(0))
                } else {
                    let warnings = payload.get(1..3).map_or(0, |w| u16::from_le_bytes([w[0], w[1]]));
                    (warnings, eof_status(payload).unwrap_or(0))
                };
                RowPacket::End { warnings, status }
            }
            _ => RowPacket::Row,
        }
    }
}

/// Whether a packet of `len` bytes beginning with `first` ends a result's rows: a `0xFE` packet shorter than a
/// frame, since a row beginning with `0xFE` (a length-encoded string of 2^24 bytes or more) is longer.
pub fn ends_rows(first: Option<u8>, len: usize) -> bool {
    first == Some(EOF_HEADER) && len < frame::MAX_PAYLOAD
}

/// EOF packets (and the OK ending rows under CLIENT_DEPRECATE_EOF) begin with this byte.
pub const EOF_HEADER: u8 = 0xFE;

/// Appends the packet that ends the column definitions of a result whose rows follow: an EOF, unless
/// CLIENT_DEPRECATE_EOF leaves it out. Returns the sequence id after it.
pub fn write_end_of_definitions(out: &mut BytesMut, seq: u8, caps: Negotiated, status: u16) -> u8 {
    if caps.deprecate_eof() { seq } else { frame::write_packet(out, seq, &eof(0, status)) }
}

/// Appends the packet that ends a result's rows: an EOF, or the OK that replaces it under CLIENT_DEPRECATE_EOF.
/// Returns the sequence id after it.
pub fn write_end_of_rows(out: &mut BytesMut, seq: u8, caps: Negotiated, warnings: u16, status: u16) -> u8 {
    if caps.deprecate_eof() {
        let end = OkFields { affected_rows: 0, last_insert_id: 0, status, warnings };
        end.write_end_of_rows(out, seq, caps.flags().contains(CapabilityFlags::CLIENT_SESSION_TRACK));
        seq.wrapping_add(1)
    } else {
        frame::write_packet(out, seq, &eof(warnings, status))
    }
}

/// caching_sha2_password's "fast auth succeeded" (AuthMoreData `0x01` with status 3): the server's OK follows
/// without a client packet.
pub const FAST_AUTH_OK: [u8; 2] = [0x01, 0x03];

/// caching_sha2_password's "perform full authentication" (AuthMoreData with status 4): the server wants the
/// password itself, in cleartext over TLS or encrypted with its RSA key.
pub const FULL_AUTH: [u8; 2] = [0x01, 0x04];

/// The authentication method whose full authentication the proxy may have to carry ([`FULL_AUTH`]).
pub const CACHING_SHA2_PASSWORD: &[u8] = b"caching_sha2_password";

/// A client's request for the server's RSA public key during caching_sha2_password's full authentication.
pub const REQUEST_PUBLIC_KEY: [u8; 1] = [0x02];

/// Writes an AuthMoreData packet carrying `data` (the answer to [`REQUEST_PUBLIC_KEY`] carries the PEM key);
/// returns the sequence id after it.
pub fn write_auth_more_data(out: &mut BytesMut, seq: u8, data: &[u8]) -> u8 {
    let payload: Vec<u8> = [&[0x01][..], data].concat();
    frame::write_packet(out, seq, &payload)
}

/// A server's authentication switch request: the method the client must answer with, and its new scramble.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthSwitch {
    /// The authentication plugin's name.
    pub plugin: Vec<u8>,
    /// The plugin's data (a scramble), without the NUL some servers end it with.
    pub scramble: Vec<u8>,
}

impl AuthSwitch {
    /// Reads an authentication switch request (header `0xFE`).
    pub fn parse(payload: &[u8]) -> Result<AuthSwitch, ProtocolError> {
        let malformed = || ProtocolError::Malformed("authentication switch request");
        let rest = payload.strip_prefix(&[0xFE]).ok_or_else(malformed)?;
        let nul = rest.iter().position(|&b| b == 0).ok_or_else(malformed)?;
        let data = &rest[nul + 1..];
        let scramble = data.strip_suffix(&[0]).unwrap_or(data);
        Ok(AuthSwitch { plugin: rest[..nul].to_vec(), scramble: scramble.to_vec() })
    }

    /// Whether the client answers with its password in cleartext (`mysql_clear_password`, and MariaDB's PAM
    /// `dialog` method, which asks for it the same way).
    pub fn sends_cleartext(&self) -> bool {
        matches!(self.plugin.as_slice(), b"mysql_clear_password" | b"dialog")
    }
}

/// The authentication method a COM_CHANGE_USER answers with, which is in force until the server switches it: the
/// name after the user, the scramble, the database and the character set, under CLIENT_PLUGIN_AUTH. Empty when
/// the command names none (or cannot be read: the server then refuses it).
pub fn change_user_plugin(payload: &[u8], capabilities: CapabilityFlags) -> Vec<u8> {
    let name = || {
        let (_user, rest) = until_nul(payload.strip_prefix(&[super::command::COM_CHANGE_USER])?)?;
        let rest = if capabilities.contains(CapabilityFlags::CLIENT_SECURE_CONNECTION) {
            let (&len, rest) = rest.split_first()?;
            rest.get(usize::from(len)..)?
        } else {
            until_nul(rest)?.1
        };
        let (_database, rest) = until_nul(rest)?;
        let rest = rest.get(2..)?;
        capabilities.contains(CapabilityFlags::CLIENT_PLUGIN_AUTH).then_some(until_nul(rest)?.0)
    };
    name().map(<[u8]>::to_vec).unwrap_or_default()
}

/// The bytes before the first NUL, and those after it.
fn until_nul(bytes: &[u8]) -> Option<(&[u8], &[u8])> {
    let nul = bytes.iter().position(|&b| b == 0)?;
    Some((&bytes[..nul], &bytes[nul + 1..]))
}

/// What a server's packet during a login says, for the proxy's own logins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthAnswer {
    /// OK: logged in.
    Ok,
    /// An authentication switch request: answer for the plugin it names.
    Switch,
    /// caching_sha2_password's fast authentication succeeded; the OK follows.
    FastAuthOk,
    /// More authentication data asked for (caching_sha2_password's full authentication, which needs TLS or the
    /// server's RSA key).
    MoreData,
    /// ERR: refused.
    Err,
    /// Anything else, which no login answer is.
    Other,
}

impl AuthAnswer {
    /// Classifies a packet the server sent during a login.
    pub fn classify(payload: &[u8]) -> AuthAnswer {
        match payload.first() {
            Some(0x00) => AuthAnswer::Ok,
            Some(&EOF_HEADER) => AuthAnswer::Switch,
            Some(0x01) if payload == FAST_AUTH_OK => AuthAnswer::FastAuthOk,
            Some(0x01) => AuthAnswer::MoreData,
            Some(&ERR_HEADER) => AuthAnswer::Err,
            _ => AuthAnswer::Other,
        }
    }
}

/// Whether a packet is an OK (header `0x00`).
pub fn is_ok_packet(payload: &[u8]) -> bool {
    payload.first() == Some(&0x00)
}

/// A classic EOF packet's payload.
pub fn eof(warnings: u16, status: u16) -> [u8; 5] {
    let [w0, w1] = warnings.to_le_bytes();
    let [s0, s1] = status.to_le_bytes();
    [EOF_HEADER, w0, w1, s0, s1]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::capabilities::RELAYED_MARIADB;

    #[test]
    fn a_column_definition_names_its_column() {
        let mut definition = Vec::new();
        for part in [&b"def"[..], b"edxapp", b"h", b"courseware_studentmodulehistory", b"id", b"id"] {
            definition.push(part.len() as u8);
            definition.extend_from_slice(part);
        }
        definition.extend_from_slice(&[0x0c, 0x3f, 0, 11, 0, 0, 0, 3, 0, 0, 0, 0, 0]);
        assert_eq!(column_name(&definition), Some(&b"id"[..]));
        assert_eq!(column_name(&definition[..20]), None, "cut short");
    }

    /// A MariaDB 10.11 greeting as the server sends it (scramble replaced by fixed bytes).
    fn mariadb_greeting() -> Vec<u8> {
        let mut p = vec![10];
        p.extend_from_slice(b"5.5.5-10.11.6-MariaDB\0");
        p.extend_from_slice(&7u32.to_le_bytes());
        p.extend_from_slice(b"abcdefgh\0");
        p.extend_from_slice(&0xF7FEu16.to_le_bytes()); // no CLIENT_LONG_PASSWORD: MariaDB extensions follow
        p.push(45);
        p.extend_from_slice(&2u16.to_le_bytes());
        p.extend_from_slice(&0x81BFu16.to_le_bytes());
        p.push(21);
        p.extend_from_slice(&[0; 6]);
        p.extend_from_slice(&0x1Du32.to_le_bytes());
        p.extend_from_slice(b"ijklmnopqrst\0");
        p.extend_from_slice(b"mysql_native_password\0");
        p
    }

    #[test]
    fn greeting_loses_unsupported_capabilities_and_nothing_else() {
        let original = mariadb_greeting();
        let mut patched = original.clone();
        let greeting = patch_greeting(&mut patched, false).unwrap();
        assert_eq!(greeting.connection_id, 7);
        assert_eq!(greeting.server_version, "5.5.5-10.11.6-MariaDB");
        assert!(greeting.is_mariadb());
        let version = |v: &str| Greeting { server_version: v.into(), ..greeting.clone() }.is_mariadb();
        assert!(version("11.4.2-MariaDB-log") && version("10.6.19-MariaDB-log"), "MariaDB, and RDS's");
        assert!(!version("8.4.3") && !version("8.0.mysql_aurora.3.05.2"), "MySQL, and Aurora's");
        let caps = CapabilityFlags::from_bits_truncate(greeting.capabilities);
        assert!(!caps.contains(CapabilityFlags::CLIENT_COMPRESS));
        assert!(!caps.contains(CapabilityFlags::CLIENT_SSL));
        assert!(caps.contains(CapabilityFlags::CLIENT_DEPRECATE_EOF));
        let reparsed: HandshakePacket<'_> = ParseBuf(&patched).parse(()).unwrap();
        assert_eq!(reparsed.capabilities().bits(), greeting.capabilities);
        assert_eq!(reparsed.mariadb_ext_capabilities().bits(), 0x1D & RELAYED_MARIADB.bits());
        assert_eq!(greeting.mariadb_capabilities, 0x1D & RELAYED_MARIADB.bits());
        let changed: Vec<usize> = (0..original.len()).filter(|&i| original[i] != patched[i]).collect();
        assert!(changed.iter().all(|&i| (36..38).contains(&i) || (41..43).contains(&i) || (50..54).contains(&i)));
    }

    #[test]
    fn truncated_greeting_is_malformed() {
        let mut short = mariadb_greeting()[..20].to_vec();
        assert_eq!(patch_greeting(&mut short, false), Err(ProtocolError::Malformed("initial handshake")));
    }

    #[test]
    fn a_scramble_length_from_0x80_on_is_malformed_not_an_overflow() {
        // The byte after the upper capabilities: mysql_common reads it as a signed byte and subtracts 8.
        let at = 1 + b"5.5.5-10.11.6-MariaDB\0".len() + GREETING_AUTH_DATA_LEN;
        for len in [0x80, 0x87, 0xff] {
            let mut greeting = mariadb_greeting();
            greeting[at] = len;
            assert_eq!(patch_greeting(&mut greeting, false), Err(ProtocolError::Malformed("initial handshake")));
        }
    }

    #[test]
    fn client_response_is_masked_in_place() {
        let caps = CapabilityFlags::CLIENT_PROTOCOL_41
            | CapabilityFlags::CLIENT_SECURE_CONNECTION
            | CapabilityFlags::CLIENT_COMPRESS
            | CapabilityFlags::CLIENT_CONNECT_WITH_DB;
        let mut p = caps.bits().to_le_bytes().to_vec();
        p.extend_from_slice(&(16u32 << 20).to_le_bytes());
        p.push(45);
        p.extend_from_slice(&[0; 19]);
        p.extend_from_slice(&0x1Cu32.to_le_bytes());
        p.extend_from_slice(b"edxapp001\0");
        p.push(20);
        p.extend_from_slice(&[9; 20]);
        p.extend_from_slice(b"edxapp\0");
        let hello = patch_client_response(&mut p, false).unwrap();
        assert_eq!(hello.user, b"edxapp001");
        assert_eq!(hello.database.as_deref(), Some("edxapp"));
        assert_eq!(u32::from_le_bytes(p[..4].try_into().unwrap()), (caps - CapabilityFlags::CLIENT_COMPRESS).bits());
        assert_eq!(&p[28..32], &(0x1C & RELAYED_MARIADB.bits()).to_le_bytes());
        assert_eq!(hello.mariadb_capabilities, 0x1C & RELAYED_MARIADB.bits());
    }

    #[test]
    fn result_heads_say_whether_definitions_follow() {
        assert_eq!(ResultHead::parse(&[2], false), Some(ResultHead { columns: 2, metadata_follows: true }));
        assert_eq!(ResultHead::parse(&[2, 1], true), Some(ResultHead { columns: 2, metadata_follows: true }));
        assert_eq!(ResultHead::parse(&[2, 0], true), Some(ResultHead { columns: 2, metadata_follows: false }));
        assert_eq!(ResultHead::parse(&[2], true), None);
        assert_eq!(ResultHead::parse(&[0], false), None);
        for cache in [false, true] {
            let head = ResultHead::with_metadata(300, cache);
            assert_eq!(ResultHead::parse(&head, cache), Some(ResultHead { columns: 300, metadata_follows: true }));
        }
    }

    #[test]
    fn extended_metadata_is_cut_out_of_column_definitions() {
        let plain = b"\x03def\x02db\x01t\x01t\x02js\x02js\x0c\x3f\x00\xff\xff\xff\xff\xfc\x90\x00\x00\x00\x00".to_vec();
        let mut extended = plain[..17].to_vec();
        extended.extend_from_slice(b"\x06\x01\x04json");
        extended.extend_from_slice(&plain[17..]);
        assert_eq!(standard_column_definition(&extended, true).as_deref(), Some(&plain[..]));
        assert_eq!(standard_column_definition(&plain, false).as_deref(), Some(&plain[..]));
        assert_eq!(standard_column_definition(&extended[..10], true), None);
    }

    #[test]
    fn a_tls_request_is_told_from_a_handshake_response() {
        let caps = CapabilityFlags::CLIENT_PROTOCOL_41 | CapabilityFlags::CLIENT_SSL;
        let mut p = caps.bits().to_le_bytes().to_vec();
        p.resize(32, 0);
        assert!(is_tls_request(&p));
        assert!(matches!(patch_client_response(&mut p, true), Err(ProtocolError::Unsupported(_))));
        p.extend_from_slice(b"edxapp001\0\0");
        assert!(!is_tls_request(&p));
    }

    #[test]
    fn an_auth_switch_names_its_method_and_scramble() {
        let switch = AuthSwitch::parse(b"\xfecaching_sha2_password\0abcdefghijklmnopqrst\0").unwrap();
        assert_eq!(switch.plugin, b"caching_sha2_password");
        assert_eq!(switch.scramble, b"abcdefghijklmnopqrst");
        assert!(!switch.sends_cleartext());
        assert!(AuthSwitch::parse(b"\xfemysql_clear_password\0").unwrap().sends_cleartext());
        assert!(AuthSwitch::parse(b"\xfe").is_err());
        assert!(AuthSwitch::parse(b"\x00").is_err());
    }

    #[test]
    fn tls_is_offered_and_asked_for_only_where_the_proxy_speaks_it() {
        let mut greeting = mariadb_greeting();
        let offered = patch_greeting(&mut greeting, true).unwrap();
        assert!(CapabilityFlags::from_bits_truncate(offered.capabilities).contains(CapabilityFlags::CLIENT_SSL));
        assert!(!offered.offers_tls, "the server of the sample greeting offers no TLS");
        assert_eq!(offered.scramble, b"abcdefghijklmnopqrst");
        let caps = CapabilityFlags::CLIENT_PROTOCOL_41 | CapabilityFlags::CLIENT_SECURE_CONNECTION;
        let mut response = caps.bits().to_le_bytes().to_vec();
        response.resize(32, 0);
        response.extend_from_slice(b"edxapp001\0\0");
        patch_client_response(&mut response, true).unwrap();
        let request = tls_request(&response).unwrap();
        assert!(is_tls_request(request));
        assert_eq!(&request[4..], &response[4..32]);
    }

    #[test]
    fn status_words_are_read_from_ok_and_eof() {
        assert_eq!(ok_status(&[0x00, 0x01, 0x00, 0x02, 0x00, 0x00, 0x00]), Some(0x0002));
        assert_eq!(ok_status(&[0xFE, 0xFC, 0x10, 0x27, 0x05, 0x08, 0x00]), Some(0x0008));
        assert_eq!(ok_status(&[0x00, 0x01]), None);
        assert_eq!(eof_status(&[0xFE, 0x00, 0x00, 0x22, 0x00]), Some(0x0022));
    }

    #[test]
    fn ok_fields_round_trip() {
        let fields = OkFields { affected_rows: 300, last_insert_id: 0, status: 0x0003, warnings: 2 };
        let mut out = BytesMut::new();
        fields.write_packet(&mut out, 1, false);
        assert_eq!(OkFields::parse(&out[4..], CapabilityFlags::CLIENT_PROTOCOL_41), Some(fields.clone()));
        let mut tracked = BytesMut::new();
        fields.write_packet(&mut tracked, 1, true);
        let caps = CapabilityFlags::CLIENT_PROTOCOL_41 | CapabilityFlags::CLIENT_SESSION_TRACK;
        assert_eq!(OkFields::parse(&tracked[4..], caps), Some(fields));
    }

    #[test]
    fn packets_after_definitions_are_rows_ends_or_errors() {
        let classic = Negotiated::new(0, 0);
        let deprecate = CapabilityFlags::CLIENT_PROTOCOL_41 | CapabilityFlags::CLIENT_DEPRECATE_EOF;
        let deprecate = Negotiated::new(deprecate.bits(), deprecate.bits());
        assert_eq!(RowPacket::classify(b"\x01a", classic), RowPacket::Row);
        assert_eq!(RowPacket::classify(b"\xff\x7a\x04#42S02", classic), RowPacket::Err);
        assert_eq!(RowPacket::classify(b"\xfe\x02\x00\x22\x00", classic), RowPacket::End { warnings: 2, status: 0x22 });
        let end = b"\xfe\x00\x00\x22\x00\x03\x00";
        assert_eq!(RowPacket::classify(end, deprecate), RowPacket::End { warnings: 3, status: 0x22 });
        let mut out = BytesMut::new();
        let seq = write_end_of_rows(&mut out, 4, deprecate, 3, 0x22);
        assert_eq!((seq, RowPacket::classify(&out[4..], deprecate)), (5, RowPacket::End { warnings: 3, status: 0x22 }));
        assert_eq!(write_end_of_definitions(&mut out, 5, deprecate, 0), 5, "no EOF after definitions");
        assert_eq!(write_end_of_definitions(&mut out, 5, classic, 0), 6);
    }

    #[test]
    fn a_prepare_answer_takes_another_statement_id() {
        let mut ok = [0x00, 7, 0, 0, 0, 2, 0, 1, 0, 0, 0, 0];
        assert!(PrepareOk::set_statement_id(&mut ok, 0x8000_0007));
        assert_eq!(PrepareOk::parse(&ok).map(|p| p.statement_id), Some(0x8000_0007));
        assert!(!PrepareOk::set_statement_id(&mut [0xff, 1, 2], 1));
    }

    #[test]
    fn the_method_a_change_user_answers_with_is_read() {
        use mysql_common::packets::{AuthPlugin, ComChangeUser, ComChangeUserMoreData};
        use mysql_common::proto::MySerialize;
        let command = |plugin: Option<AuthPlugin<'static>>| {
            let more = ComChangeUserMoreData::new(45).with_auth_plugin(plugin);
            let command = ComChangeUser::new()
                .with_user(Some(&b"edxapp001"[..]))
                .with_auth_plugin_data(Some(&[7u8; 32][..]))
                .with_database(Some(&b"edxapp"[..]))
                .with_more_data(Some(more));
            let mut payload = Vec::new();
            command.serialize(&mut payload);
            payload
        };
        let caps = CapabilityFlags::CLIENT_PROTOCOL_41
            | CapabilityFlags::CLIENT_SECURE_CONNECTION
            | CapabilityFlags::CLIENT_PLUGIN_AUTH;
        let sha2 = command(Some(AuthPlugin::CachingSha2Password));
        assert_eq!(change_user_plugin(&sha2, caps), CACHING_SHA2_PASSWORD);
        assert_eq!(change_user_plugin(&command(None), caps), b"");
        assert_eq!(change_user_plugin(&sha2, caps - CapabilityFlags::CLIENT_PLUGIN_AUTH), b"");
        assert_eq!(change_user_plugin(&sha2[..12], caps), b"");
    }
}
