//! A TCP failover proxy that stands in for a load balancer in front of several relays.

use crate::relay::Relay;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// A TCP load balancer for tests: listens on a free loopback port and forwards each
/// new connection to the first of its backends that accepts one, starting at the next
/// backend in round-robin order, so connections alternate between healthy backends and
/// skip dead ones. It knows nothing of HTTP. Stops accepting when dropped.
pub struct FailoverProxy {
    pub port: u16,
    pub url: String,
    stop: Arc<AtomicBool>,
    per_backend: Arc<Vec<AtomicU64>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FailoverProxy {
    /// A proxy in front of `relays`.
    pub fn in_front_of(relays: &[&Relay]) -> FailoverProxy {
        let backends: Vec<SocketAddr> = relays
            .iter()
            .map(|r| SocketAddr::from(([127, 0, 0, 1], r.port)))
            .collect();
        FailoverProxy::start(&backends)
    }

    /// A proxy in front of `backends`.
    pub fn start(backends: &[SocketAddr]) -> FailoverProxy {
        assert!(!backends.is_empty());
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let stop = Arc::new(AtomicBool::new(false));
        let per_backend: Arc<Vec<AtomicU64>> =
            Arc::new(backends.iter().map(|_| AtomicU64::new(0)).collect());
        let backends = backends.to_vec();
        let thread = std::thread::spawn({
            let stop = stop.clone();
            let per_backend = per_backend.clone();
            move || {
                let next = AtomicUsize::new(0);
                for client in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        return;
                    }
                    let Ok(client) = client else { continue };
                    let first = next.fetch_add(1, Ordering::Relaxed);
                    let backend = (0..backends.len()).find_map(|k| {
                        let i = (first + k) % backends.len();
                        TcpStream::connect_timeout(&backends[i], Duration::from_secs(1))
                            .ok()
                            .map(|s| (i, s))
                    });
                    // None accepts: dropping the client's socket makes it retry.
                    let Some((i, backend)) = backend else {
                        continue;
                    };
                    per_backend[i].fetch_add(1, Ordering::Relaxed);
                    let _ = client.set_nodelay(true);
                    let _ = backend.set_nodelay(true);
                    pipe(client, backend);
                }
            }
        });
        FailoverProxy {
            port,
            url: format!("http://127.0.0.1:{port}"),
            stop,
            per_backend,
            thread: Some(thread),
        }
    }

    /// How many connections went to each backend so far.
    pub fn connections(&self) -> Vec<u64> {
        self.per_backend
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .collect()
    }
}

/// Copies bytes both ways until either side closes, then closes both.
fn pipe(client: TcpStream, backend: TcpStream) {
    let (Ok(client2), Ok(backend2)) = (client.try_clone(), backend.try_clone()) else {
        return;
    };
    std::thread::spawn(move || {
        let (mut from, mut to) = (client2, backend2);
        let _ = std::io::copy(&mut from, &mut to);
        let _ = to.shutdown(std::net::Shutdown::Write);
    });
    std::thread::spawn(move || {
        let (mut from, mut to) = (backend, client);
        let _ = std::io::copy(&mut from, &mut to);
        // The backend is gone or done: end the client's connection both ways, which
        // also ends the other direction's copy.
        let _ = to.shutdown(std::net::Shutdown::Both);
        let _ = from.shutdown(std::net::Shutdown::Both);
    });
}

impl Drop for FailoverProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
