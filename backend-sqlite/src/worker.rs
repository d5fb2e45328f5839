//! The thread that owns the SQLite connection; async callers send it jobs and await the answers.

use std::sync::mpsc;
use std::thread;

use rusqlite::Connection;
use stowage_core::{Error, Result};
use tokio::sync::oneshot;

use crate::config::{SqliteConfig, SqliteLocation, Synchronous};
use crate::error;

type Job = Box<dyn FnOnce(&mut Connection) + Send>;

/// A dedicated thread with one connection; jobs run one at a time, in the order sent.
#[derive(Debug)]
pub(crate) struct Worker {
    jobs: mpsc::Sender<Job>,
}

impl Worker {
    /// Starts the thread and opens the database on it.
    pub(crate) async fn start(config: &SqliteConfig) -> Result<Worker> {
        let (jobs, receiver) = mpsc::channel::<Job>();
        let (opened_tx, opened_rx) = oneshot::channel();
        let config = config.clone();
        thread::Builder::new()
            .name("stowage-sqlite".into())
            .spawn(move || {
                let mut conn = match open(&config) {
                    Ok(conn) => {
                        let _ = opened_tx.send(Ok(()));
                        conn
                    }
                    Err(e) => {
                        let _ = opened_tx.send(Err(e));
                        return;
                    }
                };
                // Ends when every sender is gone, i.e. when the backend is dropped.
                while let Ok(job) = receiver.recv() {
                    job(&mut conn);
                }
            })
            .map_err(|e| {
                Error::internal("connect: cannot start the SQLite thread").with_source(e)
            })?;
        opened_rx
            .await
            .map_err(|_| Error::internal("connect: the SQLite thread stopped while opening"))??;
        Ok(Worker { jobs })
    }

    /// Runs `f` on the connection's thread and returns its result.
    pub(crate) async fn call<R, F>(&self, op: &'static str, f: F) -> Result<R>
    where
        R: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<R> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let job: Job = Box::new(move |conn| {
            let _ = tx.send(f(conn));
        });
        self.jobs
            .send(job)
            .map_err(|_| Error::internal(format!("{op}: the SQLite thread has stopped")))?;
        rx.await
            .map_err(|_| Error::internal(format!("{op}: the SQLite thread dropped the call")))?
    }
}

fn open(config: &SqliteConfig) -> Result<Connection> {
    let op = "connect";
    let conn = match &config.location {
        SqliteLocation::File(path) => Connection::open(path),
        SqliteLocation::Memory => Connection::open_in_memory(),
    }
    .map_err(|e| error::map(op, e))?;
    conn.busy_timeout(config.busy_timeout)
        .map_err(|e| error::map(op, e))?;
    if let SqliteLocation::File(_) = config.location {
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(|e| error::map(op, e))?;
    }
    let synchronous = match config.synchronous {
        Synchronous::Full => "FULL",
        Synchronous::Normal => "NORMAL",
    };
    conn.pragma_update(None, "synchronous", synchronous)
        .map_err(|e| error::map(op, e))?;
    conn.set_prepared_statement_cache_capacity(64);
    Ok(conn)
}
