//! A socket with its read buffer: the unit both sides of a session are made of.

use std::io;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::frame::PacketSpan;

/// Spare room a read asks for; also the buffer size an idle connection shrinks back to.
const READ_CHUNK: usize = 16 * 1024;

/// A buffer larger than this is given back once it is empty, so one large packet does not pin memory.
const SHRINK_ABOVE: usize = 1024 * 1024;

/// A TCP socket and the bytes read from it that have not been relayed yet.
#[derive(Debug)]
pub struct Connection {
    stream: TcpStream,
    /// Bytes read and not yet consumed.
    pub buf: BytesMut,
}

impl Connection {
    /// Wraps a connected socket (Nagle's algorithm off: the proxy writes whole responses).
    pub fn new(stream: TcpStream) -> Connection {
        let _ = stream.set_nodelay(true);
        Connection { stream, buf: BytesMut::with_capacity(READ_CHUNK) }
    }

    /// Reads whatever is available (at least one byte); `Ok(0)` means the peer closed the connection.
    pub async fn fill(&mut self) -> io::Result<usize> {
        if self.buf.capacity() - self.buf.len() < READ_CHUNK / 4 {
            self.buf.reserve(READ_CHUNK);
        }
        self.stream.read_buf(&mut self.buf).await
    }

    /// Waits until a whole packet is buffered and returns where it lies; `None` if the peer closed first.
    ///
    /// Cancel-safe: bytes read before a cancellation stay in the buffer.
    pub async fn next_packet(&mut self) -> io::Result<Option<PacketSpan>> {
        loop {
            if let Some(span) = PacketSpan::find(&self.buf) {
                return Ok(Some(span));
            }
            if self.fill().await? == 0 {
                return if self.buf.is_empty() { Ok(None) } else { Err(io::ErrorKind::UnexpectedEof.into()) };
            }
        }
    }

    /// Drops the first `n` buffered bytes (relayed or answered), giving back a large buffer once it is empty.
    pub fn consume(&mut self, n: usize) {
        self.buf.advance(n);
        if self.buf.is_empty() && self.buf.capacity() > SHRINK_ABOVE {
            self.buf = BytesMut::with_capacity(READ_CHUNK);
        }
    }

    /// Writes all of `bytes` to the socket.
    pub async fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes).await
    }

    /// Writes the first `n` buffered bytes of `from` to this socket and consumes them there.
    pub async fn relay_from(&mut self, from: &mut Connection, n: usize) -> io::Result<()> {
        self.stream.write_all(&from.buf[..n]).await?;
        from.consume(n);
        Ok(())
    }

    /// Flushes and closes the writing half.
    pub async fn shutdown(&mut self) -> io::Result<()> {
        self.stream.shutdown().await
    }
}
