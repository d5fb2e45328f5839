//! The thread that owns the SQLite connection; async callers send it jobs and await the answers.
//!
//! Writes are group-committed: the thread takes every write already waiting (up to the batch
//! size), runs each inside its own SAVEPOINT of one `BEGIN IMMEDIATE` transaction, commits once,
//! and only then answers each caller. A write that fails rolls back to its savepoint alone, so
//! each stays atomic and individually answered while many share one fsync.

use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;

use std::time::{Duration, Instant};

use rusqlite::{Connection, ErrorCode};
use stowage_core::{Error, Result};
use tokio::sync::oneshot;

use crate::config::{SqliteConfig, SqliteLocation, Synchronous};
use crate::error;

/// A write that runs inside a transaction the worker opened.
trait WriteJob: Send {
    /// Runs the work; true when it succeeded and should be kept.
    fn run(&mut self, conn: &Connection) -> bool;
    /// Answers the caller once the outcome of the commit is known.
    fn finish(self: Box<Self>, commit: Result<()>);
}

struct TypedWrite<R, F> {
    work: Option<F>,
    result: Option<Result<R>>,
    reply: oneshot::Sender<Result<R>>,
}

impl<R, F> WriteJob for TypedWrite<R, F>
where
    R: Send,
    F: FnOnce(&Connection) -> Result<R> + Send,
{
    fn run(&mut self, conn: &Connection) -> bool {
        let work = self.work.take().expect("a write runs once");
        // A panic is a bug; it fails this write alone instead of taking the thread down.
        let result = panic::catch_unwind(AssertUnwindSafe(|| work(conn)))
            .unwrap_or_else(|_| Err(Error::internal("a SQLite write panicked")));
        let keep = result.is_ok();
        self.result = Some(result);
        keep
    }

    fn finish(self: Box<Self>, commit: Result<()>) {
        let answer = match (self.result, commit) {
            (Some(Err(e)), _) => Err(e),
            (Some(Ok(_)), Err(e)) | (None, Err(e)) => Err(e),
            (Some(Ok(value)), Ok(())) => Ok(value),
            (None, Ok(())) => Err(Error::internal("a write was answered without running")),
        };
        let _ = self.reply.send(answer);
    }
}

enum Job {
    /// Runs on the connection as it is (reads, migrations).
    Plain(Box<dyn FnOnce(&mut Connection) + Send>),
    /// Runs inside a group-committed transaction.
    Write(Box<dyn WriteJob>),
}

/// Counts of the worker's commits, to see group commit at work.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) writes: AtomicU64,
    pub(crate) commits: AtomicU64,
}

/// A dedicated thread with one connection; jobs run in the order sent, writes group-committed.
#[derive(Debug)]
pub(crate) struct Worker {
    jobs: mpsc::Sender<Job>,
    pub(crate) counters: Arc<Counters>,
}

impl Worker {
    /// Starts the thread and opens the database on it; `max_batch` writes may share one commit.
    pub(crate) async fn start(config: &SqliteConfig) -> Result<Worker> {
        let (jobs, receiver) = mpsc::channel::<Job>();
        let (opened_tx, opened_rx) = oneshot::channel();
        let config = config.clone();
        let counters = Arc::new(Counters::default());
        let thread_counters = counters.clone();
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
                serve(
                    &mut conn,
                    &receiver,
                    config.max_batch.max(1),
                    &thread_counters,
                );
            })
            .map_err(|e| {
                Error::internal("connect: cannot start the SQLite thread").with_source(e)
            })?;
        opened_rx
            .await
            .map_err(|_| Error::internal("connect: the SQLite thread stopped while opening"))??;
        Ok(Worker { jobs, counters })
    }

    /// Runs `f` on the connection's thread, outside any transaction, and returns its result.
    pub(crate) async fn call<R, F>(&self, op: &'static str, f: F) -> Result<R>
    where
        R: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<R> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let job = Job::Plain(Box::new(move |conn| {
            let _ = tx.send(f(conn));
        }));
        self.send(op, job, rx).await
    }

    /// Runs `f` inside a write transaction (possibly shared with other writes) and answers after the commit.
    pub(crate) async fn write<R, F>(&self, op: &'static str, f: F) -> Result<R>
    where
        R: Send + 'static,
        F: FnOnce(&Connection) -> Result<R> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let job = Job::Write(Box::new(TypedWrite {
            work: Some(f),
            result: None,
            reply: tx,
        }));
        self.send(op, job, rx).await
    }

    async fn send<R>(
        &self,
        op: &'static str,
        job: Job,
        rx: oneshot::Receiver<Result<R>>,
    ) -> Result<R> {
        self.jobs
            .send(job)
            .map_err(|_| Error::internal(format!("{op}: the SQLite thread has stopped")))?;
        rx.await
            .map_err(|_| Error::internal(format!("{op}: the SQLite thread dropped the call")))?
    }
}

/// How long the thread polls for the next job before it sleeps: a caller that sends its next
/// request right after the answer then finds the thread awake (a sleeping thread costs a wake-up,
/// tens of microseconds on a busy machine, on every call).
const SPIN: Duration = Duration::from_micros(100);

/// The next job: polled for [`SPIN`], then waited for; `None` once every sender is gone.
fn next_job(receiver: &mpsc::Receiver<Job>) -> Option<Job> {
    let start = Instant::now();
    while start.elapsed() < SPIN {
        match receiver.try_recv() {
            Ok(job) => return Some(job),
            Err(mpsc::TryRecvError::Disconnected) => return None,
            Err(mpsc::TryRecvError::Empty) => std::hint::spin_loop(),
        }
    }
    receiver.recv().ok()
}

/// The thread's loop: ends when every sender is gone, i.e. when the backend is dropped.
fn serve(
    conn: &mut Connection,
    receiver: &mpsc::Receiver<Job>,
    max_batch: usize,
    counters: &Counters,
) {
    let mut next = receiver.recv().ok();
    while let Some(job) = next.take() {
        match job {
            Job::Plain(f) => {
                // A panic drops the reply, so the caller gets `Internal`; the thread lives on.
                let _ = panic::catch_unwind(AssertUnwindSafe(|| f(conn)));
            }
            Job::Write(first) => {
                let mut batch = vec![first];
                while batch.len() < max_batch {
                    match receiver.try_recv() {
                        Ok(Job::Write(w)) => batch.push(w),
                        Ok(plain) => {
                            next = Some(plain);
                            break;
                        }
                        Err(_) => break,
                    }
                }
                counters.commits.fetch_add(1, Ordering::Relaxed);
                counters.writes.fetch_add(
                    u64::try_from(batch.len()).unwrap_or(u64::MAX),
                    Ordering::Relaxed,
                );
                commit_batch(conn, batch);
            }
        }
        if next.is_none() {
            next = next_job(receiver);
        }
    }
}

/// Runs one statement through the statement cache (no re-parsing on every commit).
fn exec(conn: &Connection, sql: &str) -> Result<()> {
    conn.prepare_cached(sql)
        .and_then(|mut s| s.execute([]))
        .map(|_| ())
        .map_err(|e| error::map("commit", e))
}

/// One transaction and one commit for the whole batch, then every caller is answered. With more
/// than one write, each runs in its own savepoint so a failure undoes only itself; a lone write
/// needs no savepoint (its failure rolls the transaction back).
fn commit_batch(conn: &mut Connection, mut batch: Vec<Box<dyn WriteJob>>) {
    let commit = (|| {
        exec(conn, "BEGIN IMMEDIATE")?;
        if let [job] = batch.as_mut_slice() {
            return if job.run(conn) {
                exec(conn, "COMMIT")
            } else {
                exec(conn, "ROLLBACK")
            };
        }
        for job in &mut batch {
            exec(conn, "SAVEPOINT stowage_write")?;
            if !job.run(conn) {
                exec(conn, "ROLLBACK TO stowage_write")?;
            }
            exec(conn, "RELEASE stowage_write")?;
        }
        exec(conn, "COMMIT")
    })();
    if commit.is_err() && !conn.is_autocommit() {
        let _ = conn.execute_batch("ROLLBACK");
    }
    for job in batch {
        let answer = match &commit {
            Ok(()) => Ok(()),
            Err(e) => Err(Error::new(e.kind(), e.message().to_owned())),
        };
        job.finish(answer);
    }
}

/// Switches the file to WAL. Several processes opening a new file at once may find it locked while
/// another one converts it, and SQLite does not call the busy handler for that: retry until the
/// busy timeout (on this dedicated thread, never on the executor).
fn enable_wal(conn: &Connection, busy_timeout: Duration) -> rusqlite::Result<()> {
    let start = Instant::now();
    let mut pause = Duration::from_millis(1);
    loop {
        let mode: rusqlite::Result<String> =
            conn.pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0));
        match mode {
            Ok(_) => return Ok(()),
            Err(rusqlite::Error::SqliteFailure(e, _))
                if matches!(e.code, ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked)
                    && start.elapsed() < busy_timeout =>
            {
                thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(50));
            }
            Err(e) => return Err(e),
        }
    }
}

/// Opens a connection with the backend's settings.
pub(crate) fn open(config: &SqliteConfig) -> Result<Connection> {
    let op = "connect";
    let conn = match &config.location {
        SqliteLocation::File(path) => Connection::open(path),
        SqliteLocation::Memory => Connection::open_in_memory(),
    }
    .map_err(|e| error::map(op, e))?;
    conn.busy_timeout(config.busy_timeout)
        .map_err(|e| error::map(op, e))?;
    if let SqliteLocation::File(_) = config.location {
        enable_wal(&conn, config.busy_timeout).map_err(|e| error::map(op, e))?;
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
