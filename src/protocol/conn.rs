//! A socket with its read buffer: the unit both sides of a session are made of, in plaintext or inside TLS once
//! the handshake asked for it ([`Connection::accept_tls`], [`Connection::connect_tls`]); and [`HangupWatch`],
//! which notices a peer that closed its socket while the connection is busy with something else. A connection
//! also carries the commands sent on it after their answers were given ([`Connection::send_ahead`]).

use std::collections::VecDeque;
use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, OwnedFd};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use rustls::pki_types::ServerName;
use socket2::SockRef;
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};
use tokio_rustls::{TlsAcceptor, TlsConnector, TlsStream};

use super::errors::MysqlError;
use super::frame::{Oversized, PacketSpan};
use super::packets::{is_ok_packet, ok_head};

/// Spare room a read asks for; also the buffer size an idle connection shrinks back to.
const READ_CHUNK: usize = 16 * 1024;

/// A buffer larger than this is given back once it is empty, so one large packet does not pin memory.
const SHRINK_ABOVE: usize = 1024 * 1024;

/// A TCP socket and the bytes read from it that have not been relayed yet.
#[derive(Debug)]
pub struct Connection {
    stream: Stream,
    /// Bytes read and not yet consumed.
    pub buf: BytesMut,
    /// The longest one read or write may wait; `None`: as long as it takes.
    io_timeout: Option<Duration>,
    /// Commands sent after their answers were given.
    ahead: Ahead,
}

/// Commands sent on a connection after their answers were given ([`Connection::send_ahead`]): held until the
/// connection's next write, which they go out in front of, and their answers then read off by
/// [`Connection::fill`] before anything else the peer sends.
#[derive(Debug, Default)]
struct Ahead {
    /// The commands' packets, not written yet.
    queued: BytesMut,
    /// The answer each queued command was given (an OK's payload), in order.
    queued_answers: Vec<Bytes>,
    /// The answer each written command was given, in order, whose peer's answer has not been read yet.
    written_answers: VecDeque<Bytes>,
    /// A peer's answer was an OK other than the one given.
    diverged: bool,
}

impl Connection {
    /// Wraps a connected socket (Nagle's algorithm off: the proxy writes whole responses).
    pub fn new(stream: TcpStream) -> Connection {
        let _ = stream.set_nodelay(true);
        Connection {
            stream: Stream::Plain(stream),
            buf: BytesMut::with_capacity(READ_CHUNK),
            io_timeout: None,
            ahead: Ahead::default(),
        }
    }

    /// Whether the connection runs inside TLS.
    pub fn is_tls(&self) -> bool {
        matches!(self.stream, Stream::Tls(_))
    }

    /// How this connection's TLS handshake went; `None` in plaintext.
    pub fn tls_handshake(&self) -> Option<TlsHandshake> {
        let Stream::Tls(tls) = &self.stream else { return None };
        // A finished handshake always has a kind; none would be a full one.
        Some(match tls.get_ref().1.handshake_kind() {
            Some(rustls::HandshakeKind::Resumed) => TlsHandshake::Resumed,
            _ => TlsHandshake::Full,
        })
    }

    /// Runs the server's side of a TLS handshake on this plaintext connection (the client asked for TLS with an
    /// SSLRequest packet) and carries on inside TLS. Bytes the client sent after its request and that were read
    /// already (the start of its TLS handshake) are handed to TLS first. On an error the connection is unusable.
    pub async fn accept_tls(&mut self, acceptor: &TlsAcceptor) -> io::Result<()> {
        let tcp = self.take_plain()?;
        let early = self.buf.split().freeze();
        let mut fed: io::Result<()> = Ok(());
        let accept = acceptor.accept_with(tcp, |tls| fed = feed_tls(tls, &early));
        let tls = bounded(self.io_timeout, accept).await?;
        fed?;
        self.stream = Stream::Tls(Box::new(TlsStream::Server(tls)));
        Ok(())
    }

    /// Runs the client's side of a TLS handshake with a server that was just sent an SSLRequest packet, and
    /// carries on inside TLS. On an error the connection is unusable.
    pub async fn connect_tls(&mut self, connector: &TlsConnector, server: ServerName<'static>) -> io::Result<()> {
        if !self.buf.is_empty() {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "the server spoke before the TLS handshake"));
        }
        let tcp = self.take_plain()?;
        let tls = bounded(self.io_timeout, connector.connect(server, tcp)).await?;
        self.stream = Stream::Tls(Box::new(TlsStream::Client(tls)));
        Ok(())
    }

    /// The plaintext socket, taken out for a TLS handshake; the connection is [`Stream::Lost`] until it ends.
    fn take_plain(&mut self) -> io::Result<TcpStream> {
        match std::mem::replace(&mut self.stream, Stream::Lost) {
            Stream::Plain(tcp) => Ok(tcp),
            other => {
                self.stream = other;
                Err(io::Error::new(io::ErrorKind::InvalidInput, "the connection is not in plaintext"))
            }
        }
    }

    /// Bounds every later read and write: one that waits longer than `timeout` for the peer fails with
    /// [`io::ErrorKind::TimedOut`]. For connections whose peer may freeze while a client waits on it.
    pub fn set_io_timeout(&mut self, timeout: Duration) {
        self.io_timeout = Some(timeout);
    }

    /// Reads whatever is available (at least one byte); `Ok(0)` means the peer closed the connection. The
    /// answers to commands sent ahead ([`Connection::send_ahead`]) are read off first and never reach the
    /// buffer's reader; one that is not an OK fails the read.
    pub async fn fill(&mut self) -> io::Result<usize> {
        loop {
            if self.buf.capacity() - self.buf.len() < READ_CHUNK / 4 {
                self.buf.reserve(READ_CHUNK);
            }
            let read = bounded(self.io_timeout, self.stream.read_buf(&mut self.buf)).await?;
            if read == 0 || self.ahead.written_answers.is_empty() {
                return Ok(read);
            }
            self.read_off_answers_ahead()?;
            if self.ahead.written_answers.is_empty() && !self.buf.is_empty() {
                return Ok(self.buf.len());
            }
        }
    }

    /// Takes the peer's answers to commands sent ahead off the front of the buffer, as far as they are whole,
    /// checking each against the answer given: another answer is noted ([`Connection::take_diverged`]), and one
    /// that is not an OK is an error too, since the client was told the command succeeded. An OK that differs only
    /// after its head ([`ok_head`]: in the order of its tracked variables) is the same answer.
    fn read_off_answers_ahead(&mut self) -> io::Result<()> {
        while let Some(given) = self.ahead.written_answers.front() {
            let Some(span) = PacketSpan::find(&self.buf) else { return Ok(()) };
            let wire = self.buf.split_to(span.wire_len).freeze();
            let answer = super::frame::payload(wire, &span);
            let same_ok = is_ok_packet(&answer) && ok_head(&answer).is_some_and(|head| ok_head(given) == Some(head));
            if answer != given && !same_ok {
                self.ahead.diverged = true;
                if !is_ok_packet(&answer) {
                    let reason = MysqlError::parse(&answer)
                        .map_or_else(|| "an answer that is not an OK".to_owned(), |error| error.to_string());
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("the server refused a session setting already answered for it: {reason}"),
                    ));
                }
            }
            self.ahead.written_answers.pop_front();
        }
        Ok(())
    }

    /// Sends `packet` (a whole command, its frame header included) in front of the connection's next write,
    /// its answer already given as `answer` (an OK's payload): the peer's own answer is read off by
    /// [`Connection::fill`] before anything else it sends, and checked against `answer` there. The connection
    /// must be between commands, nothing of an earlier answer left to read.
    pub fn send_ahead(&mut self, packet: &[u8], answer: Bytes) {
        self.ahead.queued.extend_from_slice(packet);
        self.ahead.queued_answers.push(answer);
    }

    /// Drops the commands [`Connection::send_ahead`] holds that have not been written yet: for a session that
    /// ends before they could matter.
    pub fn forget_ahead(&mut self) {
        self.ahead.queued.clear();
        self.ahead.queued_answers.clear();
    }

    /// How many commands sent ahead are waiting for the connection's next write.
    pub fn commands_ahead(&self) -> usize {
        self.ahead.queued_answers.len()
    }

    /// Whether the peer answered a command sent ahead otherwise than the answer given (another OK, or an error
    /// that failed the read), since the last call.
    pub fn take_diverged(&mut self) -> bool {
        std::mem::take(&mut self.ahead.diverged)
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

    /// [`Connection::next_packet`] for a packet of at most `limit` payload bytes. A larger one is refused as soon
    /// as a frame header announces it, so no more than about one read of it is ever buffered.
    pub async fn next_packet_within(&mut self, limit: usize) -> Result<Option<PacketSpan>, ReadError> {
        loop {
            if let Some(span) = PacketSpan::find_within(&self.buf, limit)? {
                return Ok(Some(span));
            }
            if self.fill().await? == 0 {
                return if self.buf.is_empty() {
                    Ok(None)
                } else {
                    Err(ReadError::Io(io::ErrorKind::UnexpectedEof.into()))
                };
            }
        }
    }

    /// Whether the peer has neither sent more bytes nor closed since the last read, checked without waiting (one
    /// non-blocking read, into the buffer). For a connection that waited unused: one that fails the check is not
    /// the connection its buffer describes any more. Inside TLS the socket is only looked at (any byte there is
    /// a record the connection did not expect while it waited, such as the peer's alert or `close_notify`), so
    /// that the session's TLS state stays whole.
    pub fn is_quiet(&mut self) -> bool {
        let tcp = match &self.stream {
            Stream::Plain(tcp) => tcp,
            Stream::Tls(tls) => return matches!(peek(tls.get_ref().0), Err(e) if e.kind() == io::ErrorKind::WouldBlock),
            Stream::Lost => return false,
        };
        if self.buf.capacity() == self.buf.len() {
            // A read into no room would say 0, which means a closed peer.
            self.buf.reserve(READ_CHUNK);
        }
        matches!(tcp.try_read_buf(&mut self.buf), Err(error) if error.kind() == io::ErrorKind::WouldBlock)
    }

    /// Closes the connection after a last answer when the peer may still be sending (the rest of a packet the
    /// proxy refused): the writing half is closed at once, and what the peer sends is read and thrown away until
    /// it closes too or `linger` has passed. Closing with unread bytes would reset the connection, and a reset can
    /// destroy the answer before the peer reads it.
    pub async fn close_draining(&mut self, linger: Duration) {
        let _ = self.stream.shutdown().await;
        self.buf.clear();
        let drain = async {
            loop {
                self.buf.clear();
                match self.stream.read_buf(&mut self.buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
            }
        };
        let _ = tokio::time::timeout(linger, drain).await;
        self.buf = BytesMut::new();
    }

    /// Waits for the next whole packet and takes its payload out of the buffer (joined across frames); `None`
    /// if the peer closed first. For the few packets the proxy reads itself rather than relays.
    pub async fn next_payload(&mut self) -> io::Result<Option<Bytes>> {
        let Some(span) = self.next_packet().await? else { return Ok(None) };
        let wire = self.buf.split_to(span.wire_len).freeze();
        Ok(Some(super::frame::payload(wire, &span)))
    }

    /// Drops the first `n` buffered bytes (relayed or answered), giving back a large buffer once it is empty.
    pub fn consume(&mut self, n: usize) {
        self.buf.advance(n);
        if self.buf.is_empty() && self.buf.capacity() > SHRINK_ABOVE {
            self.buf = BytesMut::with_capacity(READ_CHUNK);
        }
    }

    /// Writes all of `bytes` to the socket (through TLS, flushed: nothing stays in TLS's buffer), after the
    /// commands sent ahead, in the same write.
    pub async fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        if self.ahead.queued.is_empty() {
            return bounded(self.io_timeout, write_flushed(&mut self.stream, bytes)).await;
        }
        let mut out = std::mem::take(&mut self.ahead.queued);
        out.extend_from_slice(bytes);
        self.ahead.written_answers.extend(self.ahead.queued_answers.drain(..));
        bounded(self.io_timeout, write_flushed(&mut self.stream, &out)).await
    }

    /// Writes the first `n` buffered bytes of `from` to this socket, as [`Connection::write_all`] does, and
    /// consumes them there.
    pub async fn relay_from(&mut self, from: &mut Connection, n: usize) -> io::Result<()> {
        self.write_all(&from.buf[..n]).await?;
        from.consume(n);
        Ok(())
    }

    /// A watch on this connection's peer hanging up; see [`HangupWatch`].
    pub fn hangup_watch(&self) -> io::Result<HangupWatch> {
        let socket = self.stream.tcp()?.as_fd().try_clone_to_owned()?;
        Ok(HangupWatch { socket: Some(Watched::Unregistered(socket)), timer: None })
    }

    /// Flushes and closes the writing half.
    pub async fn shutdown(&mut self) -> io::Result<()> {
        self.stream.shutdown().await
    }
}

/// Writes all of `bytes` and flushes: a TLS stream may keep encrypted bytes it could not send yet until it is
/// flushed (a plaintext socket's flush does nothing).
async fn write_flushed(stream: &mut Stream, bytes: &[u8]) -> io::Result<()> {
    stream.write_all(bytes).await?;
    if let Stream::Tls(_) = stream {
        stream.flush().await?;
    }
    Ok(())
}

/// Hands bytes already read from the socket to a TLS connection before its handshake reads the socket itself.
fn feed_tls(tls: &mut rustls::ServerConnection, mut early: &[u8]) -> io::Result<()> {
    while !early.is_empty() {
        tls.read_tls(&mut early)?;
        tls.process_new_packets().map_err(|error| io::Error::new(io::ErrorKind::InvalidData, error))?;
    }
    Ok(())
}

/// How a TLS handshake went: in full, or resuming the session of an earlier connection between the same peers
/// (no certificate is sent, so none is signed or checked).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsHandshake {
    /// A new session.
    Full,
    /// An earlier session resumed.
    Resumed,
}

/// The socket under a [`Connection`]: plaintext, or inside TLS (either side's).
#[derive(Debug)]
enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
    /// The socket was handed to a TLS handshake that failed: nothing can be read or written any more.
    Lost,
}

impl Stream {
    /// The TCP socket itself, under TLS or not.
    fn tcp(&self) -> io::Result<&TcpStream> {
        match self {
            Stream::Plain(tcp) => Ok(tcp),
            Stream::Tls(tls) => Ok(tls.get_ref().0),
            Stream::Lost => Err(lost()),
        }
    }
}

/// The error of I/O on a [`Stream::Lost`].
fn lost() -> io::Error {
    io::Error::new(io::ErrorKind::NotConnected, "the connection was lost in a failed TLS handshake")
}

impl AsyncRead for Stream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(tcp) => Pin::new(tcp).poll_read(cx, buf),
            Stream::Tls(tls) => Pin::new(tls.as_mut()).poll_read(cx, buf),
            Stream::Lost => Poll::Ready(Err(lost())),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(tcp) => Pin::new(tcp).poll_write(cx, buf),
            Stream::Tls(tls) => Pin::new(tls.as_mut()).poll_write(cx, buf),
            Stream::Lost => Poll::Ready(Err(lost())),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(tcp) => Pin::new(tcp).poll_flush(cx),
            Stream::Tls(tls) => Pin::new(tls.as_mut()).poll_flush(cx),
            Stream::Lost => Poll::Ready(Err(lost())),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(tcp) => Pin::new(tcp).poll_shutdown(cx),
            Stream::Tls(tls) => Pin::new(tls.as_mut()).poll_shutdown(cx),
            Stream::Lost => Poll::Ready(Ok(())),
        }
    }
}

/// Why [`Connection::next_packet_within`] has no packet to give.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// Reading failed, or the peer closed in the middle of a packet.
    #[error(transparent)]
    Io(#[from] io::Error),
    /// The packet is larger than the reader accepts; its body was not read.
    #[error(transparent)]
    Oversized(#[from] Oversized),
}

/// Runs `io`, failing with [`io::ErrorKind::TimedOut`] once it has waited `timeout`.
async fn bounded<T>(timeout: Option<Duration>, io: impl Future<Output = io::Result<T>>) -> io::Result<T> {
    let Some(timeout) = timeout else { return io.await };
    match tokio::time::timeout(timeout, io).await {
        Ok(result) => result,
        Err(_) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("the server did not respond within {} s", timeout.as_secs_f64()),
        )),
    }
}

/// How long a request runs before [`HangupWatch::hung_up`] starts to look at the socket.
const WATCH_AFTER: Duration = Duration::from_millis(20);

/// How often a peer that sent more bytes (pipelined requests) is checked for having closed behind them.
const RECHECK_PIPELINED: Duration = Duration::from_millis(100);

/// Notices that the peer of a [`Connection`] closed (or reset) its socket while the session is waiting for
/// something else, such as a server's response, without reading the peer's bytes: whatever the peer sent stays
/// in the socket for the connection to read in turn.
///
/// It watches a duplicate of the socket's descriptor, registered with the runtime only the first time a request
/// runs longer than [`WATCH_AFTER`], so it costs one descriptor per connection. A fast request costs little more
/// than reading the clock and polling a timer: the watch's one timer is kept from request to request and moved at
/// most once per [`WATCH_AFTER`] (see [`HangupWatch::wait_until`]).
#[derive(Debug)]
pub struct HangupWatch {
    /// The duplicate descriptor; `None` once registering it failed (nothing is watched then).
    socket: Option<Watched>,
    /// The timer requests wait on before the socket is looked at; set by the first request.
    timer: Option<Pin<Box<Sleep>>>,
}

/// A watched descriptor, registered with the runtime or not yet.
#[derive(Debug)]
enum Watched {
    Unregistered(OwnedFd),
    Registered(AsyncFd<OwnedFd>),
}

impl HangupWatch {
    /// Resolves once the peer has closed or reset its side; never resolves while it is there (or when the
    /// socket cannot be watched). Cancel-safe: drop it when the request is over.
    pub async fn hung_up(&mut self) {
        self.wait_until(Instant::now() + WATCH_AFTER).await;
        let Some(socket) = self.registered() else {
            return std::future::pending().await;
        };
        loop {
            let Ok(mut ready) = socket.readable().await else { return };
            match ready.try_io(|socket| peek(socket.get_ref())) {
                // The end of the stream, or an error such as a reset: the peer is gone.
                Ok(Ok(0) | Err(_)) => return,
                // Bytes wait ahead of any end of stream; the readiness says whether the peer also closed.
                Ok(Ok(_)) if ready.ready().is_read_closed() => return,
                Ok(Ok(_)) => {
                    drop(ready);
                    tokio::time::sleep(RECHECK_PIPELINED).await;
                }
                // Nothing to read: the readiness is cleared, wait for the next event.
                Err(_would_block) => {}
            }
        }
    }

    /// Waits until `due` on the watch's timer. A timer still set for an earlier request (due sooner) is waited
    /// out first and only then moved to `due`; one that has fired is moved at once. Setting a timer that becomes
    /// the runtime's earliest wakes the thread parked on its event loop (a write to an eventfd and a wake-up on
    /// another core): a fresh timer per request paid that on nearly every statement of a lone connection, this
    /// at most once per [`WATCH_AFTER`]. The timer may fire after the request is over; that wakes the session
    /// once, for nothing.
    async fn wait_until(&mut self, due: Instant) {
        let timer = self.timer.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(due)));
        loop {
            if timer.is_elapsed() {
                if timer.deadline() >= due {
                    return;
                }
                timer.as_mut().reset(due);
            }
            timer.as_mut().await;
        }
    }

    /// The socket registered with the runtime, registering it on first use.
    fn registered(&mut self) -> Option<&AsyncFd<OwnedFd>> {
        self.socket = match self.socket.take() {
            Some(Watched::Unregistered(socket)) => {
                // SAFETY: the `AsyncFd` owns the `OwnedFd`, which keeps the descriptor open and unchanged for as
                // long as the registration lives.
                let registered = unsafe { AsyncFd::register_with_interest(socket, tokio::io::Interest::READABLE) };
                registered.ok().map(Watched::Registered)
            }
            other => other,
        };
        match &self.socket {
            Some(Watched::Registered(socket)) => Some(socket),
            _ => None,
        }
    }
}

/// Looks at the next byte of a non-blocking socket without taking it: how many bytes are there (0 at the end of
/// the stream).
fn peek(socket: &impl AsFd) -> io::Result<usize> {
    let mut byte = [MaybeUninit::<u8>::uninit()];
    SockRef::from(socket).peek(&mut byte)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A watch with nothing to look at: only its timer is exercised.
    fn watch_without_socket() -> HangupWatch {
        HangupWatch { socket: None, timer: None }
    }

    /// A connection and the socket of its peer, on loopback.
    async fn connected_pair() -> (Connection, TcpStream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (ours, theirs) = tokio::join!(TcpStream::connect(listener.local_addr().unwrap()), listener.accept());
        (Connection::new(ours.unwrap()), theirs.unwrap().0)
    }

    /// `payload` framed as packet `seq`.
    fn packet(seq: u8, payload: &[u8]) -> Vec<u8> {
        let mut out = BytesMut::new();
        super::super::frame::write_packet(&mut out, seq, payload);
        out.to_vec()
    }

    const OK: &[u8] = b"\x00\x00\x00\x02\x00\x00\x00";

    /// Sends two commands ahead and a third, has the peer answer the first two with `answers` and the third with
    /// a row count, and returns what the connection's reader gets: the buffered bytes after one `fill`.
    async fn after_answers(answers: [&[u8]; 2]) -> (io::Result<usize>, Vec<u8>, Connection) {
        let (mut conn, mut peer) = connected_pair().await;
        conn.send_ahead(&packet(0, b"\x03SET NAMES utf8mb4"), Bytes::from_static(OK));
        conn.send_ahead(&packet(0, b"\x03SET autocommit=0"), Bytes::from_static(OK));
        conn.write_all(&packet(0, b"\x03SELECT 1")).await.unwrap();
        let mut sent = vec![0; 256];
        let n = peer.read(&mut sent).await.unwrap();
        let expected =
            [packet(0, b"\x03SET NAMES utf8mb4"), packet(0, b"\x03SET autocommit=0"), packet(0, b"\x03SELECT 1")];
        assert_eq!(sent[..n], expected.concat(), "the commands sent ahead go out in front, in one write");
        // The answers arrive in pieces: the reader never sees those of the commands sent ahead.
        let mut from_peer = [packet(1, answers[0]), packet(1, answers[1]), packet(1, b"\x01")].concat();
        let tail = from_peer.split_off(5);
        peer.write_all(&from_peer).await.unwrap();
        let writer = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            peer.write_all(&tail).await.unwrap();
            peer
        });
        let read = conn.fill().await;
        let _peer = writer.await.unwrap();
        let buffered = conn.buf.to_vec();
        (read, buffered, conn)
    }

    #[tokio::test]
    async fn answers_to_commands_sent_ahead_are_read_off_before_the_reader_sees_anything() {
        let (read, buffered, mut conn) = after_answers([OK, OK]).await;
        assert!(read.unwrap() > 0);
        assert_eq!(buffered, packet(1, b"\x01"), "only the third command's answer is left to read");
        assert!(!conn.take_diverged());
    }

    #[tokio::test]
    async fn another_ok_is_noted_and_an_error_fails_the_read() {
        let other_ok = b"\x00\x00\x00\x00\x00\x00\x00";
        let (read, buffered, mut conn) = after_answers([OK, other_ok]).await;
        assert!(read.is_ok());
        assert_eq!(buffered, packet(1, b"\x01"));
        assert!(conn.take_diverged(), "the second answer differed");
        assert!(!conn.take_diverged(), "and is noted once");

        // The same head (status, warnings), the tracked variables in another order: the same answer.
        let tracked =
            |first: &[u8], second: &[u8]| [b"\x00\x00\x00\x02\x40\x00\x00\x00".as_slice(), first, second].concat();
        let (a, b) = (b"\x01\x01a".as_slice(), b"\x01\x01b".as_slice());
        let (mut conn, mut peer) = connected_pair().await;
        conn.send_ahead(&packet(0, b"\x03SET NAMES x"), Bytes::from(tracked(a, b)));
        conn.write_all(&packet(0, b"\x03SELECT 1")).await.unwrap();
        let _ = peer.read(&mut [0; 256]).await.unwrap();
        peer.write_all(&[packet(1, &tracked(b, a)), packet(1, b"\x01")].concat()).await.unwrap();
        conn.fill().await.unwrap();
        assert_eq!(conn.buf.to_vec(), packet(1, b"\x01"));
        assert!(!conn.take_diverged(), "only the order of the tracked variables differs");

        let error = b"\xff\x19\x05#42000Unknown character set: 'x'";
        let (read, _, mut conn) = after_answers([error, OK]).await;
        assert!(conn.take_diverged());
        let error = read.expect_err("a setting the server refused fails the read");
        assert_eq!(error.kind(), io::ErrorKind::InvalidData);
        assert!(error.to_string().contains("Unknown character set"), "{error}");
    }

    #[tokio::test]
    async fn commands_forgotten_before_the_next_write_are_never_sent() {
        let (mut conn, mut peer) = connected_pair().await;
        conn.send_ahead(&packet(0, b"\x03SET autocommit=0"), Bytes::from_static(OK));
        conn.forget_ahead();
        conn.write_all(&packet(0, b"\x01")).await.unwrap();
        let mut sent = vec![0; 64];
        let n = peer.read(&mut sent).await.unwrap();
        assert_eq!(sent[..n], packet(0, b"\x01"));
        peer.write_all(&packet(1, OK)).await.unwrap();
        conn.fill().await.unwrap();
        assert_eq!(conn.buf.to_vec(), packet(1, OK), "no answer is expected ahead of the command's own");
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_waits_its_full_delay_behind_the_timer_an_earlier_one_set() {
        let mut watch = watch_without_socket();
        let start = Instant::now();
        // A fast request: its wait is dropped at 5 ms, leaving the timer set for 20 ms.
        let fast = tokio::time::timeout(Duration::from_millis(5), watch.wait_until(start + WATCH_AFTER)).await;
        assert!(fast.is_err(), "the first request's wait ended before its 20 ms");
        // The next request starts at 5 ms: its wait ends at 25 ms, not when the earlier timer fires at 20 ms.
        let due = Instant::now() + WATCH_AFTER;
        let early = tokio::time::timeout(Duration::from_millis(19), watch.wait_until(due)).await;
        assert!(early.is_err(), "the second request's wait ended {:?} into it", Instant::now() - (due - WATCH_AFTER));
        watch.wait_until(due).await;
        assert!(Instant::now() >= due, "the second request's wait ended before its 20 ms");
        // After a wait that ended, the next one is due 20 ms after its own start again.
        let due = Instant::now() + WATCH_AFTER;
        watch.wait_until(due).await;
        assert_eq!(Instant::now(), due);
    }
}
