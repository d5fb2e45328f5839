//! Round trips on the wire, counted by a TCP proxy between a backend and its server: client bytes
//! that follow server bytes open a new round trip. The backend tests use it to show that a call
//! costs the round trips its engine promises (one report, one batch, …).

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};

/// The round trips seen by one proxy (every connection through it counts).
#[derive(Debug, Default)]
pub struct RoundTrips {
    count: AtomicU64,
    server_spoke_last: AtomicBool,
}

impl RoundTrips {
    /// A counting proxy in front of `127.0.0.1:server_port`, and the loopback port it listens on.
    pub async fn proxy(server_port: u16) -> (Arc<RoundTrips>, u16) {
        let trips = Arc::new(RoundTrips::default());
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the proxy");
        let port = listener.local_addr().expect("the proxy's address").port();
        let counter = trips.clone();
        tokio::spawn(async move {
            loop {
                let (client, _) = listener.accept().await.expect("accept");
                let server = TcpStream::connect(("127.0.0.1", server_port))
                    .await
                    .expect("reach the server");
                client.set_nodelay(true).expect("nodelay");
                server.set_nodelay(true).expect("nodelay");
                let (client_read, client_write) = client.into_split();
                let (server_read, server_write) = server.into_split();
                tokio::spawn(pump(client_read, server_write, counter.clone(), true));
                tokio::spawn(pump(server_read, client_write, counter.clone(), false));
            }
        });
        (trips, port)
    }

    /// The round trips `call` takes (the previous answer was read in full: the next client bytes
    /// open a new one), and its answer.
    pub async fn of<T>(&self, call: impl Future<Output = T>) -> (u64, T) {
        self.server_spoke_last.store(true, Ordering::SeqCst);
        let before = self.count.load(Ordering::SeqCst);
        let answer = call.await;
        (self.count.load(Ordering::SeqCst) - before, answer)
    }
}

/// Forwards one direction, marking the turn before forwarding (so the other side's answer cannot
/// be seen first).
async fn pump(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    trips: Arc<RoundTrips>,
    client: bool,
) {
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = from.read(&mut buf).await.unwrap_or(0);
        if n == 0 {
            break;
        }
        if client {
            if trips.server_spoke_last.swap(false, Ordering::SeqCst) {
                trips.count.fetch_add(1, Ordering::SeqCst);
            }
        } else {
            trips.server_spoke_last.store(true, Ordering::SeqCst);
        }
        if to.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
}
