//! Worker processes for the cross-process tests: the test binary re-runs itself
//! (`current_exe() --exact <worker test> --ignored --nocapture`), the worker test
//! connects, prints [`READY`] and waits for a `go` line on its standard input. Every
//! dial a worker's provider receives is appended to a [`DialLog`] file shared by
//! all processes, so the tests count dials outside the store.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use callcat_core::{
    Call, CallId, DialAccepted, ProviderCall, ProviderCapabilities, Result, Simulator,
    TelephonyProvider,
};
use tokio::sync::watch;

/// The line a worker prints once it is set up.
pub const READY: &str = "callcat-worker-ready";

/// An append-only file of `<call id> <worker>` lines, one per dial request.
#[derive(Debug)]
pub struct DialLog {
    file: File,
    worker: String,
}

impl DialLog {
    /// Opens (creating) `path` with `O_APPEND`: every line is one `write`, so lines
    /// appended by concurrent processes never interleave.
    pub fn open(path: &Path, worker: &str) -> std::io::Result<Self> {
        let file = OpenOptions::new().append(true).create(true).open(path)?;
        Ok(DialLog {
            file,
            worker: worker.to_owned(),
        })
    }

    /// Appends one line for `id` in a single write.
    pub fn append(&self, id: CallId) -> std::io::Result<()> {
        let line = format!("{id} {}\n", self.worker);
        let written = (&self.file).write(line.as_bytes())?;
        if written != line.len() {
            return Err(std::io::Error::other(format!(
                "short append to the dial log: {written} of {} bytes",
                line.len()
            )));
        }
        Ok(())
    }

    /// Every line of the log at `path`: (call id, worker). A missing file is empty.
    pub fn read(path: &Path) -> Vec<(CallId, String)> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => panic!("read the dial log {}: {e}", path.display()),
        };
        text.lines()
            .map(|l| {
                let (id, worker) = l
                    .split_once(' ')
                    .unwrap_or_else(|| panic!("malformed dial log line {l:?}"));
                let id: CallId = id
                    .parse()
                    .unwrap_or_else(|e| panic!("malformed call id in {l:?}: {e}"));
                (id, worker.to_owned())
            })
            .collect()
    }

    /// Dials per worker, from the log's lines.
    pub fn per_worker(lines: &[(CallId, String)]) -> HashMap<String, usize> {
        let mut counts = HashMap::new();
        for (_, w) in lines {
            *counts.entry(w.clone()).or_insert(0) += 1;
        }
        counts
    }
}

/// A scratch directory, removed on drop.
pub struct ScratchDir(pub PathBuf);

impl ScratchDir {
    pub fn new(prefix: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("{prefix}-{}", uuid::Uuid::now_v7().simple()));
        std::fs::create_dir_all(&dir).expect("create scratch dir");
        ScratchDir(dir)
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The simulator, with every dial request appended to a [`DialLog`] before the
/// simulator sees it.
///
/// Each process has a simulator of its own, and simulators number their calls
/// from `sim_00000001`: the provider call ids get the log's worker name as a
/// prefix, so they are unique across processes as a real provider's are (the
/// store keeps provider call ids unique).
pub struct LoggingProvider {
    inner: Simulator,
    log: DialLog,
    prefix: String,
    dials: watch::Sender<usize>,
}

impl LoggingProvider {
    pub fn new(inner: Simulator, log: DialLog) -> Self {
        LoggingProvider {
            inner,
            prefix: format!("{}-", log.worker),
            log,
            dials: watch::channel(0).0,
        }
    }

    /// The simulator's own id for one of ours.
    fn sim_id<'a>(&self, provider_call_id: &'a str) -> &'a str {
        provider_call_id
            .strip_prefix(self.prefix.as_str())
            .unwrap_or(provider_call_id)
    }

    fn ours(&self, mut call: ProviderCall) -> ProviderCall {
        call.provider_call_id = format!("{}{}", self.prefix, call.provider_call_id);
        call
    }

    /// How many dial requests this provider received.
    pub fn dials(&self) -> usize {
        *self.dials.borrow()
    }

    /// Resolves once at least `n` dial requests arrived.
    pub async fn wait_for_dials(&self, n: usize) {
        let mut rx = self.dials.subscribe();
        let _ = rx.wait_for(|c| *c >= n).await;
    }
}

#[async_trait::async_trait]
impl TelephonyProvider for LoggingProvider {
    fn name(&self) -> &str {
        self.inner.name()
    }
    fn capabilities(&self) -> ProviderCapabilities {
        self.inner.capabilities()
    }
    async fn place_call(&self, call: &Call) -> Result<DialAccepted> {
        self.log
            .append(call.id)
            .unwrap_or_else(|e| panic!("append to the dial log: {e}"));
        self.dials.send_modify(|n| *n += 1);
        let accepted = self.inner.place_call(call).await?;
        Ok(DialAccepted {
            provider_call_id: format!("{}{}", self.prefix, accepted.provider_call_id),
        })
    }
    async fn fetch_call(&self, provider_call_id: &str) -> Result<ProviderCall> {
        let found = self.inner.fetch_call(self.sim_id(provider_call_id)).await?;
        Ok(self.ours(found))
    }
    async fn end_call(&self, provider_call_id: &str) -> Result<()> {
        self.inner.end_call(self.sim_id(provider_call_id)).await
    }
    async fn find_by_call_id(&self, call_id: CallId) -> Result<Option<ProviderCall>> {
        let found = self.inner.find_by_call_id(call_id).await?;
        Ok(found.map(|c| self.ours(c)))
    }
}

/// Worker side: the value of `var` when this process is a worker, `None` otherwise
/// (the ignored worker test then returns at once).
pub fn worker_env(var: &str) -> Option<String> {
    std::env::var(var).ok().filter(|v| !v.is_empty())
}

/// Worker side: a required variable set by the parent.
pub fn required_env(var: &str) -> String {
    std::env::var(var).unwrap_or_else(|_| panic!("worker started without {var}"))
}

/// Worker side: tells the parent this worker is set up.
pub fn announce_ready() {
    println!("{READY}");
    std::io::stdout().flush().expect("flush stdout");
}

/// Worker side: tells the parent this worker is set up, then blocks until it says go.
pub async fn ready_then_wait_for_go() {
    announce_ready();
    tokio::task::spawn_blocking(|| {
        let mut line = String::new();
        std::io::stdin()
            .read_line(&mut line)
            .expect("read go from stdin");
        assert_eq!(line.trim(), "go", "the parent said {line:?} instead of go");
    })
    .await
    .expect("stdin reader");
}

/// Parent side: one worker process (killed if still running when dropped).
pub struct Worker {
    pub name: String,
    child: Child,
    stdin: Option<ChildStdin>,
    ready: mpsc::Receiver<()>,
}

impl Worker {
    /// Re-runs this test binary as `test` (an ignored worker test) with `envs`.
    /// Its standard output is echoed to stderr prefixed with `name`.
    pub fn spawn(name: &str, test: &str, envs: &[(&str, String)]) -> Worker {
        let exe = std::env::current_exe().expect("current test binary");
        let mut child = Command::new(exe)
            .args(["--exact", test, "--ignored", "--nocapture"])
            .envs(envs.iter().map(|(k, v)| (*k, v.as_str())))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn worker process");
        let stdout = child.stdout.take().expect("piped stdout");
        let stdin = child.stdin.take();
        let (tx, ready) = mpsc::channel();
        let prefix = name.to_owned();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if line.trim() == READY {
                    let _ = tx.send(());
                } else {
                    eprintln!("[{prefix}] {line}");
                }
            }
        });
        Worker {
            name: name.to_owned(),
            child,
            stdin,
            ready,
        }
    }

    /// Blocks until the worker printed [`READY`]; panics after `patience` or if it
    /// exited first.
    pub fn wait_ready(&mut self, patience: Duration) {
        match self.ready.recv_timeout(patience) {
            Ok(()) => {}
            Err(mpsc::RecvTimeoutError::Timeout) => {
                panic!("{} was not ready within {patience:?}", self.name)
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => panic!(
                "{} exited before it was ready: {:?}",
                self.name,
                self.child.try_wait()
            ),
        }
    }

    /// Lets the worker start.
    pub fn go(&mut self) {
        let stdin = self.stdin.as_mut().expect("stdin still open");
        stdin.write_all(b"go\n").expect("write go");
        stdin.flush().expect("flush go");
    }

    /// Waits (polling the process, no longer than until `deadline`) for the worker to
    /// exit; `None` (after killing it) if it was still running at the deadline.
    pub async fn wait_until(&mut self, deadline: Instant) -> Option<ExitStatus> {
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return Some(status);
            }
            if Instant::now() >= deadline {
                self.kill();
                return None;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn kill(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.kill();
    }
}
