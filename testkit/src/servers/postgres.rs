//! A throwaway PostgreSQL: `initdb` + `pg_ctl` into a temp dir, listening on a loopback port.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

use super::{chown, command_as, free_port, run, service_user, ExitWatch, Shared};

/// The environment variable that names an existing server instead of starting one.
pub const URL_ENV: &str = crate::env::POSTGRES_URL;

/// How a throwaway server is configured.
#[derive(Debug, Clone, Copy)]
pub struct PostgresSettings {
    /// Keep `fsync` and `full_page_writes` on (crash tests, benchmarks); off is faster for conformance runs.
    pub durable: bool,
    /// With `durable`: wait for the WAL flush before acknowledging a commit (`synchronous_commit`).
    pub synchronous_commit: bool,
    /// `max_connections`.
    pub max_connections: u32,
}

impl Default for PostgresSettings {
    fn default() -> Self {
        PostgresSettings {
            durable: false,
            synchronous_commit: false,
            max_connections: 400,
        }
    }
}

/// A running throwaway server; stopped (immediate mode) and removed when dropped or when the process exits.
#[derive(Debug)]
pub struct PostgresServer {
    url: String,
    port: u16,
    bin: PathBuf,
    data: PathBuf,
    dir: PathBuf,
    user: Option<String>,
    options: String,
    watch: Mutex<ExitWatch>,
}

/// The directory holding `initdb`, `pg_ctl` and `postgres`: `STOWAGE_POSTGRES_BIN`, else the newest `/usr/lib/postgresql/*/bin`.
pub fn bin_dir() -> Result<PathBuf, String> {
    if let Ok(dir) = std::env::var(crate::env::POSTGRES_BIN) {
        return Ok(PathBuf::from(dir));
    }
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .map_err(|e| format!("no PostgreSQL under /usr/lib/postgresql ({e}); install the postgresql package or set {URL_ENV}"))?
        .filter_map(|entry| entry.ok())
        .filter_map(|entry| {
            let version = entry.file_name().to_string_lossy().parse::<u32>().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .collect();
    found.sort();
    found
        .pop()
        .map(|(_, bin)| bin)
        .ok_or_else(|| format!("no initdb under /usr/lib/postgresql/*/bin; install the postgresql package or set {URL_ENV}"))
}

impl PostgresServer {
    /// Initializes and starts a new server.
    pub fn start(settings: PostgresSettings) -> Result<PostgresServer, String> {
        let bin = bin_dir()?;
        let user = service_user();
        let dir = std::env::temp_dir().join(format!(
            "stowage-pg-{}-{}",
            std::process::id(),
            crate::unique_namespace("s")
        ));
        std::fs::create_dir_all(&dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
        let data = dir.join("data");
        chown(user.as_deref(), &dir)?;
        // The watcher is armed first, so even a failed start leaves nothing behind.
        let watch = ExitWatch::start(
            user.as_deref(),
            &format!(
                "'{}' -D '{}' -m immediate -w stop >/dev/null 2>&1; rm -rf '{}'",
                bin.join("pg_ctl").display(),
                data.display(),
                dir.display()
            ),
        )?;
        run(
            command_as(user.as_deref(), &bin.join("initdb"))
                .arg("-D")
                .arg(&data)
                .args([
                    "-U",
                    "stowage",
                    "--auth=trust",
                    "-E",
                    "UTF8",
                    "--locale=C",
                    "--no-sync",
                ]),
            "initdb",
        )?;
        let port = free_port()?;
        let on = |yes: bool| if yes { "on" } else { "off" };
        let options = format!(
            "-p {port} -k {} -c listen_addresses=127.0.0.1 -c max_connections={} -c fsync={fsync} \
             -c synchronous_commit={commit} -c full_page_writes={fsync} -c shared_buffers=128MB",
            dir.display(),
            settings.max_connections,
            fsync = on(settings.durable),
            commit = on(settings.durable && settings.synchronous_commit),
        );
        let server = PostgresServer {
            url: format!("postgres://stowage@127.0.0.1:{port}/postgres"),
            port,
            bin,
            data,
            dir,
            user,
            options,
            watch: Mutex::new(watch),
        };
        server.start_again()?;
        Ok(server)
    }

    /// The URL to connect to (user `stowage`, trust authentication, database `postgres`).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server's data directory.
    pub fn data_dir(&self) -> &Path {
        &self.data
    }

    fn pg_ctl(&self) -> Command {
        command_as(self.user.as_deref(), &self.bin.join("pg_ctl"))
    }

    /// `pg_ctl stop` in `mode`, waiting until the server is down.
    fn pg_ctl_stop(&self, mode: &str) -> Result<(), String> {
        run(
            self.pg_ctl()
                .arg("-D")
                .arg(&self.data)
                .args(["-m", mode, "-w", "stop"]),
            "pg_ctl stop",
        )
        .map(|_| ())
    }

    /// Stops the server at once, as a crash would (`-m immediate`); the data stays.
    pub fn stop_immediate(&self) -> Result<(), String> {
        self.pg_ctl_stop("immediate")
    }

    /// Stops the server the way an orderly restart does (`-m fast`): sessions are told
    /// `57P01 terminating connection due to administrator command`; the data stays.
    pub fn stop_fast(&self) -> Result<(), String> {
        self.pg_ctl_stop("fast")
    }

    /// Starts the (stopped) server again on the same port and data.
    pub fn start_again(&self) -> Result<(), String> {
        run(
            self.pg_ctl()
                .arg("-D")
                .arg(&self.data)
                .arg("-l")
                .arg(self.dir.join("server.log"))
                .args(["-w", "-t", "60", "-o", &self.options, "start"]),
            "pg_ctl start",
        )
        .map(|_| ())
    }
}

impl Drop for PostgresServer {
    fn drop(&mut self) {
        if let Ok(mut watch) = self.watch.lock() {
            watch.fire();
        }
    }
}

/// The server every test of this process shares: `STOWAGE_POSTGRES_URL` if set, else one started on first use.
pub fn shared_url() -> Result<String, String> {
    static SHARED: Shared<PostgresServer> = Shared::new();
    SHARED.url(URL_ENV, || {
        let server = PostgresServer::start(PostgresSettings::default())?;
        Ok((server.url().to_owned(), server))
    })
}

impl super::ServerControl for PostgresServer {
    fn stop(&self) -> Result<(), String> {
        self.stop_immediate()
    }

    fn start(&self) -> Result<(), String> {
        self.start_again()
    }
}
