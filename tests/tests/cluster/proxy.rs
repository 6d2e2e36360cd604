//! A TCP proxy owned by a test, on one directed link between processes: it forwards, or it
//! cuts the link (a network partition: bytes vanish, connections hang as they would behind a
//! dead switch). Healing closes the connections it held (their streams lost bytes, as the real
//! ones would have reset by then) and forwards new ones.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// One proxied link, from `address` to its target.
#[derive(Debug)]
pub struct Proxy {
    /// Where to connect to go through the link.
    pub address: String,
    cut: Arc<AtomicBool>,
    /// Bumped at every heal: connections of an older generation close.
    generation: watch::Sender<u64>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    /// A link to `target` (`host:port`), forwarding.
    pub async fn start(target: String) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("address").to_string();
        let cut = Arc::new(AtomicBool::new(false));
        let (generation, _) = watch::channel(0u64);
        let task = tokio::spawn(accept(
            listener,
            target,
            Arc::clone(&cut),
            generation.subscribe(),
        ));
        Proxy {
            address,
            cut,
            generation,
            task,
        }
    }

    /// Cuts the link: nothing crosses it until [`Proxy::heal`].
    pub fn cut(&self) {
        self.cut.store(true, Ordering::Release);
    }

    /// Heals the link: connections held through the cut close, new ones forward.
    pub fn heal(&self) {
        self.generation.send_modify(|g| *g += 1);
        self.cut.store(false, Ordering::Release);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
        self.generation.send_modify(|g| *g += 1);
    }
}

async fn accept(
    listener: TcpListener,
    target: String,
    cut: Arc<AtomicBool>,
    generation: watch::Receiver<u64>,
) {
    loop {
        let Ok((inbound, _)) = listener.accept().await else {
            continue;
        };
        let (target, cut, mut generation) = (target.clone(), Arc::clone(&cut), generation.clone());
        tokio::spawn(async move {
            let born = *generation.borrow_and_update();
            let _ = inbound.set_nodelay(true);
            // Through a cut link a connection hangs: it is neither refused nor forwarded.
            while cut.load(Ordering::Acquire) {
                if generation.changed().await.is_err() {
                    return;
                }
            }
            if *generation.borrow() != born && cut.load(Ordering::Acquire) {
                return;
            }
            let Ok(outbound) = TcpStream::connect(&target).await else {
                return;
            };
            let _ = outbound.set_nodelay(true);
            let (from_in, to_in) = inbound.into_split();
            let (from_out, to_out) = outbound.into_split();
            let ends = generation.clone();
            let here = *generation.borrow();
            tokio::select! {
                () = pipe(from_in, to_out, Arc::clone(&cut)) => {}
                () = pipe(from_out, to_in, Arc::clone(&cut)) => {}
                () = closed_at_heal(ends, here) => {}
            }
        });
    }
}

/// Copies bytes one way; while the link is cut, bytes are read and dropped.
async fn pipe(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    cut: Arc<AtomicBool>,
) {
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        let read = match from.read(&mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if cut.load(Ordering::Acquire) {
            continue;
        }
        if to.write_all(&buffer[..read]).await.is_err() {
            return;
        }
    }
}

/// Completes when the link heals after this connection was made: its stream lost bytes.
async fn closed_at_heal(mut generation: watch::Receiver<u64>, born: u64) {
    loop {
        if *generation.borrow_and_update() != born {
            return;
        }
        if generation.changed().await.is_err() {
            return;
        }
    }
}
