//! The broker's listeners keep what a client can hold bounded: at most `max_connections`
//! connections each (one more is closed at once), a connection must send its request head
//! (the HTTP/2 preface, or an HTTP/1 request's headers) within the handshake timeout, and one
//! that sends nothing for the idle timeout is closed. A client that keeps its connection
//! alive with HTTP/2 pings (Weir's clients and brokers do) is never idle.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};

/// What a connection must send before the handshake timeout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handshake {
    /// This many bytes (the HTTP/2 connection preface is 24).
    Bytes(usize),
    /// A whole HTTP/1 request head, up to its empty line.
    HeaderEnd,
}

/// The HTTP/2 connection preface a gRPC client sends first.
pub const HTTP2_PREFACE: Handshake = Handshake::Bytes(24);

/// The bounds a listener holds its connections to.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_connections: usize,
    pub handshake_timeout: Duration,
    pub idle_timeout: Duration,
    pub handshake: Handshake,
}

/// Counts of one listener (Prometheus counters, shared with the broker's metrics).
#[derive(Debug, Default, Clone)]
pub struct ListenerStats {
    /// Connections closed at accept because the listener was full.
    pub refused: Counter,
    /// Connections closed for a handshake or idle timeout.
    pub timed_out: Counter,
}

/// A TCP listener that hands out [`GuardedStream`]s, refusing connections past the limit.
#[derive(Debug)]
pub struct GuardedListener {
    listener: TcpListener,
    limits: Limits,
    open: Arc<Semaphore>,
    stats: Arc<ListenerStats>,
    name: &'static str,
}

impl GuardedListener {
    pub fn new(
        listener: TcpListener,
        limits: Limits,
        name: &'static str,
        stats: ListenerStats,
    ) -> GuardedListener {
        GuardedListener {
            listener,
            open: Arc::new(Semaphore::new(limits.max_connections.max(1))),
            limits,
            stats: Arc::new(stats),
            name,
        }
    }

    /// How many connections are open now.
    pub fn open_connections(&self) -> usize {
        self.limits.max_connections.max(1) - self.open.available_permits()
    }

    /// A handle that reports how many connections are open.
    pub fn gauge(&self) -> ConnectionGauge {
        ConnectionGauge {
            open: Arc::clone(&self.open),
            max: self.limits.max_connections.max(1),
        }
    }

    /// The next connection within the limit; connections past it are closed at once.
    pub async fn accept(&mut self) -> (GuardedStream, std::net::SocketAddr) {
        loop {
            let (stream, peer) = match self.listener.accept().await {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of descriptors, say: wait a moment rather than spin.
                    tracing::warn!(listener = self.name, error = %weir_proto::Chain(&e), "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let Ok(permit) = Arc::clone(&self.open).try_acquire_owned() else {
                self.stats.refused.inc();
                tracing::warn!(listener = self.name, %peer, max = self.limits.max_connections, "connection refused: the listener is full");
                drop(stream);
                continue;
            };
            let _ = stream.set_nodelay(true);
            return (
                GuardedStream::new(stream, permit, self.limits, Arc::clone(&self.stats)),
                peer,
            );
        }
    }

    /// The accepted connections as a stream, for tonic's server (accepting ends when the
    /// server drops the stream).
    pub fn into_stream(
        self,
    ) -> impl tokio_stream::Stream<Item = Result<GuardedStream, io::Error>> + Send + 'static {
        let (sender, receiver) = tokio::sync::mpsc::channel(16);
        tokio::spawn(async move {
            let mut listener = self;
            loop {
                let (stream, _) = tokio::select! {
                    accepted = listener.accept() => accepted,
                    () = sender.closed() => return,
                };
                if sender.send(Ok(stream)).await.is_err() {
                    return;
                }
            }
        });
        tokio_stream::wrappers::ReceiverStream::new(receiver)
    }
}

/// Reports a listener's open connections.
#[derive(Debug, Clone)]
pub struct ConnectionGauge {
    open: Arc<Semaphore>,
    max: usize,
}

impl ConnectionGauge {
    pub fn open(&self) -> usize {
        self.max - self.open.available_permits()
    }
}

impl axum::serve::Listener for GuardedListener {
    type Io = GuardedStream;
    type Addr = std::net::SocketAddr;

    fn accept(&mut self) -> impl Future<Output = (Self::Io, Self::Addr)> + Send {
        GuardedListener::accept(self)
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.listener.local_addr()
    }
}

/// A connection held to its listener's bounds; it frees its place when dropped.
#[derive(Debug)]
pub struct GuardedStream {
    inner: TcpStream,
    _place: OwnedSemaphorePermit,
    limits: Limits,
    stats: Arc<ListenerStats>,
    /// Until the request head has come: the bytes still owed, or the last 3 bytes seen while
    /// looking for an HTTP/1 head's end.
    handshake: Option<HeadState>,
    /// Fires at the handshake deadline, then at the idle deadline; when it fires after
    /// bytes came since it was set, it is set again from the last of them (so a busy
    /// connection does not move a timer on every read).
    deadline: Pin<Box<Sleep>>,
    /// When the peer last sent a byte.
    last_read: Instant,
}

#[derive(Debug)]
enum HeadState {
    Owed(usize),
    Tail([u8; 3], usize),
}

impl GuardedStream {
    fn new(
        inner: TcpStream,
        place: OwnedSemaphorePermit,
        limits: Limits,
        stats: Arc<ListenerStats>,
    ) -> GuardedStream {
        let handshake = match limits.handshake {
            Handshake::Bytes(n) => HeadState::Owed(n),
            Handshake::HeaderEnd => HeadState::Tail([0; 3], 0),
        };
        GuardedStream {
            inner,
            _place: place,
            deadline: Box::pin(tokio::time::sleep(limits.handshake_timeout)),
            limits,
            stats,
            handshake: Some(handshake),
            last_read: Instant::now(),
        }
    }

    /// Notes `bytes` read: the head's progress, and when the peer last spoke.
    fn saw(&mut self, bytes: &[u8]) {
        self.last_read = Instant::now();
        if let Some(state) = &mut self.handshake {
            let done = match state {
                HeadState::Owed(owed) => {
                    *owed = owed.saturating_sub(bytes.len());
                    *owed == 0
                }
                HeadState::Tail(tail, filled) => {
                    let mut window: Vec<u8> = tail[..*filled].to_vec();
                    window.extend_from_slice(bytes);
                    let found = window.windows(4).any(|w| w == b"\r\n\r\n");
                    let keep = window.len().min(3);
                    tail[..keep].copy_from_slice(&window[window.len() - keep..]);
                    *filled = keep;
                    found
                }
            };
            if !done {
                return;
            }
            self.handshake = None;
            self.deadline
                .as_mut()
                .reset(self.last_read + self.limits.idle_timeout);
        }
    }
}

impl AsyncRead for GuardedStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                let read = &buf.filled()[before..];
                if !read.is_empty() {
                    self.saw(read);
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => loop {
                if self.deadline.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                // Fired: bytes since it was set move it on (and it is polled again, so it
                // wakes this task when it fires next).
                let idle_until = self.last_read + self.limits.idle_timeout;
                if self.handshake.is_none() && idle_until > Instant::now() {
                    self.deadline.as_mut().reset(idle_until);
                    continue;
                }
                self.stats.timed_out.inc();
                let why = if self.handshake.is_some() {
                    "no request head within the handshake timeout"
                } else {
                    "nothing received within the idle timeout"
                };
                return Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, why)));
            },
        }
    }
}

impl AsyncWrite for GuardedStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

impl tonic::transport::server::Connected for GuardedStream {
    type ConnectInfo = tonic::transport::server::TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn listener(handshake: Handshake, max: usize) -> (GuardedListener, String) {
        let tcp = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = tcp.local_addr().expect("address").to_string();
        let limits = Limits {
            max_connections: max,
            handshake_timeout: Duration::from_millis(200),
            idle_timeout: Duration::from_millis(400),
            handshake,
        };
        (
            GuardedListener::new(tcp, limits, "test", ListenerStats::default()),
            address,
        )
    }

    /// Reads from `stream` until it ends or fails; whether it timed out.
    async fn read_until_closed(mut stream: GuardedStream) -> io::ErrorKind {
        let mut buffer = [0u8; 64];
        loop {
            match stream.read(&mut buffer).await {
                Ok(0) => return io::ErrorKind::UnexpectedEof,
                Ok(_) => {}
                Err(e) => return e.kind(),
            }
        }
    }

    #[tokio::test]
    async fn a_silent_connection_is_closed_at_the_handshake_deadline() {
        let (mut listener, address) = listener(HTTP2_PREFACE, 10).await;
        let _client = TcpStream::connect(&address).await.expect("connect");
        let (stream, _) = listener.accept().await;
        let ended = tokio::time::timeout(Duration::from_secs(5), read_until_closed(stream))
            .await
            .expect("closed long before 5 s");
        assert_eq!(ended, io::ErrorKind::TimedOut);
        assert_eq!(listener.stats.timed_out.get(), 1);
    }

    #[tokio::test]
    async fn unfinished_http_headers_do_not_hold_a_connection() {
        let (mut listener, address) = listener(Handshake::HeaderEnd, 10).await;
        let mut client = TcpStream::connect(&address).await.expect("connect");
        client
            .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
            .await
            .expect("write");
        let (stream, _) = listener.accept().await;
        let ended = tokio::time::timeout(Duration::from_secs(5), read_until_closed(stream))
            .await
            .expect("closed long before 5 s");
        assert_eq!(ended, io::ErrorKind::TimedOut);
    }

    #[tokio::test]
    async fn a_full_listener_closes_new_connections_and_frees_places() {
        let (mut listener, address) = listener(HTTP2_PREFACE, 1).await;
        let _first = TcpStream::connect(&address).await.expect("connect");
        let (held, _) = listener.accept().await;
        assert_eq!(listener.open_connections(), 1);
        let mut second = TcpStream::connect(&address).await.expect("connect");
        let accepting = tokio::spawn(async move {
            let accepted = listener.accept().await;
            (listener, accepted)
        });
        // The second is closed by the listener: its read ends.
        let mut buffer = [0u8; 8];
        let read = tokio::time::timeout(Duration::from_secs(5), second.read(&mut buffer))
            .await
            .expect("closed");
        assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
        drop(held);
        let _third = TcpStream::connect(&address).await.expect("connect");
        let (listener, _) = tokio::time::timeout(Duration::from_secs(5), accepting)
            .await
            .expect("accepted once a place is free")
            .expect("task");
        assert_eq!(listener.stats.refused.get(), 1);
    }

    #[tokio::test]
    async fn a_talking_connection_stays_and_an_idle_one_goes() {
        let (mut listener, address) = listener(HTTP2_PREFACE, 10).await;
        let mut client = TcpStream::connect(&address).await.expect("connect");
        let (mut stream, _) = listener.accept().await;
        client.write_all(&[b'P'; 24]).await.expect("preface");
        let mut buffer = [0u8; 64];
        let got = stream.read(&mut buffer).await.expect("read");
        assert!(got > 0);
        // Talking more often than the idle timeout keeps it.
        for _ in 0..4 {
            tokio::time::sleep(Duration::from_millis(200)).await;
            client.write_all(b"ping").await.expect("ping");
            assert!(stream.read(&mut buffer).await.expect("read") > 0);
        }
        let ended = tokio::time::timeout(Duration::from_secs(5), read_until_closed(stream))
            .await
            .expect("closed once idle");
        assert_eq!(ended, io::ErrorKind::TimedOut);
    }
}
