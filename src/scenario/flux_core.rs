//! Finding and driving a real flux-core, for the real-broker tests and the bench.
//!
//! flux-core is found through `FLUX_CORE_PREFIX` (`$FLUX_CORE_PREFIX/bin/flux`), else
//! `flux` on `PATH`. Without one, each test says `skipped: no flux-core` on stderr and
//! passes. Each real-broker test notes whether it ran or was skipped in the file
//! `$FLUXK8S_REAL_BROKER_LOG`, if set: `.ci/run` counts them.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

/// The `flux` command of the flux-core under test. A `FLUX_CORE_PREFIX` without
/// `bin/flux` is a mistake to report, not a reason to skip: it panics. An empty one is
/// unset, as .ci/run takes it.
pub fn flux_command() -> Option<PathBuf> {
    let prefix = std::env::var_os("FLUX_CORE_PREFIX").filter(|prefix| !prefix.is_empty());
    if let Some(prefix) = prefix {
        let flux = Path::new(&prefix).join("bin/flux");
        assert!(
            flux.is_file(),
            "FLUX_CORE_PREFIX={} has no bin/flux: fix it or unset it",
            Path::new(&prefix).display()
        );
        return Some(flux);
    }
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join("flux"))
        .find(|flux| flux.is_file())
}

/// Returns the flux command, or says the test is skipped and returns `None`.
pub fn flux_or_skip(test: &str) -> Option<PathBuf> {
    let flux = flux_command();
    if flux.is_some() {
        note_real_broker_test(&format!("ran {test}"));
    } else {
        let why = "no flux-core (set FLUX_CORE_PREFIX or put flux on PATH)";
        // To the stderr handle itself: the test harness swallows the output of println!
        // and eprintln! alike for a test that passes.
        let _ = writeln!(std::io::stderr(), "{test}: skipped: {why}");
        note_real_broker_test(&format!("skipped {test}: {why}"));
    }
    flux
}

/// Appends `line` to `$FLUXK8S_REAL_BROKER_LOG`, if set. One write of a whole line to a
/// file opened for appending: tests running at once do not mix their lines.
fn note_real_broker_test(line: &str) {
    let Some(path) = std::env::var_os("FLUXK8S_REAL_BROKER_LOG") else {
        return;
    };
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .unwrap_or_else(|e| panic!("FLUXK8S_REAL_BROKER_LOG={}: {e}", path.display()));
    file.write_all(format!("{line}\n").as_bytes())
        .unwrap_or_else(|e| panic!("FLUXK8S_REAL_BROKER_LOG={}: {e}", path.display()));
}

/// `libfluxk8s.so` beside this test or example binary (target/<profile>/), built first if
/// needed: `cargo test` builds the library only as an rlib for the tests themselves.
pub fn module_path() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let exe = std::env::current_exe().expect("the running binary's path");
            let profile_dir = exe
                .parent()
                .and_then(Path::parent)
                .expect("target/<profile>/deps or target/<profile>/examples");
            let target_dir = profile_dir.parent().expect("target/");
            let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
            let mut build = Command::new(cargo);
            // Cargo gives this test the package variables of fluxk8s; passed on, they
            // would change the `rerun-if-env-changed` inputs of dependencies' build
            // scripts (ring's) and make this build and `cargo test` rebuild them in turn.
            for (key, _) in std::env::vars_os() {
                let key = key.to_string_lossy();
                if PACKAGE_VARIABLE_PREFIXES.iter().any(|p| key.starts_with(p)) {
                    build.env_remove(&*key);
                }
            }
            build
                .args(["build", "--lib", "--manifest-path"])
                .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml"))
                .arg("--target-dir")
                .arg(target_dir);
            if profile_dir
                .file_name()
                .is_some_and(|name| name == "release")
            {
                build.arg("--release");
            }
            let status = build.status().expect("run cargo build --lib");
            assert!(status.success(), "cargo build --lib failed");
            let so = profile_dir.join("libfluxk8s.so");
            assert!(so.is_file(), "{} not built", so.display());
            so
        })
        .clone()
}

/// Variables cargo sets for the crate under test (`OUT_DIR` of its build script, the
/// package's metadata), not cargo configuration.
const PACKAGE_VARIABLE_PREFIXES: &[&str] = &[
    "OUT_DIR",
    "CARGO_PKG_",
    "CARGO_MANIFEST_",
    "CARGO_CRATE_",
    "CARGO_BIN_",
    "CARGO_PRIMARY_PACKAGE",
    "CARGO_TARGET_TMPDIR",
];

/// A scratch directory removed on drop.
pub struct Scratch(pub PathBuf);

impl Scratch {
    pub fn new(tag: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("fluxk8s-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("scratch dir");
        Scratch(dir)
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs `script` (bash) as the initial program of `flux start --test-size=SIZE`, with
/// `$SO` set to the module path, `extra_env` added, and a bounded run time.
pub fn flux_start(flux: &Path, size: u32, script: &str, extra_env: &[(&str, &str)]) -> Output {
    let mut command = Command::new("timeout");
    command
        .arg("120")
        .arg(flux)
        .arg("start")
        .arg(format!("--test-size={size}"))
        .args(["bash", "-euo", "pipefail", "-c", script])
        .env("SO", module_path());
    without_kubernetes(&mut command);
    for (key, value) in extra_env {
        command.env(key, value);
    }
    command.output().expect("run flux start")
}

/// A leader-only instance of `size` configured hosts `flux-sample-[0-N]`
/// (docs/flux-core.md §5; only rank 0 starts): writes its key, R and config
/// under `scratch` and returns the `flux start` command, bounded by `timeout_secs`, that
/// runs `script` (bash) with `$SO` set to the module path.
pub fn leader_only_start(
    flux: &Path,
    scratch: &Scratch,
    size: u32,
    timeout_secs: u64,
    script: &str,
) -> Command {
    let dir = scratch.0.display();
    let hosts = format!("flux-sample-[0-{}]", size - 1);
    let run = |args: &[&str]| {
        let output = Command::new(flux).args(args).output().expect("run flux");
        assert!(output.status.success(), "{}", transcript(&output));
        output.stdout
    };
    run(&["keygen", &format!("{dir}/curve.cert")]);
    let r = run(&["R", "encode", &format!("--hosts={hosts}"), "--cores=0-1"]);
    std::fs::write(scratch.path("R.json"), r).expect("R.json written");
    std::fs::create_dir_all(scratch.path("conf.d")).expect("conf.d");
    let config = format!(
        r#"
[bootstrap]
curve_cert = "{dir}/curve.cert"
default_bind = "ipc://{dir}/tbon-%h"
default_connect = "ipc://{dir}/tbon-%h"
hosts = [ {{ host = "{hosts}" }} ]
[resource]
path = "{dir}/R.json"
noverify = true
"#
    );
    std::fs::write(scratch.path("conf.d/system.toml"), config).expect("system.toml written");
    let mut command = Command::new("timeout");
    command
        .arg(timeout_secs.to_string())
        .arg(flux)
        .arg("start")
        .arg(format!("--test-size={size}"))
        .arg(format!("--test-hosts={hosts}"))
        .arg("-c")
        .arg(scratch.path("conf.d"))
        .args([
            "--test-start-mode=leader",
            "--test-exit-mode=leader",
            "--test-exit-timeout=0",
            "-Sbroker.quorum=1",
            "-Stbon.topo=custom",
            "bash",
            "-euo",
            "pipefail",
            "-c",
            script,
        ])
        .env("SO", module_path());
    without_kubernetes(&mut command);
    command
}

/// Keeps the Kubernetes configuration of the machine running the tests (`KUBECONFIG`,
/// `~/.kube/config`, an in-cluster service account) from a module loaded without
/// `kubeconfig=`: a test must never reach a real cluster.
fn without_kubernetes(command: &mut Command) {
    command
        .env("KUBECONFIG", "/nonexistent/fluxk8s-test-kubeconfig")
        .env_remove("KUBERNETES_SERVICE_HOST");
}

/// stdout and stderr, for assertion messages.
pub fn transcript(output: &Output) -> String {
    format!(
        "status: {}\n--- stdout\n{}\n--- stderr\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}
