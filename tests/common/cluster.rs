//! Pods as processes: a config-booted Flux instance whose brokers the test starts and
//! kills one by one, as Kubernetes starts and ends the pods of a MiniCluster (see
//! docs/flux-core.md §5). Every broker is a child of the test and is killed when the
//! [`Cluster`] is dropped; everything lives in one scratch directory.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fs::File;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use fluxk8s::model::IdSet;
use serde_json::{Value, json};

use fluxk8s::scenario::flux_core::{Scratch, module_path, transcript};

/// How long any wait in these tests may take before the test fails.
pub const PATIENCE: Duration = Duration::from_secs(30);

/// The host name of rank `rank`; the MiniCluster naming (`<name>-<index>`).
pub fn hostname(prefix: &str, rank: u32) -> String {
    format!("{prefix}-{rank}")
}

/// Who sends a request: the instance owner, or a guest (`FLUX_HANDLE_ROLEMASK=0x2`, as
/// flux-core's own test suite simulates other users).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum As {
    Owner,
    Guest,
}

/// A refused request: errno and the error text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    pub errno: i32,
    pub message: String,
}

/// One config-booted instance of `max_size` configured hosts `<prefix>-[0-N]`.
pub struct Cluster {
    flux: PathBuf,
    scratch: Scratch,
    prefix: String,
    max_size: u32,
    /// Behind a lock so a pod bridge thread can start and kill brokers while the test
    /// sends requests through the same `Cluster`.
    brokers: Mutex<BTreeMap<u32, Child>>,
    env: Vec<(String, String)>,
}

impl Cluster {
    /// Writes the configuration (curve certificate, R, `[bootstrap]` with an ipc:// bind
    /// for rank 0 so parallel tests never share a port, and `extra_toml` appended).
    pub fn new(flux: &Path, tag: &str, prefix: &str, max_size: u32, extra_toml: &str) -> Cluster {
        assert!(
            max_size >= 2,
            "a cluster has a leader and at least one follower"
        );
        let scratch = Scratch::new(tag);
        let dir = scratch.0.clone();
        let hosts = format!("{prefix}-[0-{}]", max_size - 1);
        std::fs::create_dir_all(dir.join("conf.d")).unwrap();
        let cert = dir.join("curve.cert");
        run_ok(Command::new(flux).arg("keygen").arg(&cert));
        let r = run_ok(Command::new(flux).args(["R", "encode", "--hosts", &hosts, "--cores=0"]));
        std::fs::write(dir.join("R.json"), &r.stdout).unwrap();
        let socket = format!("ipc://{}/tbon-0", dir.display());
        let config = format!(
            r#"[bootstrap]
curve_cert = "{cert}"
hosts = [
  {{ host = "{leader}", bind = "{socket}", connect = "{socket}" }},
  {{ host = "{prefix}-[1-{last}]" }},
]
[resource]
path = "{r}"
noverify = true
{extra_toml}
"#,
            cert = cert.display(),
            leader = hostname(prefix, 0),
            last = max_size - 1,
            r = dir.join("R.json").display(),
        );
        std::fs::write(dir.join("conf.d/system.toml"), config).unwrap();
        Cluster {
            flux: flux.to_owned(),
            scratch,
            prefix: prefix.to_owned(),
            max_size,
            brokers: Mutex::new(BTreeMap::new()),
            // No Kubernetes unless a test asks for it: a kubeconfig of the machine
            // running the tests must never be picked up.
            env: vec![(
                "KUBECONFIG".to_owned(),
                dir.join("no-such-kubeconfig").display().to_string(),
            )],
        }
    }

    /// Adds a variable to the environment of brokers started from now on.
    pub fn set_broker_env(&mut self, key: &str, value: &str) {
        self.env.push((key.to_owned(), value.to_owned()));
    }

    /// The scratch directory.
    pub fn dir(&self) -> &Path {
        &self.scratch.0
    }

    pub fn max_size(&self) -> u32 {
        self.max_size
    }

    pub fn hostname(&self, rank: u32) -> String {
        hostname(&self.prefix, rank)
    }

    /// Starts the broker of `rank` (a pod starting); its log goes to `log/<rank>`.
    pub fn start(&self, rank: u32) {
        assert!(rank < self.max_size, "rank {rank} is not configured");
        assert!(!self.is_running(rank), "rank {rank} already runs");
        let dir = self.dir().to_owned();
        let run = dir.join(format!("run/{rank}"));
        let state = dir.join(format!("state/{rank}"));
        for d in [&run, &state, &dir.join("log")] {
            std::fs::create_dir_all(d).unwrap();
        }
        let log = File::options()
            .create(true)
            .append(true)
            .open(dir.join(format!("log/{rank}")))
            .unwrap();
        let mut command = Command::new(&self.flux);
        command
            .arg("broker")
            .arg(format!("--config-path={}", dir.join("conf.d").display()))
            .arg(format!("-Shostname={}", self.hostname(rank)))
            .arg(format!("-Srundir={}", run.display()))
            .arg(format!("-Sstatedir={}", state.display()))
            .arg(format!("-Slocal-uri=local://{}/local", run.display()))
            .args([
                "-Sbroker.rc2_none",
                "-Sbroker.quorum=1",
                "-Slog-stderr-level=6",
                "-Slog-stderr-mode=local",
            ])
            .env_remove("FLUX_URI")
            .env_remove("KUBERNETES_SERVICE_HOST")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        let child = command.spawn().expect("start flux broker");
        self.brokers().insert(rank, child);
        if rank == 0 {
            self.wait_for("the leader to reach the run state", || {
                let out = self.flux_command(&["uptime"]).output().ok()?;
                String::from_utf8_lossy(&out.stdout)
                    .contains(" run ")
                    .then_some(())
            });
        }
    }

    /// Whether this test started `rank` and it has not exited.
    pub fn is_running(&self, rank: u32) -> bool {
        self.brokers()
            .get_mut(&rank)
            .is_some_and(|c| c.try_wait().ok().flatten().is_none())
    }

    /// `kill -9` of the broker of `rank` (a pod deleted or crashed); waits for it.
    pub fn kill(&self, rank: u32) {
        let mut child = self.brokers().remove(&rank).expect("rank was started");
        let _ = child.kill();
        let _ = child.wait();
    }

    /// Brokers that exited by themselves since the last call, with their exit codes
    /// (128 + signal for a signal, as a container runtime reports it); they are forgotten.
    pub fn reap_exited(&self) -> Vec<(u32, i32)> {
        let mut brokers = self.brokers();
        let exited: Vec<(u32, ExitStatus)> = brokers
            .iter_mut()
            .filter_map(|(rank, child)| Some((*rank, child.try_wait().ok().flatten()?)))
            .collect();
        exited
            .into_iter()
            .map(|(rank, status)| {
                brokers.remove(&rank);
                let code = status
                    .code()
                    .or_else(|| status.signal().map(|signal| 128 + signal))
                    .unwrap_or(-1);
                (rank, code)
            })
            .collect()
    }

    fn brokers(&self) -> MutexGuard<'_, BTreeMap<u32, Child>> {
        self.brokers
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A `flux` command talking to the leader.
    pub fn flux_command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(&self.flux);
        command
            .args(args)
            .env(
                "FLUX_URI",
                format!("local://{}/run/0/local", self.dir().display()),
            )
            .env("FLUX_EXEC_PATH_PREPEND", shipped_commands());
        command
    }

    /// Runs `flux ARGS` against the leader.
    pub fn flux(&self, args: &[&str]) -> Output {
        self.flux_command(args).output().expect("run flux")
    }

    /// Runs `flux ARGS` and requires success.
    pub fn flux_ok(&self, args: &[&str]) -> Output {
        run_ok(&mut self.flux_command(args))
    }

    /// Loads the module by path as `fluxk8s`, with `args`.
    pub fn load_module(&self, args: &[&str]) {
        let so = module_path();
        let mut load = vec!["module", "load", "--name=fluxk8s", so.to_str().unwrap()];
        load.extend_from_slice(args);
        self.flux_ok(&load);
    }

    /// Sends `topic` with `payload` (JSON text, or none) and returns the decoded answer
    /// or the error. One Python process per request, through Flux's own bindings.
    pub fn rpc(&self, topic: &str, payload: Option<&str>, who: As) -> Result<Value, Refused> {
        let mut command = self.flux_command(&["python", "-c", RPC_SCRIPT, topic]);
        if let Some(payload) = payload {
            command.arg(payload);
        }
        if who == As::Guest {
            command
                .env("FLUX_HANDLE_ROLEMASK", "0x2")
                .env("FLUX_HANDLE_USERID", "4242");
        }
        let output = command.output().expect("run flux python");
        let answer: Value = serde_json::from_slice(&output.stdout)
            .unwrap_or_else(|e| panic!("rpc {topic}: {e}: {}", transcript(&output)));
        match answer.get("errno").and_then(Value::as_i64) {
            Some(errno) => Err(Refused {
                errno: errno as i32,
                message: answer["error"].as_str().unwrap_or_default().to_owned(),
            }),
            None => Ok(answer["ok"].clone()),
        }
    }

    /// `<fluxk8s>.status` as the owner.
    pub fn status(&self) -> Value {
        self.rpc("fluxk8s.status", None, As::Owner)
            .unwrap_or_else(|e| panic!("fluxk8s.status: {e:?}"))
    }

    /// The status with `ranks` detailed one by one (`detail`).
    pub fn status_of(&self, ranks: &IdSet) -> Value {
        let payload = json!({"ranks": ranks.to_string()}).to_string();
        self.rpc("fluxk8s.status", Some(&payload), As::Owner)
            .unwrap_or_else(|e| panic!("fluxk8s.status {payload}: {e:?}"))
    }

    /// Polls `status` until `check` holds; fails the test with the last status if it
    /// does not within [`PATIENCE`].
    pub fn wait_for_status(&self, what: &str, check: impl Fn(&Value) -> bool) -> Value {
        let mut last = Value::Null;
        let found = self.poll(|| {
            last = self.status();
            check(&last).then(|| last.clone())
        });
        found.unwrap_or_else(|| {
            panic!(
                "timed out waiting for {what}; last status: {last:#}\n{}",
                self.logs()
            )
        })
    }

    /// Polls `probe` until it gives a value, for at most [`PATIENCE`].
    pub fn wait_for<T>(&self, what: &str, probe: impl FnMut() -> Option<T>) -> T {
        self.poll(probe)
            .unwrap_or_else(|| panic!("timed out waiting for {what}\n{}", self.logs()))
    }

    fn poll<T>(&self, mut probe: impl FnMut() -> Option<T>) -> Option<T> {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(value) = probe() {
                return Some(value);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Every broker's log, for failure messages.
    pub fn logs(&self) -> String {
        let mut text = String::new();
        for rank in 0..self.max_size {
            let path = self.dir().join(format!("log/{rank}"));
            if let Ok(log) = std::fs::read_to_string(&path) {
                text += &format!("--- broker {rank}\n{log}");
            }
        }
        text
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for child in self.brokers().values_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The directory holding `flux-k8s.py`, so `flux k8s` finds it.
pub fn shipped_commands() -> &'static str {
    concat!(env!("CARGO_MANIFEST_DIR"), "/etc/cmd")
}

/// Prints `{"ok": answer}` or `{"errno": N, "error": text}`.
const RPC_SCRIPT: &str = r#"
import json, sys, flux
topic = sys.argv[1]
payload = sys.argv[2] if len(sys.argv) > 2 else None
try:
    text = flux.Flux().rpc(topic, payload, nodeid=0).get_str()
    print(json.dumps({"ok": json.loads(text) if text else None}))
except OSError as e:
    print(json.dumps({"errno": e.errno, "error": e.strerror}))
"#;

fn run_ok(command: &mut Command) -> Output {
    let output = command.output().expect("run command");
    assert!(
        output.status.success(),
        "{command:?} failed: {}",
        transcript(&output)
    );
    output
}
