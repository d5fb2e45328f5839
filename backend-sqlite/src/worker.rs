//! The threads that own the SQLite connections; async callers send them jobs and await the answers.
//!
//! **Writer.** One thread owns the write connection. Writes are group-committed: the thread takes
//! every write already waiting (up to the batch size), runs each inside its own SAVEPOINT of one
//! `BEGIN IMMEDIATE` transaction, commits once, and only then answers each caller. A write that
//! fails rolls back to its savepoint alone, so each stays atomic and individually answered while
//! many share one fsync. Before every transaction the thread checks that its connection is in
//! autocommit mode; a connection left inside a transaction (a failed `ROLLBACK`) is rolled back,
//! or, if that fails, closed and reopened, so no write can run inside a stale transaction and be
//! answered `Ok` without being committed. Migrations run on this thread too.
//!
//! **Readers.** For a file, [`READERS`] threads each own a read-only (`query_only`) connection and
//! serve `usage`, `policy` and `query`. WAL lets them read the last committed state while another
//! connection or process holds the write lock, so reads never wait for writes. A
//! `sqlite::memory:` database is private to the connection that created it, so there the reads run
//! on the writer thread (between its transactions, never inside one).
//!
//! **Operation timeout.** Every call has a deadline, `operation_timeout` after it was made. The
//! guarantees:
//! - A job is run at most once, and only if its thread *starts* it before the deadline; a thread
//!   starts a write only once it holds the write lock (after `BEGIN IMMEDIATE` succeeded). The
//!   caller and the thread decide atomically (a [`Ticket`]): once the caller has given up the job
//!   can no longer start, and once it has started the caller can no longer give up.
//! - A caller whose job has not started by the deadline is answered `Unavailable` at the deadline,
//!   and that job never runs: **a write answered `Unavailable` for its timeout is never applied,
//!   not later either.**
//! - The wait for the write lock (the busy timeout) is at most `busy_timeout` and never outlasts
//!   the latest deadline of the batch that waits; a batch whose callers have all given up is not
//!   started at all.
//! - A write that has started runs to the end of its batch's commit, and its caller gets the real
//!   outcome, even if that comes after the deadline. Past the lock nothing in a batch waits for
//!   another connection: the remaining time is the batch's own statements and the commit's fsync.
//!   A read that has started is answered `Unavailable` at its deadline (it changes nothing).
//! - A thread that dies (a panic outside the per-job `catch_unwind`, an exit) is replaced by a new
//!   one on the next call for a file; its pending callers get `Unavailable` (a job that had
//!   started may or may not have committed: retrying with the same key is safe). The thread of a
//!   `sqlite::memory:` database cannot be replaced (the data died with its connection): its
//!   callers get `Unavailable`.

use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{mpsc, Arc, Mutex, MutexGuard, TryLockError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use rusqlite::config::DbConfig;
use rusqlite::{Connection, ErrorCode};
use stowage_core::{Error, Result};
use tokio::sync::oneshot;

use crate::config::{SqliteConfig, SqliteLocation, Synchronous};
use crate::error;

/// How many read connections, each on its own thread, a file-backed backend keeps.
pub(crate) const READERS: usize = 2;

/// How many read connections a file-backed backend keeps for short reads on the calling task
/// ([`Worker::read_now`]): as many tasks as run at once can each find one free.
pub(crate) const NOW_READERS: usize = 2;

const QUEUED: u8 = 0;
const STARTED: u8 = 1;
const ABANDONED: u8 = 2;

/// Decides who owns a job's fate: the thread that starts it or the caller that gives up; never both.
#[derive(Debug)]
struct Ticket {
    state: AtomicU8,
    deadline: Instant,
}

impl Ticket {
    fn new(timeout: Duration) -> Arc<Ticket> {
        let now = Instant::now();
        // A timeout too large for the platform's clock is as good as none.
        let deadline = now
            .checked_add(timeout)
            .or_else(|| now.checked_add(Duration::from_secs(100 * 365 * 86_400)))
            .unwrap_or(now);
        Arc::new(Ticket {
            state: AtomicU8::new(QUEUED),
            deadline,
        })
    }

    /// Whether the job is still queued and in time; a job past its deadline is given up here.
    fn wanted(&self) -> bool {
        if Instant::now() >= self.deadline {
            let _ =
                self.state
                    .compare_exchange(QUEUED, ABANDONED, Ordering::AcqRel, Ordering::Acquire);
            return false;
        }
        self.state.load(Ordering::Acquire) == QUEUED
    }

    /// The thread's side: true when the job may run now; false when its caller gave up or its
    /// deadline passed — then it never runs.
    fn start(&self) -> bool {
        self.wanted()
            && self
                .state
                .compare_exchange(QUEUED, STARTED, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
    }

    /// Neither started nor given up yet.
    fn is_queued(&self) -> bool {
        self.state.load(Ordering::Acquire) == QUEUED
    }

    /// The caller's side: true when the job will never run (it had not started, now it cannot).
    fn abandon(&self) -> bool {
        match self
            .state
            .compare_exchange(QUEUED, ABANDONED, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) => true,
            Err(state) => state == ABANDONED,
        }
    }
}

/// `error` as met by `op`: its kind, `op` in the message, and the error itself as the source.
fn relay(op: &str, error: &Error) -> Error {
    Error::new(error.kind(), format!("{op}: {}", error.message())).with_source(error.clone())
}

/// Work on a connection as it is (reads, migrations): runs once, or fails unrun.
trait PlainJob: Send {
    fn ticket(&self) -> &Ticket;
    fn run(self: Box<Self>, conn: &mut Connection);
    fn fail(self: Box<Self>, error: &Error);
}

struct Plain<R, F> {
    op: &'static str,
    ticket: Arc<Ticket>,
    work: F,
    reply: oneshot::Sender<Result<R>>,
}

impl<R, F> PlainJob for Plain<R, F>
where
    R: Send,
    F: FnOnce(&mut Connection) -> Result<R> + Send,
{
    fn ticket(&self) -> &Ticket {
        &self.ticket
    }

    fn run(self: Box<Self>, conn: &mut Connection) {
        let Plain {
            op, work, reply, ..
        } = *self;
        // A panic is a bug; it fails this call alone instead of taking the thread down.
        let result = panic::catch_unwind(AssertUnwindSafe(|| work(conn)))
            .unwrap_or_else(|_| Err(Error::internal(format!("{op}: the SQLite call panicked"))));
        let _ = reply.send(result);
    }

    fn fail(self: Box<Self>, error: &Error) {
        let _ = self.reply.send(Err(relay(self.op, error)));
    }
}

/// A write that runs inside a transaction the writer opened.
trait WriteJob: Send {
    fn ticket(&self) -> &Ticket;
    /// Runs the work; true when it succeeded and should be kept.
    fn run(&mut self, conn: &Connection) -> bool;
    /// Answers the caller once the outcome of the commit is known.
    fn finish(self: Box<Self>, commit: &Result<()>);
}

struct TypedWrite<R, F> {
    op: &'static str,
    ticket: Arc<Ticket>,
    work: Option<F>,
    result: Option<Result<R>>,
    reply: oneshot::Sender<Result<R>>,
}

impl<R, F> WriteJob for TypedWrite<R, F>
where
    R: Send,
    F: FnOnce(&Connection) -> Result<R> + Send,
{
    fn ticket(&self) -> &Ticket {
        &self.ticket
    }

    fn run(&mut self, conn: &Connection) -> bool {
        let op = self.op;
        let Some(work) = self.work.take() else {
            self.result = Some(Err(Error::internal(format!("{op}: a write ran twice"))));
            return false;
        };
        // A panic is a bug; it fails this write alone instead of taking the thread down.
        let result = panic::catch_unwind(AssertUnwindSafe(|| work(conn)))
            .unwrap_or_else(|_| Err(Error::internal(format!("{op}: the SQLite write panicked"))));
        let keep = result.is_ok();
        self.result = Some(result);
        keep
    }

    fn finish(self: Box<Self>, commit: &Result<()>) {
        let op = self.op;
        let answer = match (self.result, commit) {
            (Some(Err(e)), _) => Err(e),
            (_, Err(e)) => Err(relay(op, e)),
            (Some(Ok(value)), Ok(())) => Ok(value),
            (None, Ok(())) => Err(Error::internal(format!(
                "{op}: a write was answered without running"
            ))),
        };
        let _ = self.reply.send(answer);
    }
}

enum Job {
    /// Runs on the connection as it is (reads, migrations).
    Plain(Box<dyn PlainJob>),
    /// Runs inside a group-committed transaction.
    Write(Box<dyn WriteJob>),
    /// Test hook: the thread panics outside any `catch_unwind`, as a bug could kill it.
    Die,
}

impl Job {
    /// Answers the caller with `error` without running the job.
    fn fail(self, error: &Error) {
        match self {
            Job::Plain(job) => job.fail(error),
            Job::Write(job) => job.finish(&Err(error.clone())),
            Job::Die => {}
        }
    }
}

/// Counts of the writer's commits, to see group commit at work.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) writes: AtomicU64,
    pub(crate) commits: AtomicU64,
}

/// State shared by the backend and its threads.
#[derive(Debug, Default)]
struct Shared {
    counters: Counters,
    /// Test hook: the writer's next attempt to leave a stale transaction fails as if `ROLLBACK` had.
    fail_next_rollback: AtomicBool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LaneKind {
    Writer,
    Readers,
}

/// Threads of one kind (the writer, or the readers) and the channel that feeds them.
#[derive(Debug)]
struct Lane {
    kind: LaneKind,
    sender: Mutex<mpsc::Sender<Job>>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The writer thread, the reader threads (files only), and the configuration to restart them.
#[derive(Debug)]
pub(crate) struct Worker {
    config: SqliteConfig,
    shared: Arc<Shared>,
    writer: Lane,
    readers: Option<Lane>,
    /// Read connections for [`Worker::read_now`] (none for `sqlite::memory:`).
    now_readers: Vec<Mutex<Connection>>,
}

/// A lane's threads just spawned: its channel, the threads, and one "opened" answer per thread.
type Spawned = (
    mpsc::Sender<Job>,
    Vec<JoinHandle<()>>,
    Vec<oneshot::Receiver<Result<()>>>,
);

impl Worker {
    /// Starts the writer (and, for a file, the readers) and opens their connections.
    pub(crate) async fn start(config: &SqliteConfig) -> Result<Worker> {
        let config = config.clone();
        let shared = Arc::new(Shared::default());
        let writer = Self::start_lane(LaneKind::Writer, &config, &shared).await?;
        let readers = match config.location {
            SqliteLocation::File(_) => {
                Some(Self::start_lane(LaneKind::Readers, &config, &shared).await?)
            }
            SqliteLocation::Memory => None,
        };
        let mut worker = Worker {
            config,
            shared,
            writer,
            readers,
            now_readers: Vec::new(),
        };
        if worker.readers.is_some() {
            // Opened on a reader thread: opening touches the file, never on the executor.
            let config = worker.config.clone();
            let conns: Vec<Connection> = worker
                .read("connect", move |_| {
                    (0..NOW_READERS).map(|_| open_now_reader(&config)).collect()
                })
                .await?;
            worker.now_readers = conns.into_iter().map(Mutex::new).collect();
        }
        Ok(worker)
    }

    async fn start_lane(
        kind: LaneKind,
        config: &SqliteConfig,
        shared: &Arc<Shared>,
    ) -> Result<Lane> {
        let (sender, threads, opened) = spawn_lane(kind, config, shared)?;
        for opened in opened {
            opened.await.map_err(|_| {
                Error::unavailable("connect: the SQLite thread stopped while opening")
            })??;
        }
        Ok(Lane {
            kind,
            sender: Mutex::new(sender),
            threads: Mutex::new(threads),
        })
    }

    /// Writes and commits so far.
    pub(crate) fn counters(&self) -> &Counters {
        &self.shared.counters
    }

    /// Runs `f` on the writer's connection, outside any transaction (migrations).
    pub(crate) async fn call<R, F>(&self, op: &'static str, f: F) -> Result<R>
    where
        R: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<R> + Send + 'static,
    {
        self.plain(&self.writer, op, f, true).await
    }

    /// Runs the read `f` on a read connection (on the writer's for `sqlite::memory:`).
    pub(crate) async fn read<R, F>(&self, op: &'static str, f: F) -> Result<R>
    where
        R: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<R> + Send + 'static,
    {
        let lane = self.readers.as_ref().unwrap_or(&self.writer);
        self.plain(lane, op, f, false).await
    }

    /// Runs the short read `f` on the calling task, on a read connection that is free right now:
    /// `None` when every one is in use (it never waits for one) or the database is
    /// `sqlite::memory:` (it has none).
    ///
    /// This is the one place SQLite runs on the caller's thread, so what bounds it: WAL readers
    /// never wait for a writer (they read the last committed state, whoever holds the write lock),
    /// these connections have a busy timeout of 0 (where SQLite would wait for a lock — a
    /// connection recovering the WAL after a crash — the read fails at once instead), and `f` is
    /// meant for a lookup by primary key: a few pages of a B-tree, read from the OS page cache.
    pub(crate) fn read_now<R>(&self, f: impl FnOnce(&Connection) -> R) -> Option<R> {
        let conn = self
            .now_readers
            .iter()
            .find_map(|slot| match slot.try_lock() {
                Ok(conn) => Some(conn),
                // A panic in an earlier read left the connection as it is: usable.
                Err(TryLockError::Poisoned(poisoned)) => Some(poisoned.into_inner()),
                Err(TryLockError::WouldBlock) => None,
            })?;
        Some(f(&conn))
    }

    async fn plain<R, F>(&self, lane: &Lane, op: &'static str, f: F, effects: bool) -> Result<R>
    where
        R: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<R> + Send + 'static,
    {
        let ticket = Ticket::new(self.config.operation_timeout);
        let (reply, rx) = oneshot::channel();
        let job = Job::Plain(Box::new(Plain {
            op,
            ticket: ticket.clone(),
            work: f,
            reply,
        }));
        self.submit(lane, op, job)?;
        self.answer(op, &ticket, rx, effects).await
    }

    /// Runs `f` inside a write transaction (possibly shared with other writes) and answers after the commit.
    pub(crate) async fn write<R, F>(&self, op: &'static str, f: F) -> Result<R>
    where
        R: Send + 'static,
        F: FnOnce(&Connection) -> Result<R> + Send + 'static,
    {
        let ticket = Ticket::new(self.config.operation_timeout);
        let (reply, rx) = oneshot::channel();
        let job = Job::Write(Box::new(TypedWrite {
            op,
            ticket: ticket.clone(),
            work: Some(f),
            result: None,
            reply,
        }));
        self.submit(&self.writer, op, job)?;
        self.answer(op, &ticket, rx, true).await
    }

    /// Sends `job` to `lane`, restarting the lane's threads first if they have all died.
    fn submit(&self, lane: &Lane, op: &str, job: Job) -> Result<()> {
        let mut sender = lock(&lane.sender);
        let job = match sender.send(job) {
            Ok(()) => return Ok(()),
            Err(mpsc::SendError(job)) => job,
        };
        if self.config.location == SqliteLocation::Memory {
            return Err(Error::unavailable(format!(
                "{op}: the thread of the in-memory SQLite database has stopped, and its data with it"
            )));
        }
        // Every thread of the lane has exited (a bug panicked one): start new ones. They open
        // their connections themselves, so this does not wait for the file.
        let (fresh, threads, _opened) = spawn_lane(lane.kind, &self.config, &self.shared)?;
        *sender = fresh;
        *lock(&lane.threads) = threads;
        sender.send(job).map_err(|_| {
            Error::unavailable(format!(
                "{op}: the SQLite thread stopped again right after its restart"
            ))
        })
    }

    /// Waits for the answer until the deadline; see the module documentation for the guarantees.
    async fn answer<R>(
        &self,
        op: &str,
        ticket: &Ticket,
        mut rx: oneshot::Receiver<Result<R>>,
        effects: bool,
    ) -> Result<R> {
        let deadline = tokio::time::Instant::from_std(ticket.deadline);
        match tokio::time::timeout_at(deadline, &mut rx).await {
            Ok(Ok(answer)) => answer,
            Ok(Err(_)) => Err(self.lost(op, ticket)),
            Err(_) => {
                if ticket.abandon() || !effects {
                    return Err(self.timed_out(op));
                }
                // Started before the deadline: it runs to its commit; report what really happened.
                rx.await.unwrap_or_else(|_| Err(self.lost(op, ticket)))
            }
        }
    }

    fn timed_out(&self, op: &str) -> Error {
        Error::unavailable(format!(
            "{op}: no SQLite answer within operation_timeout_ms = {}; the call was not applied",
            self.config.operation_timeout.as_millis()
        ))
    }

    /// The error for a job whose thread dropped it unanswered.
    fn lost(&self, op: &str, ticket: &Ticket) -> Error {
        if ticket.abandon() {
            if Instant::now() >= ticket.deadline {
                return self.timed_out(op);
            }
            return Error::unavailable(format!(
                "{op}: the SQLite thread stopped before running the call; nothing was applied"
            ));
        }
        Error::unavailable(format!(
            "{op}: the SQLite thread stopped while running the call; it may or may not have been \
             applied (retrying with the same key is safe)"
        ))
    }

    /// Test hook: the writer's next `ROLLBACK` of a stale transaction counts as failed.
    pub(crate) fn fail_next_rollback(&self) {
        self.shared
            .fail_next_rollback
            .store(true, Ordering::Relaxed);
    }

    /// Test hook: every thread of the writer (or of the readers) panics outside its
    /// `catch_unwind`; returns once they have all exited.
    pub(crate) async fn kill(&self, readers: bool) -> Result<()> {
        let lane = if readers {
            self.readers.as_ref().ok_or_else(|| {
                Error::unsupported("test hook: an in-memory database has no reader threads")
            })?
        } else {
            &self.writer
        };
        let threads = std::mem::take(&mut *lock(&lane.threads));
        {
            let sender = lock(&lane.sender);
            for _ in &threads {
                let _ = sender.send(Job::Die);
            }
        }
        tokio::task::spawn_blocking(move || {
            for thread in threads {
                let _ = thread.join();
            }
        })
        .await
        .map_err(|e| Error::internal("test hook: joining the SQLite threads failed").with_source(e))
    }
}

/// Spawns the threads of one lane; each opens its own connection and reports it.
fn spawn_lane(kind: LaneKind, config: &SqliteConfig, shared: &Arc<Shared>) -> Result<Spawned> {
    let (sender, receiver) = mpsc::channel::<Job>();
    let mut threads = Vec::new();
    let mut opened = Vec::new();
    match kind {
        LaneKind::Writer => {
            let (opened_tx, opened_rx) = oneshot::channel();
            let config = config.clone();
            let shared = shared.clone();
            let thread = thread::Builder::new()
                .name("stowage-sqlite".into())
                .spawn(move || writer_thread(&config, &shared, &receiver, opened_tx))
                .map_err(|e| {
                    Error::unavailable("connect: cannot start the SQLite thread").with_source(e)
                })?;
            threads.push(thread);
            opened.push(opened_rx);
        }
        LaneKind::Readers => {
            let receiver = Arc::new(Mutex::new(receiver));
            for _ in 0..READERS {
                let (opened_tx, opened_rx) = oneshot::channel();
                let config = config.clone();
                let receiver = receiver.clone();
                let thread = thread::Builder::new()
                    .name("stowage-sqlite-read".into())
                    .spawn(move || reader_thread(&config, &receiver, opened_tx))
                    .map_err(|e| {
                        Error::unavailable("connect: cannot start a SQLite read thread")
                            .with_source(e)
                    })?;
                threads.push(thread);
                opened.push(opened_rx);
            }
        }
    }
    Ok((sender, threads, opened))
}

/// Answers the jobs already waiting with the error that stopped the thread from opening.
fn fail_waiting(receiver: &mpsc::Receiver<Job>, error: &Error) {
    while let Ok(job) = receiver.try_recv() {
        job.fail(error);
    }
}

fn writer_thread(
    config: &SqliteConfig,
    shared: &Shared,
    receiver: &mpsc::Receiver<Job>,
    opened: oneshot::Sender<Result<()>>,
) {
    let mut conn = match open(config) {
        Ok(conn) => conn,
        Err(e) => {
            fail_waiting(receiver, &e);
            let _ = opened.send(Err(e));
            return;
        }
    };
    let _ = opened.send(Ok(()));
    serve(&mut conn, receiver, config, shared);
}

fn reader_thread(
    config: &SqliteConfig,
    receiver: &Mutex<mpsc::Receiver<Job>>,
    opened: oneshot::Sender<Result<()>>,
) {
    let conn = open(config).and_then(|conn| {
        conn.pragma_update(None, "query_only", true)
            .map_err(|e| error::map("connect", e))?;
        Ok(conn)
    });
    let mut conn = match conn {
        Ok(conn) => conn,
        Err(e) => {
            // Answer `connect` first: another reader may hold the channel's lock while it waits
            // for a job, so this one only drains what it can take without waiting.
            let waiting = e.clone();
            let _ = opened.send(Err(e));
            if let Ok(receiver) = receiver.try_lock() {
                fail_waiting(&receiver, &waiting);
            }
            return;
        }
    };
    let _ = opened.send(Ok(()));
    let mut busy = BusyTimeout::default();
    loop {
        let job = lock(receiver).recv();
        match job {
            Ok(Job::Plain(job)) => {
                if !job.ticket().start() {
                    continue; // its caller has been told `Unavailable`
                }
                match busy.set(&conn, config, job.ticket().deadline) {
                    Ok(()) => job.run(&mut conn),
                    Err(e) => job.fail(&e),
                }
            }
            Ok(Job::Write(job)) => job.finish(&Err(Error::internal(
                "a write was sent to a SQLite read thread",
            ))),
            Ok(Job::Die) => panic!("test hook: a SQLite read thread dies"),
            Err(_) => return,
        }
    }
}

/// A read-only connection for [`Worker::read_now`]: fails at once where it would wait for a lock,
/// and never checkpoints when it closes (a checkpoint on close takes the file's exclusive lock
/// when it is the last connection: that is for the writer and the reader threads to do).
fn open_now_reader(config: &SqliteConfig) -> Result<Connection> {
    let op = "connect";
    let conn = open(config)?;
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, true)
        .map_err(|e| error::map(op, e))?;
    conn.pragma_update(None, "query_only", true)
        .map_err(|e| error::map(op, e))?;
    conn.busy_timeout(Duration::ZERO)
        .map_err(|e| error::map(op, e))?;
    Ok(conn)
}

/// The busy timeout last given to a connection, so it is set again only when it changes.
#[derive(Debug, Default)]
struct BusyTimeout(Option<Duration>);

impl BusyTimeout {
    /// The configured busy timeout, cut to what is left until `deadline` (whole milliseconds).
    fn set(&mut self, conn: &Connection, config: &SqliteConfig, deadline: Instant) -> Result<()> {
        let left = deadline.saturating_duration_since(Instant::now());
        let wait = config.busy_timeout.min(left);
        let wait = Duration::from_millis(u64::try_from(wait.as_millis()).unwrap_or(u64::MAX));
        if self.0 != Some(wait) {
            conn.busy_timeout(wait)
                .map_err(|e| error::map("busy timeout", e))?;
            self.0 = Some(wait);
        }
        Ok(())
    }
}

/// How long the writer polls for the next job before it sleeps: a caller that sends its next
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

/// The writer's loop: ends when every sender is gone, i.e. when the backend is dropped.
fn serve(
    conn: &mut Connection,
    receiver: &mpsc::Receiver<Job>,
    config: &SqliteConfig,
    shared: &Shared,
) {
    let max_batch = config.max_batch.max(1);
    let mut busy = BusyTimeout::default();
    let mut next = receiver.recv().ok();
    while let Some(job) = next.take() {
        match job {
            Job::Plain(job) => {
                if job.ticket().start() {
                    let ready = ensure_autocommit(conn, config, shared, &mut busy)
                        .and_then(|()| busy.set(conn, config, job.ticket().deadline));
                    match ready {
                        Ok(()) => job.run(conn),
                        Err(e) => job.fail(&e),
                    }
                }
            }
            Job::Write(first) => {
                let mut batch = vec![first];
                while batch.len() < max_batch {
                    match receiver.try_recv() {
                        Ok(Job::Write(w)) => batch.push(w),
                        Ok(other) => {
                            next = Some(other);
                            break;
                        }
                        Err(_) => break,
                    }
                }
                commit_batch(conn, batch, config, shared, &mut busy);
            }
            Job::Die => panic!("test hook: the SQLite writer thread dies"),
        }
        if next.is_none() {
            next = next_job(receiver);
        }
    }
}

/// Makes sure `conn` is outside any transaction before the writer starts one: a transaction left
/// open (a `ROLLBACK` that failed) is rolled back; if that fails too, the connection is closed
/// (which rolls it back and frees its locks) and a new one opened. An in-memory database cannot be
/// reopened without losing it: its writes are then refused with `Unavailable`.
fn ensure_autocommit(
    conn: &mut Connection,
    config: &SqliteConfig,
    shared: &Shared,
    busy: &mut BusyTimeout,
) -> Result<()> {
    if conn.is_autocommit() {
        return Ok(());
    }
    let forced_failure = shared.fail_next_rollback.swap(false, Ordering::Relaxed);
    if !forced_failure && conn.execute_batch("ROLLBACK").is_ok() && conn.is_autocommit() {
        return Ok(());
    }
    match config.location {
        SqliteLocation::Memory => Err(Error::unavailable(
            "write: the in-memory SQLite connection is stuck in a transaction that cannot be rolled \
             back, and cannot be reopened without losing the database",
        )),
        SqliteLocation::File(_) => {
            let fresh = open(config)?;
            drop(std::mem::replace(conn, fresh));
            // The new connection has the configured busy timeout, not the one last set.
            *busy = BusyTimeout::default();
            Ok(())
        }
    }
}

/// Runs one statement through the statement cache (no re-parsing on every commit).
/// Runs one cached statement without parameters (transaction control); its error names `op`.
pub(crate) fn exec(conn: &Connection, op: &str, sql: &str) -> Result<()> {
    conn.prepare_cached(sql)
        .and_then(|mut s| s.execute([]))
        .map(|_| ())
        .map_err(|e| error::map(op, e))
}

/// One transaction and one commit for the whole batch, then every caller is answered. With more
/// than one write, each runs in its own savepoint so a failure undoes only itself; a lone write
/// needs no savepoint (its failure rolls the transaction back). Jobs whose callers gave up, or
/// whose deadline passed, before the write lock was taken never run.
fn commit_batch(
    conn: &mut Connection,
    mut batch: Vec<Box<dyn WriteJob>>,
    config: &SqliteConfig,
    shared: &Shared,
    busy: &mut BusyTimeout,
) {
    batch.retain(|job| job.ticket().wanted());
    let Some(latest) = batch.iter().map(|job| job.ticket().deadline).max() else {
        return;
    };
    let counters = &shared.counters;
    counters.commits.fetch_add(1, Ordering::Relaxed);
    counters.writes.fetch_add(
        u64::try_from(batch.len()).unwrap_or(u64::MAX),
        Ordering::Relaxed,
    );
    let lone = batch.len() == 1;
    let mut started = vec![false; batch.len()];
    let commit = (|| {
        ensure_autocommit(conn, config, shared, busy)?;
        busy.set(conn, config, latest)?;
        exec(conn, "commit", "BEGIN IMMEDIATE")?;
        let mut kept = 0usize;
        for (job, started) in batch.iter_mut().zip(started.iter_mut()) {
            if !job.ticket().start() {
                continue; // its caller has been (or is being) told `Unavailable`
            }
            *started = true;
            if lone {
                kept += usize::from(job.run(conn));
                continue;
            }
            exec(conn, "commit", "SAVEPOINT stowage_write")?;
            if job.run(conn) {
                kept += 1;
            } else {
                exec(conn, "commit", "ROLLBACK TO stowage_write")?;
            }
            exec(conn, "commit", "RELEASE stowage_write")?;
        }
        if kept == 0 {
            exec(conn, "commit", "ROLLBACK")
        } else {
            exec(conn, "commit", "COMMIT")
        }
    })();
    if commit.is_err() && !conn.is_autocommit() {
        // If this fails too, the next transaction's `ensure_autocommit` reopens the connection.
        let _ = conn.execute_batch("ROLLBACK");
    }
    for (job, started) in batch.into_iter().zip(started) {
        // A job not started was either given up (its caller got `Unavailable`; it never ran) or
        // never reached because the transaction failed first: that one gets the failure.
        if started || (commit.is_err() && job.ticket().is_queued()) {
            job.finish(&commit);
        }
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
        SqliteLocation::File(path) => {
            Connection::open(path).map_err(|e| error::map_open(op, path, e))?
        }
        SqliteLocation::Memory => Connection::open_in_memory().map_err(|e| error::map(op, e))?,
    };
    let busy_timeout = config.busy_timeout.min(config.operation_timeout);
    conn.busy_timeout(busy_timeout)
        .map_err(|e| error::map(op, e))?;
    if let SqliteLocation::File(_) = config.location {
        enable_wal(&conn, busy_timeout).map_err(|e| error::map(op, e))?;
    }
    let synchronous = match config.synchronous {
        Synchronous::Full => "FULL",
        Synchronous::Normal => "NORMAL",
    };
    conn.pragma_update(None, "synchronous", synchronous)
        .map_err(|e| error::map(op, e))?;
    conn.set_prepared_statement_cache_capacity(64);
    // Without the query planner stability guarantee, SQLite (built with STAT4) re-prepares a
    // statement whenever a parameter compared to an indexed column by a range changes: the clock
    // in the dedup clean-up and in `pending`, i.e. on every report (a quarter of the writer's time
    // under load, by `perf`). There are no statistics to plan with (no ANALYZE): plans are equal.
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG, true)
        .map_err(|e| error::map(op, e))?;
    Ok(conn)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ticket_given_up_never_starts() {
        let ticket = Ticket::new(Duration::from_secs(60));
        assert!(ticket.wanted());
        assert!(ticket.abandon());
        assert!(ticket.abandon(), "giving up twice still says it never runs");
        assert!(!ticket.wanted());
        assert!(!ticket.start());
    }

    #[test]
    fn a_started_ticket_cannot_be_given_up() {
        let ticket = Ticket::new(Duration::from_secs(60));
        assert!(ticket.start());
        assert!(!ticket.abandon());
        assert!(!ticket.start(), "a job starts once");
    }

    #[test]
    fn a_ticket_past_its_deadline_never_starts() {
        let ticket = Ticket::new(Duration::ZERO);
        assert!(!ticket.wanted());
        assert!(!ticket.start());
        assert!(ticket.abandon());
    }
}
