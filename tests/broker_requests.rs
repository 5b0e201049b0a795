//! The module's requests in a real flux-core instance: payload validation, who may ask
//! what, and the `flux k8s` command over them. No Kubernetes: the module runs its Flux
//! side alone, so resize and retire are "not ready". Skipped without flux-core.

mod common;

use common::cluster::{As, Cluster};
use fluxk8s::scenario::flux_core::{flux_or_skip, transcript};

const EPROTO: i32 = libc::EPROTO;
const EINVAL: i32 = libc::EINVAL;

/// A leader and one follower (of 3 configured hosts) with the module loaded and synced.
fn small_cluster(tag: &str) -> Option<Cluster> {
    let flux = flux_or_skip(tag)?;
    let cluster = Cluster::new(&flux, tag, "flux-sample", 3, "");
    cluster.start(0);
    cluster.start(1);
    cluster.load_module(&[]);
    cluster.wait_for_status("ranks 0-1 online", |s| {
        s["flux"]["synced"] == true && s["flux"]["online"] == "0-1"
    });
    Some(cluster)
}

/// Sends `payload` to `fluxk8s.<method>` as the owner; the request must be refused
/// with `errno` and a message containing `says`.
fn assert_refused(cluster: &Cluster, method: &str, payload: &str, errno: i32, says: &str) {
    let topic = format!("fluxk8s.{method}");
    let refused = cluster
        .rpc(&topic, Some(payload), As::Owner)
        .expect_err(&format!("{topic} {payload} must be refused"));
    assert_eq!(refused.errno, errno, "{topic} {payload}: {refused:?}");
    assert!(
        refused.message.contains(says),
        "{topic} {payload}: {refused:?} should say {says:?}"
    );
}

#[test]
fn bad_resize_retire_and_status_requests_are_refused_with_a_reason() {
    let Some(cluster) = small_cluster("badreq") else {
        return;
    };
    let resize_cases = [
        ("[3]", EPROTO, "payload must be a JSON object"),
        ("not json", EPROTO, "payload is not JSON"),
        ("{}", EPROTO, "resize needs {\"size\": N}"),
        (r#"{"size":-1}"#, EPROTO, "whole number"),
        (r#"{"size":"3"}"#, EPROTO, "whole number"),
        (r#"{"size":2.5}"#, EPROTO, "whole number"),
        (
            r#"{"size":3,"force":true}"#,
            EPROTO,
            "unknown field 'force'",
        ),
        (r#"{"size":0}"#, EINVAL, "at least 1"),
        // Well-formed, but without a Kubernetes view nothing can be decided.
        (r#"{"size":3}"#, libc::EAGAIN, "not ready"),
    ];
    for (payload, errno, says) in resize_cases {
        assert_refused(&cluster, "resize", payload, errno, says);
    }
    let retire_cases = [
        ("{}", EPROTO, "retire needs {\"ranks\": \"IDSET\"}"),
        (r#"{"ranks":2}"#, EPROTO, "ranks must be an idset string"),
        (r#"{"ranks":"two"}"#, EINVAL, "two"),
        (r#"{"ranks":"3-1"}"#, EINVAL, "3-1"),
        (r#"{"ranks":""}"#, EINVAL, "no ranks given"),
        (r#"{"ranks":"1","now":1}"#, EPROTO, "unknown field 'now'"),
        (
            r#"{"ranks":"0"}"#,
            libc::EINVAL,
            "rank 0 runs fluxk8s itself",
        ),
    ];
    for (payload, errno, says) in retire_cases {
        assert_refused(&cluster, "retire", payload, errno, says);
    }
    let status_cases = [
        (r#"{"ranks":2}"#, EPROTO, "ranks must be an idset string"),
        (r#"{"ranks":"two"}"#, EINVAL, "two"),
        (r#"{"rank":"2"}"#, EPROTO, "unknown field 'rank'"),
    ];
    for (payload, errno, says) in status_cases {
        assert_refused(&cluster, "status", payload, errno, says);
    }
    let counters = &cluster.status()["counters"];
    assert_eq!(
        counters["request_errors"],
        resize_cases.len() + retire_cases.len() + status_cases.len(),
        "every refusal is counted: {counters}"
    );
}

#[test]
fn guests_may_read_the_status_but_not_steer() {
    let Some(cluster) = small_cluster("guest") else {
        return;
    };
    let status = cluster
        .rpc("fluxk8s.status", None, As::Guest)
        .expect("a guest may read the status");
    assert_eq!(status["name"], "fluxk8s");
    for (method, payload) in [
        ("resize", r#"{"size":2}"#),
        ("retire", r#"{"ranks":"1"}"#),
        ("config-reload", "{}"),
    ] {
        let topic = format!("fluxk8s.{method}");
        let refused = cluster
            .rpc(&topic, Some(payload), As::Guest)
            .expect_err(&format!("a guest's {topic} must be refused"));
        assert_eq!(refused.errno, libc::EPERM, "{topic}: {refused:?}");
    }
    // The owner gets past the role check to the module's own answer.
    let refused = cluster
        .rpc("fluxk8s.resize", Some(r#"{"size":2}"#), As::Owner)
        .unwrap_err();
    assert_eq!(refused.errno, libc::EAGAIN);
}

/// The words of the line of `table` that starts with `start`.
fn words_of_line<'a>(table: &'a str, start: &str) -> Vec<&'a str> {
    table
        .lines()
        .find(|l| l.starts_with(start))
        .unwrap_or_else(|| panic!("no line starting {start:?} in:\n{table}"))
        .split_whitespace()
        .collect()
}

#[test]
fn flux_k8s_prints_the_status_table_and_readable_errors() {
    let Some(cluster) = small_cluster("cli") else {
        return;
    };
    cluster.flux_ok(&["resource", "drain", "1", "cli test"]);
    cluster.wait_for_status("rank 1 drained", |s| s["flux"]["drained"] == "1");

    let output = cluster.flux_ok(&["k8s", "status"]);
    let table = String::from_utf8(output.stdout).unwrap();
    let line_of = |start: &str| words_of_line(&table, start);
    assert_eq!(
        line_of("size:"),
        [
            "size:", "real", "1", "desired", "-", "expected", "0", "max", "3"
        ]
    );
    // Not synced (no Kubernetes), the planner has no word on any rank to group.
    assert_eq!(line_of("RANKS"), ["RANKS", "PHASE", "WHY"]);
    assert_eq!(line_of("kubernetes:"), ["kubernetes:", "not", "connected"]);

    // Rank by rank, with the Flux side's state of each.
    let output = cluster.flux_ok(&["k8s", "status", "all"]);
    let table = String::from_utf8(output.stdout).unwrap();
    let line_of = |start: &str| words_of_line(&table, start);
    assert_eq!(line_of("RANK "), ["RANK", "FLUX", "PHASE", "POD", "WHY"]);
    assert_eq!(line_of("0 "), ["0", "online", "-", "-"]);
    assert_eq!(line_of("1 "), ["1", "online+drained", "-", "-"]);
    assert_eq!(line_of("2 "), ["2", "never-up", "-", "-"]);
    assert_eq!(line_of("kubernetes:"), ["kubernetes:", "not", "connected"]);
    assert!(table.contains("pending actions: none"), "{table}");
    assert!(table.contains("kubernetes unavailable"), "{table}");

    let output = cluster.flux_ok(&["k8s", "--json", "status"]);
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(json["flux"]["drained"], "1");

    let refused = |args: &[&str], says: &str| {
        let output = cluster.flux(args);
        let text = transcript(&output);
        assert_eq!(output.status.code(), Some(1), "{args:?}: {text}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.starts_with("flux-k8s: "), "{args:?}: {text}");
        assert!(
            stderr.contains(says),
            "{args:?} should say {says:?}: {text}"
        );
        assert!(!stderr.contains("Traceback"), "{args:?}: {text}");
    };
    refused(&["k8s", "resize", "3"], "fluxk8s.resize: not ready");
    refused(&["k8s", "resize", "--", "-2"], "whole number");
    refused(&["k8s", "retire", "1-x"], "fluxk8s.retire: ");
    refused(&["k8s", "retire", "0"], "(EINVAL)");
    refused(
        &["k8s", "resize", "3", "--wait"],
        "fluxk8s.resize: not ready",
    );
    refused(
        &["k8s", "--name", "elsewhere", "watch"],
        "module elsewhere is not loaded",
    );
    refused(
        &["k8s", "--name", "elsewhere", "status"],
        "module elsewhere is not loaded",
    );
    let usage = cluster.flux(&["k8s", "resize", "three"]);
    assert_eq!(usage.status.code(), Some(2), "argparse usage error");
    let usage = cluster.flux(&["k8s", "resize", "3", "--timeout", "5"]);
    assert_eq!(usage.status.code(), Some(2), "--timeout without --wait");
}

/// 1,000 clients, one after another: each connects, watches, reads the first
/// response and goes away without a word (half cancel first). Guests, as any user may.
const THOUSAND_WATCHERS: &str = r#"
import errno, gc, flux, flux.constants
for i in range(1000):
    h = flux.Flux()
    f = h.rpc("fluxk8s.watch", nodeid=0, flags=flux.constants.FLUX_RPC_STREAMING)
    f.get_str()
    f.reset()
    if i % 2:
        tag = f.pimpl.get_matchtag()
        h.rpc("fluxk8s.watch-cancel", {"matchtag": tag}, nodeid=0,
              flags=flux.constants.FLUX_RPC_NORESPONSE)
        try:
            f.get_str()
            raise SystemExit("the stream did not end")
        except OSError as e:
            assert e.errno == errno.ENODATA, e
    del f, h
    gc.collect()
"#;

#[test]
fn a_thousand_watch_clients_come_and_go_without_a_leak() {
    let Some(cluster) = small_cluster("watch-leak") else {
        return;
    };
    let started = std::time::Instant::now();
    let output = cluster
        .flux_command(&["python", "-c", THOUSAND_WATCHERS])
        .env("FLUX_HANDLE_ROLEMASK", "0x2")
        .env("FLUX_HANDLE_USERID", "4242")
        .output()
        .expect("run flux python");
    assert!(output.status.success(), "{}", transcript(&output));
    println!("1,000 watch clients in {:?}", started.elapsed());
    let status = cluster.wait_for_status("every stream dropped", |s| s["watchers"] == 0);
    let requests = status["counters"]["requests"].as_u64().unwrap_or_default();
    assert!(
        requests >= 2_500,
        "1,000 watches, 500 cancels, 1,000 disconnects: {requests}"
    );
}
