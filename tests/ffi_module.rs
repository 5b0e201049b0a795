//! `mod_main` and its services, run against a fake broker (tests/fakehost): the FFI
//! path without flux-core. The fake checks roles, tracks every handler, watcher and
//! future, and records the log, as the broker does.

// The library is reached only through its C entry point, so link it explicitly.
extern crate fluxk8s;

mod fakehost;

use serde_json::{Value, json};

const LOG_ERR: i32 = 3;

/// Loads the module with `args` and a kubeconfig that does not exist, so its Kubernetes
/// side never reads the machine's `KUBECONFIG` or `~/.kube/config`.
fn start(args: &[&str]) -> std::thread::JoinHandle<(i32, i32)> {
    let mut args = args.to_vec();
    args.push("kubeconfig=/nonexistent/fluxk8s-test-kubeconfig");
    fakehost::start(&args)
}

fn status(name: &str) -> Value {
    let reply = fakehost::request(&format!("{name}.status"), None, false).expect("status answers");
    serde_json::from_str(&reply).expect("status is JSON")
}

fn stop(name: &str, module: std::thread::JoinHandle<(i32, i32)>) -> i32 {
    fakehost::send(&format!("{name}.shutdown"));
    module.join().expect("mod_main never panics").0
}

#[test]
fn loads_answers_status_and_unloads_cleanly() {
    let _serial = fakehost::exclusive();
    fakehost::boot(
        0,
        4,
        "fluxk8s",
        json!({"fluxk8s": {"namespace": "hpc", "min-size": 2}}),
    );
    let module = start(&["min-size=3", "dry-run=true"]);
    fakehost::wait_running();

    let view = status("fluxk8s");
    assert_eq!(view["name"], "fluxk8s");
    assert_eq!(view["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(view["config"]["namespace"], "hpc", "the table is read");
    assert_eq!(
        view["config"]["min-size"], 3,
        "arguments win over the table"
    );
    assert_eq!(view["config"]["dry-run"], true);
    let stats: Value =
        serde_json::from_str(&fakehost::request("fluxk8s.stats-get", None, false).unwrap())
            .unwrap();
    assert_eq!(
        stats["config"], view["config"],
        "flux module stats shows the same view"
    );
    assert_eq!(stats["counters"]["requests"], 2);

    assert_eq!(stop("fluxk8s", module), 0);
    assert_eq!(
        fakehost::live_objects(),
        (0, 0, 0, 0),
        "everything registered is destroyed"
    );
    let logs = fakehost::logs();
    assert!(
        logs.iter().any(|(_, l)| l.contains("loaded on rank 0")),
        "{logs:?}"
    );
    assert!(
        logs.iter().any(|(_, l)| l.contains("shutdown requested")),
        "{logs:?}"
    );
}

#[test]
fn services_follow_the_name_the_broker_gave() {
    let _serial = fakehost::exclusive();
    fakehost::boot(0, 2, "libfluxk8s", json!({}));
    let module = start(&[]);
    fakehost::wait_running();
    assert_eq!(status("libfluxk8s")["name"], "libfluxk8s");
    assert_eq!(
        fakehost::request("fluxk8s.status", None, true)
            .unwrap_err()
            .0,
        libc::ENOSYS,
        "nothing is registered under a name the module was not given"
    );
    assert_eq!(stop("libfluxk8s", module), 0);
}

#[test]
fn unknown_key_fails_the_load_naming_the_key() {
    let _serial = fakehost::exclusive();
    fakehost::boot(0, 2, "fluxk8s", json!({"fluxk8s": {"namespce": "x"}}));
    let (rc, errno) = start(&[]).join().unwrap();
    assert_eq!((rc, errno), (-1, libc::EINVAL));
    let logs = fakehost::logs();
    let line = logs
        .iter()
        .find(|(level, _)| *level == LOG_ERR)
        .expect("an error is logged");
    assert!(
        line.1.contains("unknown key 'namespce' ([fluxk8s] table)"),
        "{line:?}"
    );
    assert!(line.1.contains("accepted keys: namespace"), "{line:?}");
    assert_eq!(fakehost::live_objects(), (0, 0, 0, 0));
}

#[test]
fn bad_argument_value_fails_the_load() {
    let _serial = fakehost::exclusive();
    fakehost::boot(0, 2, "fluxk8s", json!({}));
    let (rc, errno) = start(&["max-lost-fraction=2"]).join().unwrap();
    assert_eq!((rc, errno), (-1, libc::EINVAL));
    assert!(
        fakehost::logs()
            .iter()
            .any(|(_, l)| l.contains("'max-lost-fraction' (module argument)")),
        "{:?}",
        fakehost::logs()
    );
}

#[test]
fn refuses_to_load_on_another_rank() {
    let _serial = fakehost::exclusive();
    fakehost::boot(3, 4, "fluxk8s", json!({}));
    let (rc, errno) = start(&[]).join().unwrap();
    assert_eq!((rc, errno), (-1, libc::EINVAL));
    assert!(
        fakehost::logs()
            .iter()
            .any(|(_, l)| l.contains("runs on rank 0 only (this is rank 3)")),
        "{:?}",
        fakehost::logs()
    );
}

#[test]
fn malformed_payloads_get_eproto_and_guests_cannot_reconfigure() {
    let _serial = fakehost::exclusive();
    fakehost::boot(0, 2, "fluxk8s", json!({}));
    let module = start(&[]);
    fakehost::wait_running();
    for bad in ["[1,2]", "not json", "\"text\""] {
        let err = fakehost::request("fluxk8s.status", Some(bad), true).unwrap_err();
        assert_eq!(err.0, libc::EPROTO, "{bad}: {err:?}");
    }
    let err = fakehost::request("fluxk8s.config-reload", Some("{}"), false).unwrap_err();
    assert_eq!(err.0, libc::EPERM, "config-reload is owner-only");
    assert_eq!(status("fluxk8s")["counters"]["request_errors"], 3);
    assert_eq!(stop("fluxk8s", module), 0);
}

#[test]
fn config_reload_applies_good_config_and_rejects_bad() {
    let _serial = fakehost::exclusive();
    fakehost::boot(0, 2, "fluxk8s", json!({"fluxk8s": {"cooldown": "10s"}}));
    let module = start(&["min-size=2"]);
    fakehost::wait_running();

    let reload =
        |conf: Value| fakehost::request("fluxk8s.config-reload", Some(&conf.to_string()), true);
    reload(json!({"fluxk8s": {"cooldown": "2m", "min-size": 5}})).expect("good config accepted");
    let config = status("fluxk8s")["config"].clone();
    assert_eq!(config["cooldown"], 120.0);
    assert_eq!(
        config["min-size"], 2,
        "load arguments still win after a reload"
    );

    let err = reload(json!({"fluxk8s": {"colldown": "1m"}})).unwrap_err();
    assert_eq!(err.0, libc::EINVAL);
    assert!(err.1.contains("unknown key 'colldown'"), "{err:?}");
    let err = reload(json!({"fluxk8s": {"namespace": "elsewhere"}})).unwrap_err();
    assert!(err.1.contains("apply only at load"), "{err:?}");
    assert_eq!(
        status("fluxk8s")["config"]["cooldown"],
        120.0,
        "a rejected reload changes nothing"
    );
    assert_eq!(stop("fluxk8s", module), 0);
}

/// The module reads `FLUXK8S_TEST_PANIC` when it loads. Setting it here would change the
/// environment while other threads may read it, so the test runs again in a child process
/// of this binary that has it from the start.
#[test]
fn a_panic_in_a_handler_is_contained_and_answered() {
    if std::env::var_os("FLUXK8S_TEST_PANIC").is_none() {
        let output = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["a_panic_in_a_handler_is_contained_and_answered", "--exact"])
            .env("FLUXK8S_TEST_PANIC", "1")
            .output()
            .expect("run this test binary");
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success() && stdout.contains("test result: ok. 1 passed"),
            "{stdout}\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        return;
    }
    let _serial = fakehost::exclusive();
    fakehost::boot(0, 2, "fluxk8s", json!({}));
    let module = start(&[]);
    fakehost::wait_running();

    let err = fakehost::request("fluxk8s.test-panic", None, true).unwrap_err();
    assert_eq!(err.0, libc::EIO, "{err:?}");
    let view = status("fluxk8s");
    assert_eq!(
        view["panics_contained"], 1,
        "the module keeps serving and counts it"
    );
    assert_eq!(stop("fluxk8s", module), 0);
    assert!(
        fakehost::logs().iter().any(|(level, l)| *level == LOG_ERR && l.contains("panic in request handler contained")),
        "{:?}",
        fakehost::logs()
    );
}

#[test]
fn log_lines_pass_through_a_percent_s_format() {
    let _serial = fakehost::exclusive();
    fakehost::boot(0, 1, "fluxk8s", json!({}));
    fakehost::log_through_c("100%d done");
    assert_eq!(fakehost::logs(), vec![(6, "100%d done".to_owned())]);
}
