//! Setup faults answer `Misconfigured` (not retryable): a database file the process may only
//! read, a file or directory it may not open. A file that is not a database is `Corruption`.
//!
//! Root ignores file permissions, so when the tests run as root the permission checks run in a
//! child process (this test binary again) with the uid and gid of `nobody` (65534).

mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};

use stowage_core::{
    BudgetBackend, BudgetPolicy, Checked, ConnectOptions, ErrorKind, PersistenceBackend, Result,
    UsageReport,
};
use stowage_sqlite::SqliteBackend;

const CHILD_ENV: &str = "STOWAGE_SQLITE_SETUP_FAULTS_DIR";
const NOBODY: u32 = 65_534;

async fn open(path: &Path) -> Result<Checked<SqliteBackend>> {
    let backend = SqliteBackend::open(
        &format!("sqlite://{}", path.display()),
        ConnectOptions::new(),
    )
    .await?;
    backend.initialize().await?;
    Ok(backend)
}

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// Files for the checks, made by a user that may write them.
async fn prepare(dir: &Path) {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir.join("closed")).unwrap();
    {
        let backend = open(&dir.join("ro.db")).await.unwrap();
        backend.set_policy("b", &BudgetPolicy::new()).await.unwrap();
    }
    std::fs::write(dir.join("noaccess.db"), b"").unwrap();
    // Readable by everyone, writable by its owner only; the directory likewise, so that no one
    // else can create the WAL files next to it either.
    chmod(&dir.join("ro.db"), 0o444);
    chmod(&dir.join("noaccess.db"), 0o000);
    chmod(&dir.join("closed"), 0o000);
    chmod(dir, 0o755);
}

/// The checks, as a user without write permission on the files.
async fn check(dir: &Path) {
    // Read-only database file: SQLite opens it read-only; writing is SQLITE_READONLY.
    let error = match open(&dir.join("ro.db")).await {
        Ok(backend) => backend
            .report_usage("b", &UsageReport::new().add("t", 1))
            .await
            .unwrap_err(),
        Err(error) => error,
    };
    assert_eq!(error.kind(), ErrorKind::Misconfigured, "{error}");
    assert!(!error.is_retryable());
    // A file it may not open at all, and a directory it may not enter: EACCES at open.
    for path in [dir.join("noaccess.db"), dir.join("closed").join("new.db")] {
        let error = open(&path).await.unwrap_err();
        assert_eq!(error.kind(), ErrorKind::Misconfigured, "{path:?}: {error}");
        assert!(!error.is_retryable());
    }
}

#[tokio::test]
async fn permission_faults_are_misconfigured() {
    if let Ok(dir) = std::env::var(CHILD_ENV) {
        check(Path::new(&dir)).await;
        return;
    }
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("setup-faults-{}", std::process::id()));
    prepare(&dir).await;
    let root = std::fs::metadata("/proc/self").unwrap().uid() == 0;
    if !root {
        check(&dir).await;
        return;
    }
    let output = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "permission_faults_are_misconfigured",
            "--exact",
            "--nocapture",
        ])
        .env(CHILD_ENV, &dir)
        .uid(NOBODY)
        .gid(NOBODY)
        .output()
        .unwrap();
    assert!(
        output.status.success() && String::from_utf8_lossy(&output.stdout).contains("1 passed"),
        "the unprivileged child failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[tokio::test]
async fn a_file_that_is_not_a_database_is_corruption() {
    let url = common::fresh_file_url("garbage");
    let path = PathBuf::from(url.strip_prefix("sqlite://").unwrap());
    std::fs::write(&path, "this is not a SQLite database. ".repeat(200)).unwrap();
    let error = open(&path).await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Corruption, "{error}");
}
