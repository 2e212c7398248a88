//! A delay line: a TCP relay on 127.0.0.1 that puts a network's round trip between its clients and a server, for
//! the benchmarks' workloads with a server on another host. This machine's kernel has no `netem`, so the
//! delay is made in user space, by one thread that holds every chunk it reads for half the round trip before
//! writing it on, in each direction, and whose timers are made precise (`PR_SET_TIMERSLACK`: its sleeps end at
//! their deadline, not up to 50 µs after).
//!
//! The model of a connection: the server accepts it one and a half round trips after the client's connect (the
//! SYN, the SYN-ACK and the client's ACK cross the network), so its greeting reaches the client two round trips
//! after the connect, as it would over a network; every byte after that takes half a round trip each way, and a
//! side's close (its FIN) reaches the other side as late as its last bytes. The client's own `connect()` returns
//! at once (the kernel accepts on 127.0.0.1), which no MySQL client notices: each waits for the greeting.

// Only some benches put a network before their servers.
#![allow(dead_code)]

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The longest the delay line's thread sleeps before it looks whether it is to stop.
const TICK: Duration = Duration::from_millis(20);
/// The most one read takes from a socket.
const CHUNK: usize = 64 * 1024;

/// A running delay line; stopped, with every connection through it closed, when dropped.
pub struct DelayLine {
    /// Where its clients connect.
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl DelayLine {
    /// Starts a delay line to `server` that adds `rtt` to every round trip.
    pub fn start(server: SocketAddr, rtt: Duration) -> io::Result<DelayLine> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let line = Line { listener, server, one_way: rtt / 2, links: Vec::new() };
        let stopped = Arc::clone(&stop);
        let thread = std::thread::Builder::new().name("delay line".to_owned()).spawn(move || line.run(&stopped))?;
        Ok(DelayLine { addr, stop, thread: Some(thread) })
    }
}

impl Drop for DelayLine {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The delay line's state, owned by its thread.
struct Line {
    listener: TcpListener,
    server: SocketAddr,
    /// Half the round trip: how long each chunk is held.
    one_way: Duration,
    links: Vec<Link>,
}

/// One client's connection through the line.
struct Link {
    client: TcpStream,
    /// The connection to the server, made at `connect_at`.
    server: Option<TcpStream>,
    connect_at: Instant,
    /// What the client sent, on its way to the server.
    up: Pipe,
    /// What the server sent, on its way to the client.
    down: Pipe,
    /// A write or a read failed: the link is closed at the end of the turn.
    broken: bool,
}

/// One direction of a link: what is held, and whether its source has closed.
#[derive(Default)]
struct Pipe {
    /// Chunks with the time each is due; `None` is the source's close, passed on as a shutdown of the writing side.
    held: VecDeque<(Instant, Option<Vec<u8>>)>,
    /// The source has closed: nothing more is read from it.
    ended: bool,
}

/// Which socket of a link a poll entry is.
#[derive(Clone, Copy)]
enum Side {
    Client,
    Server,
}

impl Line {
    fn run(mut self, stop: &AtomicBool) {
        precise_timers();
        while !stop.load(Ordering::Relaxed) {
            if let Err(error) = self.turn() {
                eprintln!("delay line: {error}");
                return;
            }
        }
    }

    /// One turn: accept, connect and deliver what is due, then wait for a socket or the next deadline, and read.
    fn turn(&mut self) -> io::Result<()> {
        let now = Instant::now();
        self.accept(now)?;
        for link in &mut self.links {
            link.connect_when_due(self.server, now);
            link.deliver_due(now);
        }
        self.links.retain(|link| !link.finished());
        let (mut fds, sides) = self.poll_set();
        let wait = self.next_deadline().map_or(TICK, |due| due.saturating_duration_since(now).min(TICK));
        poll(&mut fds, wait)?;
        let read_at = Instant::now();
        for (fd, (index, side)) in fds[1..].iter().zip(sides) {
            if fd.revents != 0 {
                self.links[index].read(side, read_at + self.one_way);
            }
        }
        Ok(())
    }

    /// Takes every client waiting; each is connected to the server one and a half round trips from now.
    fn accept(&mut self, now: Instant) -> io::Result<()> {
        loop {
            match self.listener.accept() {
                Ok((client, _)) => {
                    client.set_nodelay(true)?;
                    let connect_at = now + self.one_way * 3;
                    let (up, down) = (Pipe::default(), Pipe::default());
                    self.links.push(Link { client, server: None, connect_at, up, down, broken: false });
                }
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(error) => return Err(error),
            }
        }
    }

    /// The sockets to wait on: the listener first, then each link's sockets still read, with their link and side.
    fn poll_set(&self) -> (Vec<libc::pollfd>, Vec<(usize, Side)>) {
        let entry = |fd| libc::pollfd { fd, events: libc::POLLIN, revents: 0 };
        let mut fds = vec![entry(self.listener.as_raw_fd())];
        let mut sides = Vec::new();
        for (index, link) in self.links.iter().enumerate() {
            if !link.up.ended {
                fds.push(entry(link.client.as_raw_fd()));
                sides.push((index, Side::Client));
            }
            if let (Some(server), false) = (&link.server, link.down.ended) {
                fds.push(entry(server.as_raw_fd()));
                sides.push((index, Side::Server));
            }
        }
        (fds, sides)
    }

    /// The earliest time something is due: a connect or a held chunk.
    fn next_deadline(&self) -> Option<Instant> {
        let link_deadlines = |link: &Link| {
            let connect = link.server.is_none().then_some(link.connect_at);
            let held = [&link.up, &link.down].into_iter().filter_map(|pipe| pipe.held.front().map(|(due, _)| *due));
            connect.into_iter().chain(held).min()
        };
        self.links.iter().filter_map(link_deadlines).min()
    }
}

impl Link {
    /// Connects to the server once the client's connect has crossed the network.
    fn connect_when_due(&mut self, server: SocketAddr, now: Instant) {
        if self.server.is_some() || now < self.connect_at {
            return;
        }
        match TcpStream::connect(server).and_then(|stream| stream.set_nodelay(true).map(|()| stream)) {
            Ok(stream) => self.server = Some(stream),
            Err(_) => self.broken = true,
        }
    }

    /// Writes every chunk whose time has come, in order; to the server only once it is connected.
    fn deliver_due(&mut self, now: Instant) {
        let delivered = match &self.server {
            Some(server) => {
                deliver(&mut self.up, server, now).and_then(|()| deliver(&mut self.down, &self.client, now))
            }
            None => Ok(()),
        };
        self.broken |= delivered.is_err();
    }

    /// Reads what `side` sent, to be delivered at `due`.
    fn read(&mut self, side: Side, due: Instant) {
        let (mut source, pipe) = match side {
            Side::Client => (&self.client, &mut self.up),
            Side::Server => match &self.server {
                Some(server) => (server, &mut self.down),
                None => return,
            },
        };
        let mut buffer = vec![0; CHUNK];
        match source.read(&mut buffer) {
            Ok(0) => {
                pipe.ended = true;
                pipe.held.push_back((due, None));
            }
            Ok(n) => {
                buffer.truncate(n);
                pipe.held.push_back((due, Some(buffer)));
            }
            Err(_) => self.broken = true,
        }
    }

    /// Whether the link is done: broken, or both sides closed and everything delivered.
    fn finished(&self) -> bool {
        let drained = |pipe: &Pipe| pipe.ended && pipe.held.is_empty();
        self.broken || (drained(&self.up) && drained(&self.down))
    }
}

/// Writes `pipe`'s due chunks to `to`, and passes its source's close on.
fn deliver(pipe: &mut Pipe, mut to: &TcpStream, now: Instant) -> io::Result<()> {
    while pipe.held.front().is_some_and(|(due, _)| *due <= now) {
        match pipe.held.pop_front().and_then(|(_, chunk)| chunk) {
            Some(chunk) => to.write_all(&chunk)?,
            None => to.shutdown(Shutdown::Write)?,
        }
    }
    Ok(())
}

/// Waits until one of `fds` can be read, or `wait` has passed, with the precision of a nanosecond timer.
fn poll(fds: &mut [libc::pollfd], wait: Duration) -> io::Result<()> {
    let timeout = libc::timespec { tv_sec: wait.as_secs() as libc::time_t, tv_nsec: wait.subsec_nanos() as _ };
    // SAFETY: `fds` is a valid, exclusively borrowed slice of pollfd for the call's length; the timeout outlives it.
    let ready = unsafe { libc::ppoll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, &timeout, std::ptr::null()) };
    match ready {
        -1 if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted => Ok(()),
        -1 => Err(io::Error::last_os_error()),
        _ => Ok(()),
    }
}

/// Makes the calling thread's timed waits end at their deadline: Linux lets a sleep end up to the thread's timer
/// slack (50 µs by default) late, to group wake-ups; the delay line's deadlines are tens of µs apart.
fn precise_timers() {
    // SAFETY: PR_SET_TIMERSLACK takes an integer and changes only the calling thread's timer slack.
    unsafe {
        libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong);
    }
}
