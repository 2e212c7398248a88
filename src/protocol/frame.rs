//! MySQL frames: a 4-byte header (3-byte little-endian payload length, 1-byte sequence id) and a payload.
//!
//! A packet longer than [`MAX_PAYLOAD`] is split across frames; a frame of exactly `MAX_PAYLOAD` bytes says that
//! another frame of the same packet follows (possibly an empty one). The proxy relays frames as they are and
//! reassembles a packet only where it must read all of it (handshakes, statement text).

use std::borrow::Cow;

use bytes::{BufMut, Bytes, BytesMut};

/// Length of a frame header.
pub const HEADER_LEN: usize = 4;

/// The largest payload one frame carries; a frame this long continues in the next one.
pub const MAX_PAYLOAD: usize = 0xFF_FFFF;

/// A decoded frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Payload length of this frame.
    pub len: usize,
    /// Sequence id.
    pub seq: u8,
}

impl Header {
    /// Decodes the header at the start of `buf`, if four bytes are there.
    #[inline]
    pub fn parse(buf: &[u8]) -> Option<Header> {
        match buf {
            [a, b, c, seq, ..] => Some(Header { len: u32::from_le_bytes([*a, *b, *c, 0]) as usize, seq: *seq }),
            _ => None,
        }
    }

    /// Whether the packet continues in the next frame.
    #[inline]
    pub fn continues(&self) -> bool {
        self.len == MAX_PAYLOAD
    }
}

/// A packet whose frame headers announce more payload than the reader accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a packet larger than the limit (its frame with sequence id {seq})")]
pub struct Oversized {
    /// The sequence id of the frame whose header went over the limit; an answer takes the next one.
    pub seq: u8,
}

/// Where a whole packet lies at the start of a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PacketSpan {
    /// Bytes of the packet on the wire, headers included.
    pub wire_len: usize,
    /// Bytes of the reassembled payload.
    pub payload_len: usize,
    /// Sequence id of the first frame.
    pub first_seq: u8,
    /// Sequence id of the last frame.
    pub last_seq: u8,
}

impl PacketSpan {
    /// Finds the whole packet at the start of `buf`, or `None` if more bytes are needed.
    pub fn find(buf: &[u8]) -> Option<PacketSpan> {
        PacketSpan::find_within(buf, usize::MAX).unwrap_or(None)
    }

    /// [`PacketSpan::find`] for a packet whose payload may be at most `limit` bytes: as soon as the frame
    /// headers buffered so far announce more, it is [`Oversized`], before its body has been read.
    pub fn find_within(buf: &[u8], limit: usize) -> Result<Option<PacketSpan>, Oversized> {
        let mut pos = 0;
        let mut payload_len: usize = 0;
        let Some(first) = Header::parse(buf) else { return Ok(None) };
        loop {
            let Some(header) = Header::parse(&buf[pos..]) else { return Ok(None) };
            payload_len = payload_len.saturating_add(header.len);
            if payload_len > limit {
                return Err(Oversized { seq: header.seq });
            }
            let end = pos + HEADER_LEN + header.len;
            if buf.len() < end {
                return Ok(None);
            }
            pos = end;
            if !header.continues() {
                return Ok(Some(PacketSpan { wire_len: pos, payload_len, first_seq: first.seq, last_seq: header.seq }));
            }
        }
    }

    /// Whether the packet fits in one frame, so its payload is one contiguous slice of the wire bytes.
    pub fn is_single_frame(&self) -> bool {
        self.wire_len == self.payload_len + HEADER_LEN
    }

    /// The payload bytes of the packet's first frame, in `buf` (where the packet was found): all of a
    /// single-frame packet, and the head of a longer one, which is where a request's command and statement id
    /// are.
    pub fn first_frame<'a>(&self, buf: &'a [u8]) -> &'a [u8] {
        &buf[HEADER_LEN..HEADER_LEN + self.payload_len.min(MAX_PAYLOAD)]
    }

    /// Gives the packet, in `buf` (where it was found), the sequence id `seq`, and its frames after the first the
    /// ids that follow; returns the id after the last. For a relay whose two legs count differently (a TLS
    /// request on one leg only, a packet one leg gets from the proxy instead).
    pub fn renumber(&self, buf: &mut [u8], mut seq: u8) -> u8 {
        let mut pos = 0;
        while pos < self.wire_len {
            let Some(header) = Header::parse(&buf[pos..]) else { break };
            buf[pos + 3] = seq;
            seq = seq.wrapping_add(1);
            pos += HEADER_LEN + header.len;
        }
        seq
    }

    /// [`PacketSpan::first_frame`], to patch in place.
    pub fn first_frame_mut<'a>(&self, buf: &'a mut [u8]) -> &'a mut [u8] {
        &mut buf[HEADER_LEN..HEADER_LEN + self.payload_len.min(MAX_PAYLOAD)]
    }

    /// The packet's whole payload, in `buf` (where the packet was found): borrowed when it is one frame, joined
    /// across frames otherwise, in one copy.
    pub fn payload_in<'a>(&self, buf: &'a [u8]) -> Cow<'a, [u8]> {
        if self.is_single_frame() {
            return Cow::Borrowed(&buf[HEADER_LEN..self.wire_len]);
        }
        let mut joined = Vec::with_capacity(self.payload_len);
        frames(&buf[..self.wire_len]).for_each(|frame| joined.extend_from_slice(frame));
        Cow::Owned(joined)
    }
}

/// The payloads of the frames whose wire bytes are `wire`, in order.
fn frames(mut wire: &[u8]) -> impl Iterator<Item = &[u8]> {
    std::iter::from_fn(move || {
        let header = Header::parse(wire)?;
        let (frame, rest) = wire[HEADER_LEN..].split_at(header.len);
        wire = rest;
        Some(frame)
    })
}

/// Returns the payload of the packet whose wire bytes are `wire`, joined across frames.
///
/// A single-frame packet costs no copy.
pub fn payload(wire: Bytes, span: &PacketSpan) -> Bytes {
    if span.is_single_frame() {
        return wire.slice(HEADER_LEN..);
    }
    let mut out = BytesMut::with_capacity(span.payload_len);
    frames(&wire).for_each(|frame| out.extend_from_slice(frame));
    out.freeze()
}

/// Appends `payload` as one packet starting at sequence id `seq`, split into frames as the protocol requires.
///
/// Returns the sequence id the next packet takes.
pub fn write_packet(out: &mut BytesMut, mut seq: u8, payload: &[u8]) -> u8 {
    let mut chunks = payload.chunks(MAX_PAYLOAD);
    let mut last_len = 0;
    for chunk in chunks.by_ref() {
        write_header(out, chunk.len(), seq);
        out.put_slice(chunk);
        seq = seq.wrapping_add(1);
        last_len = chunk.len();
    }
    if last_len == MAX_PAYLOAD || payload.is_empty() {
        write_header(out, 0, seq);
        seq = seq.wrapping_add(1);
    }
    seq
}

fn write_header(out: &mut BytesMut, len: usize, seq: u8) {
    let len = (len as u32).to_le_bytes();
    out.put_slice(&[len[0], len[1], len[2], seq]);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn framed(payload: &[u8], seq: u8) -> BytesMut {
        let mut out = BytesMut::new();
        write_packet(&mut out, seq, payload);
        out
    }

    #[test]
    fn header_decodes_length_and_sequence() {
        assert_eq!(Header::parse(&[0x01, 0x02, 0x03, 7]), Some(Header { len: 0x030201, seq: 7 }));
        assert_eq!(Header::parse(&[0x01, 0x02, 0x03]), None);
    }

    #[test]
    fn small_packet_is_one_frame() {
        let wire = framed(b"\x03SELECT 1", 0);
        assert_eq!(&wire[..4], &[9, 0, 0, 0]);
        let span = PacketSpan::find(&wire).unwrap();
        assert_eq!(span, PacketSpan { wire_len: 13, payload_len: 9, first_seq: 0, last_seq: 0 });
        assert_eq!(&payload(wire.freeze(), &span)[..], b"\x03SELECT 1");
    }

    #[test]
    fn empty_packet_is_one_empty_frame() {
        let wire = framed(b"", 3);
        assert_eq!(&wire[..], &[0, 0, 0, 3]);
        assert_eq!(PacketSpan::find(&wire).unwrap().payload_len, 0);
    }

    #[test]
    fn packet_of_exactly_max_payload_ends_with_an_empty_frame() {
        let body = vec![b'x'; MAX_PAYLOAD];
        let wire = framed(&body, 0);
        assert_eq!(wire.len(), MAX_PAYLOAD + 2 * HEADER_LEN);
        assert_eq!(&wire[MAX_PAYLOAD + HEADER_LEN..], &[0, 0, 0, 1]);
        let span = PacketSpan::find(&wire).unwrap();
        assert_eq!((span.payload_len, span.first_seq, span.last_seq), (MAX_PAYLOAD, 0, 1));
        assert_eq!(payload(wire.freeze(), &span).len(), MAX_PAYLOAD);
    }

    #[test]
    fn long_packet_reassembles_across_frames() {
        let body: Vec<u8> = (0..MAX_PAYLOAD + 10).map(|i| i as u8).collect();
        let wire = framed(&body, 5);
        let span = PacketSpan::find(&wire).unwrap();
        assert!(!span.is_single_frame());
        assert_eq!(span.first_frame(&wire), &body[..MAX_PAYLOAD]);
        assert_eq!(&span.payload_in(&wire)[..], &body[..]);
        assert_eq!(&payload(wire.freeze(), &span)[..], &body[..]);
    }

    #[test]
    fn an_oversized_packet_is_known_by_its_header_alone() {
        let wire = framed(&[b'x'; 100], 3);
        assert_eq!(PacketSpan::find_within(&wire[..HEADER_LEN], 99), Err(Oversized { seq: 3 }));
        assert_eq!(PacketSpan::find_within(&wire[..HEADER_LEN], 100), Ok(None));
        assert_eq!(PacketSpan::find_within(&wire, 100).map(|span| span.map(|s| s.payload_len)), Ok(Some(100)));
        let long = framed(&vec![0u8; MAX_PAYLOAD + 10], 0);
        let second_header = MAX_PAYLOAD + HEADER_LEN;
        assert_eq!(PacketSpan::find_within(&long[..second_header], MAX_PAYLOAD), Ok(None));
        assert_eq!(
            PacketSpan::find_within(&long[..second_header + HEADER_LEN], MAX_PAYLOAD),
            Err(Oversized { seq: 1 })
        );
    }

    #[test]
    fn incomplete_packet_needs_more_bytes() {
        let wire = framed(b"\x03SELECT 1", 0);
        for cut in 0..wire.len() {
            assert_eq!(PacketSpan::find(&wire[..cut]), None, "cut at {cut}");
        }
        let long = framed(&vec![0u8; MAX_PAYLOAD], 0);
        assert_eq!(PacketSpan::find(&long[..MAX_PAYLOAD + HEADER_LEN]), None);
    }
}
