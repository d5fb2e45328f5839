//! Throwaway servers for tests, benchmarks and the CLI: started on loopback ports in temp dirs,
//! stopped when the process that started them exits (even when it is killed).
//!
//! Each server is watched by a small shell process that holds the read end of a pipe whose write
//! end lives in this process; when this process exits, the pipe closes and the watcher stops the
//! server and removes its directory.

pub mod postgres;
pub mod resp;
pub mod valkey;

use std::io::Write;
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::OnceLock;

/// Stops and starts a server under test (the outage scenarios crash it and bring it back).
pub trait ServerControl: Send + Sync {
    /// Stops it abruptly (a crash: immediate shutdown or SIGKILL).
    fn stop(&self) -> Result<(), String>;
    /// Starts it again on the same data.
    fn start(&self) -> Result<(), String>;
}

/// A free TCP port on 127.0.0.1 (bound, then released for the server to take).
pub fn free_port() -> Result<u16, String> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("bind: {e}"))?;
    listener
        .local_addr()
        .map(|a| a.port())
        .map_err(|e| format!("local_addr: {e}"))
}

/// The unprivileged user servers run as when this process is root (PostgreSQL refuses root).
pub fn service_user() -> Option<String> {
    let uid = Command::new("id").arg("-u").output().ok()?;
    if String::from_utf8_lossy(&uid.stdout).trim() != "0" {
        return None;
    }
    for user in ["postgres", "nobody"] {
        if Command::new("id")
            .arg(user)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
        {
            return Some(user.to_owned());
        }
    }
    None
}

/// A command that runs `program` as `user` (via runuser) when given, else as this process's user.
pub fn command_as(user: Option<&str>, program: &Path) -> Command {
    match user {
        Some(user) => {
            let mut c = Command::new("runuser");
            c.args(["-u", user, "--"]).arg(program);
            c
        }
        None => Command::new(program),
    }
}

/// Gives `dir` (recursively) to `user`.
pub fn chown(user: Option<&str>, dir: &Path) -> Result<(), String> {
    if let Some(user) = user {
        run(Command::new("chown").arg("-R").arg(user).arg(dir), "chown")?;
    }
    Ok(())
}

/// Runs a command to completion; a failure carries its output.
pub fn run(command: &mut Command, what: &str) -> Result<String, String> {
    let out = command
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{what}: cannot start: {e}"))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if out.status.success() {
        Ok(text)
    } else {
        Err(format!("{what} failed ({}): {text}", out.status))
    }
}

/// Runs `script` (sh) when this process exits; dropping the guard runs it too.
#[derive(Debug)]
pub struct ExitWatch {
    child: Child,
    stdin: Option<ChildStdin>,
}

impl ExitWatch {
    /// Starts `sh -c 'read _; <script>'` as `user`; the script runs once our end of the pipe closes.
    pub fn start(user: Option<&str>, script: &str) -> Result<ExitWatch, String> {
        let mut command = command_as(user, Path::new("sh"));
        let mut child = command
            .arg("-c")
            .arg(format!("read _ignored; {script}"))
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("exit watcher: {e}"))?;
        let stdin = child.stdin.take();
        Ok(ExitWatch { child, stdin })
    }

    /// Runs the script now and waits for it.
    pub fn fire(&mut self) {
        if let Some(mut stdin) = self.stdin.take() {
            let _ = writeln!(stdin, "stop");
        }
        let _ = self.child.wait();
    }
}

impl Drop for ExitWatch {
    fn drop(&mut self) {
        self.fire();
    }
}

/// The server (or cluster) every test of a process shares: the URL an environment variable names,
/// else one started on first use and kept running until the process exits.
#[derive(Debug)]
pub(crate) struct Shared<S> {
    url: OnceLock<Result<String, String>>,
    server: OnceLock<S>,
}

impl<S> Shared<S> {
    /// Nothing started yet.
    pub(crate) const fn new() -> Self {
        Shared {
            url: OnceLock::new(),
            server: OnceLock::new(),
        }
    }

    /// `env`'s URL if set, else the URL of the server `start` gives (started once, on first use);
    /// a failure to start is remembered and answered again.
    pub(crate) fn url(
        &self,
        env: &str,
        start: impl FnOnce() -> Result<(String, S), String>,
    ) -> Result<String, String> {
        self.url
            .get_or_init(|| {
                if let Ok(url) = std::env::var(env) {
                    return Ok(url);
                }
                let (url, server) = start()?;
                let _ = self.server.set(server);
                Ok(url)
            })
            .clone()
    }
}
