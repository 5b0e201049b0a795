//! The module's Flux streams and steering requests against the fake broker
//! (tests/fakehost): journal and overlay replies scripted from payloads captured on
//! flux-core 0.88 (docs/flux-core.md §2), and what `fluxk8s.status` makes of them.

// The library is reached only through its C entry point, so link it explicitly.
extern crate fluxk8s;

mod fakehost;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fakehost::Reply;
use fakehost::captured::{BACKLOG_END, DEFINE, DRAIN, NO_KUBE, ONLINE, RESTART};
use serde_json::{Value, json};

// Captured from flux-core 0.88 with 10 configured hosts flux-sample-[0-9].
const UNDRAIN: &str = r#"{"events":[{"timestamp":1795393306.7506676,"name":"undrain","context":{"idset":"2","nodelist":"flux-sample-2","overwrite":0}}]}"#;
const OFFLINE: &str =
    r#"{"events":[{"timestamp":1795393308.2335818,"name":"offline","context":{"idset":"3"}}]}"#;
const TORPID: &str =
    r#"{"events":[{"timestamp":1795393316.2341518,"name":"torpid","context":{"idset":"1"}}]}"#;
const LOST: &str = r#"{"rank":3,"status":"lost","torpid":false}"#;
const STOPPED: &str = r#"{"rank":1,"status":"full","torpid":true}"#;

fn data(payloads: &[&str]) -> Vec<Reply> {
    payloads
        .iter()
        .map(|p| Reply::Data((*p).to_owned()))
        .collect()
}

fn status() -> Value {
    let reply = fakehost::request("fluxk8s.status", None, false).expect("status answers");
    serde_json::from_str(&reply).expect("status is JSON")
}

/// Polls `probe` for up to 10 s.
fn wait_until<T>(what: &str, mut probe: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(value) = probe() {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn wait_for_status(what: &str, check: impl Fn(&Value) -> bool) -> Value {
    let mut last = Value::Null;
    wait_until(what, || {
        last = status();
        check(&last).then(|| last.clone())
    })
    .clone()
}

/// How many requests to `topic` the module has sent.
fn sent(topic: &str) -> usize {
    fakehost::rpcs_sent()
        .iter()
        .filter(|(t, _)| t == topic)
        .count()
}

/// Boots the fake broker with every journal subscription answered by `backlog` (and a
/// count of subscriptions), the overlay left open and silent, and loads the module.
fn start_with_backlog(backlog: Vec<Reply>) -> std::thread::JoinHandle<(i32, i32)> {
    fakehost::boot(0, 10, "fluxk8s", json!({}));
    fakehost::respond_to_rpcs(move |topic, _payload| match topic {
        "resource.journal" => backlog.clone(),
        "overlay.monitor" => Vec::new(),
        _ => vec![Reply::Error(libc::ENOSYS, format!("no service {topic}"))],
    });
    let module = fakehost::start(&[NO_KUBE]);
    fakehost::wait_running();
    module
}

fn stop(module: std::thread::JoinHandle<(i32, i32)>) {
    fakehost::send("fluxk8s.shutdown");
    assert_eq!(module.join().expect("mod_main never panics").0, 0);
    assert_eq!(fakehost::live_objects(), (0, 0, 0, 0));
}

#[test]
fn resize_and_retire_payloads_are_validated() {
    let _serial = fakehost::exclusive();
    let module = start_with_backlog(data(&[RESTART, DEFINE, BACKLOG_END]));
    let ask = |method: &str, payload: &str| {
        fakehost::request(&format!("fluxk8s.{method}"), Some(payload), true).expect_err("refused")
    };
    for (payload, errno, says) in [
        ("[1]", libc::EPROTO, "must be a JSON object"),
        (r#"{"size":null}"#, libc::EPROTO, "whole number"),
        (r#"{"size":4294967296}"#, libc::EPROTO, "whole number"),
        (
            r#"{"sise":3}"#,
            libc::EPROTO,
            "unknown field 'sise' (accepted: size)",
        ),
        (r#"{"size":3}"#, libc::EAGAIN, "not ready"),
    ] {
        let (got, text) = ask("resize", payload);
        assert_eq!(got, errno, "resize {payload}: {text}");
        assert!(text.contains(says), "resize {payload}: {text}");
    }
    for (payload, errno, says) in [
        (
            r#"{"ranks":["1"]}"#,
            libc::EPROTO,
            "ranks must be an idset string",
        ),
        (r#"{"ranks":"1,,2"}"#, libc::EINVAL, "1,,2"),
        (
            r#"{"ranks":"2","size":1}"#,
            libc::EPROTO,
            "unknown field 'size'",
        ),
        (r#"{"ranks":"2"}"#, libc::EAGAIN, "not ready"),
    ] {
        let (got, text) = ask("retire", payload);
        assert_eq!(got, errno, "retire {payload}: {text}");
        assert!(text.contains(says), "retire {payload}: {text}");
    }
    let (errno, _) = fakehost::request("fluxk8s.resize", Some(r#"{"size":3}"#), false).unwrap_err();
    assert_eq!(errno, libc::EPERM, "a guest cannot resize");
    let view = status();
    assert_eq!(view["counters"]["request_errors"], 9);
    assert!(
        view["problems"]
            .to_string()
            .contains("kubernetes unavailable"),
        "{}",
        view["problems"]
    );
    stop(module);
}

#[test]
fn journal_and_overlay_replies_show_in_status() {
    let _serial = fakehost::exclusive();
    let module = start_with_backlog(data(&[RESTART, DEFINE, BACKLOG_END]));
    wait_until("the overlay subscription", || {
        (sent("overlay.monitor") == 1).then_some(())
    });
    let view = wait_for_status("the backlog", |s| s["flux"]["synced"] == true);
    assert_eq!(view["max_size"], 10);
    assert_eq!(view["flux"]["online"], "");
    assert_eq!(view["flux"]["never_started"], "0-9");

    fakehost::push_replies("resource.journal", data(&[ONLINE, DRAIN, TORPID]));
    fakehost::push_replies("overlay.monitor", data(&[STOPPED]));
    let view = wait_for_status("live journal events", |s| s["flux"]["torpid"] == "1");
    assert_eq!(view["flux"]["online"], "1-3");
    assert_eq!(view["flux"]["drained"], "2");
    assert_eq!(view["real_size"], 2, "1 and 3 are up and not drained");

    fakehost::push_replies("overlay.monitor", data(&[LOST]));
    fakehost::push_replies("resource.journal", data(&[OFFLINE, UNDRAIN]));
    let view = wait_for_status("the crash of rank 3", |s| s["flux"]["drained"] == "");
    assert_eq!(view["flux"]["lost"], "3");
    assert_eq!(view["flux"]["online"], "1-2");
    assert_eq!(view["flux"]["journal"]["replies"], 8);
    assert_eq!(view["flux"]["overlay"]["replies"], 2);
    assert_eq!(
        view["problems"].as_array().unwrap().len(),
        1,
        "only the missing kubeconfig"
    );

    fakehost::push_replies("resource.journal", data(&[r#"{"events":"nope"}"#]));
    let view = wait_for_status("a bad reply noted", |s| {
        s["problems"].as_array().unwrap().len() == 2
    });
    assert!(
        view["problems"][1]["what"]
            .as_str()
            .unwrap()
            .contains("resource.journal"),
        "{}",
        view["problems"]
    );
    assert_eq!(
        view["flux"]["journal"]["open"], true,
        "a bad reply does not end the stream"
    );
    stop(module);
}

#[test]
fn journal_enodata_resubscribes_and_rebuilds_without_duplicates() {
    let _serial = fakehost::exclusive();
    // The first backlog is an empty eventlog; the one after a resource reload replays
    // the committed drains ahead of `restart` (as flux-core 0.88 does).
    let subscriptions = Arc::new(Mutex::new(0));
    let replayed_drain = DRAIN.trim_end_matches("]}").to_owned();
    let reload_backlog = format!(
        r#"{},{{"timestamp":1795393320.0,"name":"restart","context":{{"ranks":"0-9","online":"0-3","nodelist":"flux-sample-[0-9]"}}}}]}}"#,
        replayed_drain
    );
    let counter = Arc::clone(&subscriptions);
    fakehost::boot(0, 10, "fluxk8s", json!({}));
    fakehost::respond_to_rpcs(move |topic, payload| match topic {
        "resource.journal" => {
            assert_eq!(
                payload, "{}",
                "the journal is asked for with an empty object"
            );
            let mut count = counter.lock().unwrap();
            *count += 1;
            if *count == 1 {
                data(&[RESTART, DEFINE, BACKLOG_END])
            } else {
                data(&[&reload_backlog, DEFINE, BACKLOG_END])
            }
        }
        "overlay.monitor" => Vec::new(),
        _ => vec![Reply::Error(libc::ENOSYS, format!("no service {topic}"))],
    });
    let module = fakehost::start(&[NO_KUBE]);
    fakehost::wait_running();
    wait_until("the overlay subscription", || {
        (sent("overlay.monitor") == 1).then_some(())
    });
    fakehost::push_replies("resource.journal", data(&[ONLINE, DRAIN]));
    fakehost::push_replies("overlay.monitor", data(&[STOPPED]));
    let before = wait_for_status("live events", |s| {
        s["flux"]["drained"] == "2" && s["flux"]["torpid"] == "1"
    });
    assert_eq!(before["flux"]["online"], "1-3");

    let ended = Instant::now();
    fakehost::push_replies(
        "resource.journal",
        vec![Reply::Error(libc::ENODATA, String::new())],
    );
    wait_until("a new journal subscription", || {
        (sent("resource.journal") == 2).then_some(())
    });
    assert!(
        ended.elapsed() >= Duration::from_millis(400),
        "the resubscription waits for its backoff ({:?})",
        ended.elapsed()
    );
    let after = wait_for_status("the replayed backlog", |s| {
        s["flux"]["synced"] == true && s["flux"]["journal"]["resubscribes"] == 1
    });
    assert_eq!(
        after["flux"]["online"], "0-3",
        "restart's online set is taken"
    );
    assert_eq!(
        after["flux"]["drained"], "2",
        "the replayed drain is kept once"
    );
    assert_eq!(
        after["flux"]["torpid"], "",
        "torpid is not replayed and restart clears it"
    );
    assert_eq!(
        after["flux"]["overlay"]["resubscribes"], 0,
        "the overlay stream stayed open"
    );
    assert_eq!(
        after["problems"].as_array().unwrap().len(),
        1,
        "the replay applied cleanly: {}",
        after["problems"]
    );
    assert!(
        fakehost::logs()
            .iter()
            .any(|(_, l)| l.contains("resource.journal ended")),
        "{:?}",
        fakehost::logs()
    );

    // One undrain clears it: the drain was not recorded twice.
    fakehost::push_replies("resource.journal", data(&[UNDRAIN]));
    wait_for_status("the undrain", |s| s["flux"]["drained"] == "");
    assert_eq!(*subscriptions.lock().unwrap(), 2);
    stop(module);
}
