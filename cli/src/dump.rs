//! `stowage export`, `import`, `digest`, `copy` and `purge`: moving a namespace from one store to
//! another (SEMANTICS §4.5, `docs/dump-format.md`).
//!
//! Summaries and progress go to standard error (standard output may be the dump); `digest` prints
//! the digest on standard output. Bad input (a bad URL, an existing output file without
//! `--force`, a non-empty target, a refused dump line) exits with status 2, an unavailable store
//! or any other failure with status 1. When an import or a copy fails after it started writing,
//! the target may hold part of the data: the command says so and prints the `purge` command that
//! empties it (the target was checked empty before anything was written, so purging it loses
//! nothing that was there before).

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Args;
use stowage::{Backend, CopyProgress, DumpSummary, Error, Result, DEFAULT_NAMESPACE};
use tokio::io::{AsyncBufRead, BufReader, BufWriter};

use crate::admin::connect;

/// The buffer between a dump file (or standard input/output) and the store.
const IO_BUFFER: usize = 1 << 20;

/// How often a progress line is printed when standard error is not a terminal.
const LOG_EVERY: Duration = Duration::from_secs(5);

/// Arguments of `stowage export`.
#[derive(Debug, Args)]
pub struct ExportArgs {
    /// The store, e.g. sqlite://app.db, postgres://user@host/db, valkey://host:6379.
    url: String,
    /// Write the dump to this file (default: standard output). It is written beside FILE and
    /// renamed onto it once complete, so FILE is never a partial dump.
    #[arg(long, short, value_name = "FILE")]
    output: Option<PathBuf>,
    /// Replace FILE if it exists (without it, an existing FILE is an error).
    #[arg(long, requires = "output")]
    force: bool,
    /// The namespace (default: "default").
    #[arg(long)]
    namespace: Option<String>,
}

/// Arguments of `stowage import`.
#[derive(Debug, Args)]
pub struct ImportArgs {
    /// The store; its namespace must be empty.
    url: String,
    /// Read the dump from this file (default: standard input).
    #[arg(long, short, value_name = "FILE")]
    input: Option<PathBuf>,
    /// The namespace (default: "default").
    #[arg(long)]
    namespace: Option<String>,
}

/// Arguments of `stowage digest`.
#[derive(Debug, Args)]
pub struct DigestArgs {
    /// The store.
    url: String,
    /// The namespace (default: "default").
    #[arg(long)]
    namespace: Option<String>,
}

/// Arguments of `stowage copy`.
#[derive(Debug, Args)]
pub struct CopyArgs {
    /// The store to copy from.
    from: String,
    /// The store to copy into; its namespace must be empty.
    to: String,
    /// The namespace to copy (default: "default"); also the target's unless --to-namespace.
    #[arg(long)]
    namespace: Option<String>,
    /// The target's namespace (default: the same as --namespace).
    #[arg(long, value_name = "NAMESPACE")]
    to_namespace: Option<String>,
    /// After the copy, compare the digests of both ends; exit with status 1 if they differ.
    #[arg(long)]
    verify: bool,
}

/// Arguments of `stowage purge`.
#[derive(Debug, Args)]
pub struct PurgeArgs {
    /// The store.
    url: String,
    /// The namespace to destroy (required: name it, even "default").
    #[arg(long, required = true)]
    namespace: String,
    /// Confirm: everything of the namespace is destroyed.
    #[arg(long)]
    yes: bool,
}

/// The name a namespace option stands for.
fn namespace_name(namespace: Option<&str>) -> &str {
    namespace.unwrap_or(DEFAULT_NAMESPACE)
}

/// `url` with the password of its user info (`scheme://user:password@host`) hidden, for messages.
pub(crate) fn shown_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((user_info, host)) => match user_info.split_once(':') {
            Some((user, _password)) => format!("{scheme}://{user}:***@{host}{path}"),
            None => url.to_owned(),
        },
        None => url.to_owned(),
    }
}

/// A count per second over `elapsed`, in whole units (0 before a millisecond has passed).
fn per_second(count: u64, elapsed: Duration) -> u128 {
    let millis = elapsed.as_millis();
    if millis == 0 {
        return 0;
    }
    u128::from(count) * 1000 / millis
}

/// `bytes` as megabytes (10^6) with one decimal.
fn megabytes(bytes: u128) -> String {
    let tenths = bytes / 100_000;
    format!("{}.{}", tenths / 10, tenths % 10)
}

/// Items, bytes, rates and elapsed time, as the progress line and the summaries show them.
fn rates(items: u64, bytes: u64, elapsed: Duration) -> String {
    format!(
        "{items} items, {} MB, {} items/s, {} MB/s, {:.1}s",
        megabytes(u128::from(bytes)),
        per_second(items, elapsed),
        megabytes(per_second(bytes, elapsed)),
        elapsed.as_secs_f64()
    )
}

/// Runs `stowage export`.
pub async fn export(args: ExportArgs) -> Result<ExitCode> {
    let ns = namespace_name(args.namespace.as_deref());
    let started = Instant::now();
    let summary = match &args.output {
        None => {
            let store = connect(&args.url, args.namespace.as_deref()).await?;
            let mut out = BufWriter::with_capacity(IO_BUFFER, tokio::io::stdout());
            store.export(&mut out).await?
        }
        Some(path) => {
            if !args.force && path.exists() {
                return Err(Error::invalid_input(format!(
                    "export: {} exists; give --force to replace it",
                    path.display()
                )));
            }
            let store = connect(&args.url, args.namespace.as_deref()).await?;
            export_to_file(store.as_ref(), path).await?
        }
    };
    let to = args
        .output
        .as_ref()
        .map_or_else(|| "standard output".to_owned(), |p| p.display().to_string());
    eprintln!(
        "exported namespace {ns} of {} to {to}: {}; exported_at {}",
        shown_url(&args.url),
        rates(summary.items, summary.bytes, started.elapsed()),
        summary.exported_at
    );
    Ok(ExitCode::SUCCESS)
}

/// Exports into a file beside `path`, then renames it onto `path`; removes it on failure.
async fn export_to_file(store: &dyn Backend, path: &Path) -> Result<DumpSummary> {
    let file_name = path
        .file_name()
        .ok_or_else(|| {
            Error::invalid_input(format!("export: {} is not a file name", path.display()))
        })?
        .to_string_lossy()
        .into_owned();
    let aside = path.with_file_name(format!(".{file_name}.partial-{}", std::process::id()));
    let file = tokio::fs::File::create(&aside).await.map_err(|e| {
        Error::invalid_input(format!("export: cannot create {}: {e}", aside.display()))
    })?;
    let written = async {
        let mut out = BufWriter::with_capacity(IO_BUFFER, file);
        let summary = store.export(&mut out).await?;
        let cannot = |e: std::io::Error| {
            Error::unavailable(format!("export: cannot write {}", aside.display())).with_source(e)
        };
        out.get_mut().sync_all().await.map_err(cannot)?;
        tokio::fs::rename(&aside, path).await.map_err(cannot)?;
        Ok(summary)
    }
    .await;
    if written.is_err() {
        // The partial file is the only trace of the failed export: say so if it stays.
        if let Err(e) = tokio::fs::remove_file(&aside).await {
            if e.kind() != std::io::ErrorKind::NotFound {
                eprintln!(
                    "stowage: cannot remove the partial {}: {e}",
                    aside.display()
                );
            }
        }
    }
    written
}

/// Runs `stowage import`.
pub async fn import(args: ImportArgs) -> Result<ExitCode> {
    let ns = namespace_name(args.namespace.as_deref());
    let mut input: Box<dyn AsyncBufRead + Unpin + Send> = match &args.input {
        Some(path) => {
            let file = tokio::fs::File::open(path).await.map_err(|e| {
                Error::invalid_input(format!("import: cannot read {}: {e}", path.display()))
            })?;
            Box::new(BufReader::with_capacity(IO_BUFFER, file))
        }
        None => Box::new(BufReader::with_capacity(IO_BUFFER, tokio::io::stdin())),
    };
    let store = connect(&args.url, args.namespace.as_deref()).await?;
    require_empty(store.as_ref(), "import", &args.url, ns).await?;
    let started = Instant::now();
    match store.import(&mut input).await {
        Ok(summary) => {
            eprintln!(
                "imported into namespace {ns} of {}: {}; the dump was exported at {}",
                shown_url(&args.url),
                rates(summary.items, summary.bytes, started.elapsed()),
                summary.exported_at
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => Ok(failed_after_start(&e, &args.url, ns)),
    }
}

/// Runs `stowage digest`.
pub async fn digest(args: DigestArgs) -> Result<ExitCode> {
    let store = connect(&args.url, args.namespace.as_deref()).await?;
    println!("{}", store.digest().await?);
    Ok(ExitCode::SUCCESS)
}

/// Runs `stowage purge`.
pub async fn purge(args: PurgeArgs) -> Result<ExitCode> {
    if !args.yes {
        return Err(Error::invalid_input(format!(
            "purge destroys every record, policy, counter, hold and dedup record of namespace {} \
             at {}; give --yes to confirm",
            args.namespace,
            shown_url(&args.url)
        )));
    }
    let store = connect(&args.url, Some(&args.namespace)).await?;
    store.purge().await?;
    eprintln!(
        "purged namespace {} of {}",
        args.namespace,
        shown_url(&args.url)
    );
    Ok(ExitCode::SUCCESS)
}

/// Runs `stowage copy`.
pub async fn copy(args: CopyArgs) -> Result<ExitCode> {
    let from_ns = namespace_name(args.namespace.as_deref());
    let to_ns = args.to_namespace.as_deref().unwrap_or(from_ns);
    if args.from == args.to && from_ns == to_ns {
        return Err(Error::invalid_input(format!(
            "copy: the source and the target are both namespace {from_ns} of {}",
            shown_url(&args.from)
        )));
    }
    let from = connect(&args.from, Some(from_ns)).await?;
    let to = connect(&args.to, Some(to_ns)).await?;
    require_empty(to.as_ref(), "copy", &args.to, to_ns).await?;
    let mut meter = Meter::new(std::io::stderr().is_terminal());
    let copied = stowage::copy(from.as_ref(), to.as_ref(), &mut |p| meter.show(p)).await;
    meter.finish();
    let summary = match copied {
        Ok(summary) => summary,
        Err(e) => return Ok(failed_after_start(&e, &args.to, to_ns)),
    };
    eprintln!(
        "copied namespace {from_ns} of {} to namespace {to_ns} of {}: {}",
        shown_url(&args.from),
        shown_url(&args.to),
        rates(summary.items, summary.bytes, meter.started.elapsed())
    );
    if args.verify {
        let (source, target) = tokio::try_join!(from.digest(), to.digest())?;
        if source != target {
            eprintln!(
                "error: the digests differ: {source} (source) vs {target} (target); \
                 was the source written to during the copy?"
            );
            return Ok(ExitCode::FAILURE);
        }
        eprintln!("verified: both ends have digest {source}");
    }
    Ok(ExitCode::SUCCESS)
}

/// Refuses (`InvalidInput`) a target whose namespace holds anything, before anything is written.
async fn require_empty(store: &dyn Backend, op: &str, url: &str, ns: &str) -> Result<()> {
    if store.is_empty().await? {
        return Ok(());
    }
    Err(Error::invalid_input(format!(
        "{op}: namespace {ns} of {} is not empty; {op} only into an empty namespace (another \
         --namespace, or `stowage purge URL --namespace {ns} --yes` if its data may go)",
        shown_url(url)
    )))
}

/// Prints an import's or a copy's error and, when it may have written part of the data, how to
/// empty the target (which was checked empty before); gives the exit status.
fn failed_after_start(e: &Error, url: &str, ns: &str) -> ExitCode {
    eprintln!("error: {e}");
    // Nothing is written past a rejected header (line 1).
    if e.line() != Some(1) {
        eprintln!(
            "note: namespace {ns} of {} may now hold part of the data (it was empty before this \
             command). Empty it before trying again:\n  stowage purge {} --namespace {ns} --yes",
            shown_url(url),
            shown_url(url)
        );
    }
    crate::exit_code(e)
}

/// The progress line of a copy: redrawn in place on a terminal, a line every few seconds
/// otherwise.
#[derive(Debug)]
struct Meter {
    terminal: bool,
    started: Instant,
    next_line: Duration,
    drawn: bool,
}

impl Meter {
    fn new(terminal: bool) -> Self {
        Meter {
            terminal,
            started: Instant::now(),
            next_line: LOG_EVERY,
            drawn: false,
        }
    }

    fn show(&mut self, p: CopyProgress) {
        // The header is a line but not an item.
        let text = format!(
            "copying: {}",
            rates(p.lines.saturating_sub(1), p.bytes, p.elapsed)
        );
        if self.terminal {
            eprint!("\r{text}\x1b[K");
            self.drawn = true;
        } else if p.elapsed >= self.next_line {
            eprintln!("{text}");
            while self.next_line <= p.elapsed {
                self.next_line += LOG_EVERY;
            }
        }
    }

    /// Clears the progress line, so the summary takes its place.
    fn finish(&mut self) {
        if self.drawn {
            eprint!("\r\x1b[K");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_hidden_in_messages() {
        assert_eq!(
            shown_url("postgres://app:s3cret@db:5432/app?sslmode=require"),
            "postgres://app:***@db:5432/app?sslmode=require"
        );
        assert_eq!(shown_url("postgres://app@db/app"), "postgres://app@db/app");
        assert_eq!(shown_url("sqlite://app.db"), "sqlite://app.db");
        assert_eq!(shown_url("valkey://:pw@h:6379"), "valkey://:***@h:6379");
        assert_eq!(shown_url("sqlite::memory:"), "sqlite::memory:");
    }

    #[test]
    fn rates_are_whole_units_and_megabytes_with_one_decimal() {
        assert_eq!(per_second(1500, Duration::from_millis(500)), 3000);
        assert_eq!(per_second(10, Duration::ZERO), 0);
        assert_eq!(megabytes(12_345_678), "12.3");
        assert_eq!(
            rates(2000, 3_000_000, Duration::from_secs(2)),
            "2000 items, 3.0 MB, 1000 items/s, 1.5 MB/s, 2.0s"
        );
    }
}
