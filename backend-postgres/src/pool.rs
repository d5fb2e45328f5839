//! A small connection pool that never speaks to the server on its own.
//!
//! sqlx's pool pings every connection when it is released, which costs a second round trip per
//! operation on the server and keeps the connection busy meanwhile. This pool hands out idle
//! connections, opens new ones up to the limit, takes back only connections whose last use
//! ended with an answer from a live session, and drops the rest (they are reopened on demand).
//! When one connection turns out dead (the server restarted, say), every idle one is dropped too:
//! they were opened to the same server and are most likely dead as well.

use std::sync::Mutex;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::Connection;
use stowage_core::{Error, Result};
use tokio::sync::{Semaphore, SemaphorePermit};

use crate::error;

/// At most `max` connections, idle ones kept for reuse.
#[derive(Debug)]
pub(crate) struct ConnPool {
    connect: PgConnectOptions,
    idle: Mutex<Vec<PgConnection>>,
    permits: Semaphore,
    acquire_timeout: Duration,
}

/// A connection on loan; [`Lease::release`] returns it, dropping the lease closes it.
#[derive(Debug)]
pub(crate) struct Lease<'a> {
    pool: &'a ConnPool,
    conn: Option<PgConnection>,
    /// Taken from the idle list (it served before), rather than opened for this lease.
    reused: bool,
    /// Must not be reused (for example: an answer was not read to its end).
    discard: bool,
    _permit: SemaphorePermit<'a>,
}

impl ConnPool {
    pub(crate) fn new(connect: PgConnectOptions, max: u32, acquire_timeout: Duration) -> Self {
        ConnPool {
            connect,
            idle: Mutex::new(Vec::new()),
            permits: Semaphore::new(usize::try_from(max).unwrap_or(usize::MAX)),
            acquire_timeout,
        }
    }

    /// An idle connection (unless `fresh`), or a new one; `Unavailable` when none frees up or
    /// connects in time.
    pub(crate) async fn acquire(&self, op: &str, fresh: bool) -> Result<Lease<'_>> {
        let get = async {
            let permit =
                self.permits.acquire().await.map_err(|_| {
                    Error::unavailable(format!("{op}: the connection pool is closed"))
                })?;
            let idle = if fresh {
                None
            } else {
                self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop()
            };
            let reused = idle.is_some();
            let conn = match idle {
                Some(conn) => conn,
                None => PgConnection::connect_with(&self.connect)
                    .await
                    .map_err(|e| error::map(op, e))?,
            };
            Ok(Lease {
                pool: self,
                conn: Some(conn),
                reused,
                discard: false,
                _permit: permit,
            })
        };
        tokio::time::timeout(self.acquire_timeout, get)
            .await
            .map_err(|_| {
                Error::unavailable(format!(
                    "{op}: no PostgreSQL connection within {:?}",
                    self.acquire_timeout
                ))
            })?
    }
}

impl ConnPool {
    /// Closes every idle connection (after one of them turned out dead).
    pub(crate) fn drop_idle(&self) {
        let idle = std::mem::take(&mut *self.idle.lock().unwrap_or_else(|e| e.into_inner()));
        drop(idle);
    }
}

impl Lease<'_> {
    /// Whether the connection came from the idle list (it may have died while it waited there).
    pub(crate) fn reused(&self) -> bool {
        self.reused
    }

    /// Marks the connection as not reusable: [`Lease::release`] will close it.
    pub(crate) fn discard(&mut self) {
        self.discard = true;
    }

    /// The connection.
    pub(crate) fn conn(&mut self) -> &mut PgConnection {
        self.conn
            .as_mut()
            .expect("a lease holds its connection until released")
    }

    /// Returns the connection to the pool for reuse.
    pub(crate) fn release(mut self) {
        if self.discard {
            return;
        }
        if let Some(conn) = self.conn.take() {
            self.pool
                .idle
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(conn);
        }
    }
}
