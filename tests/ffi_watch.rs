//! `fluxk8s.watch` against the fake broker (tests/fakehost): the stream's first answer,
//! one response per change and none without one, its end on cancel, on the client's
//! disconnect and at unload, and no stream or message left behind by 1,000 clients.

// The library is reached only through its C entry point, so link it explicitly.
extern crate fluxk8s;

mod fakehost;

use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use fakehost::captured::{BACKLOG_END, DEFINE, DRAIN, NO_KUBE, ONLINE, RESTART};
use fakehost::{Reply, Response};
use serde_json::{Value, json};

const WATCH: &str = "fluxk8s.watch";

fn journal(payloads: &[&str]) {
    let replies = payloads.iter().map(|p| Reply::Data((*p).to_owned()));
    fakehost::push_replies("resource.journal", replies.collect());
}

fn status() -> Value {
    let reply = fakehost::request("fluxk8s.status", None, false).expect("status answers");
    serde_json::from_str(&reply).expect("status is JSON")
}

fn start() -> std::thread::JoinHandle<(i32, i32)> {
    fakehost::boot(0, 10, "fluxk8s", json!({}));
    fakehost::respond_to_rpcs(move |topic, _payload| match topic {
        "resource.journal" => [RESTART, DEFINE, BACKLOG_END]
            .iter()
            .map(|p| Reply::Data((*p).to_owned()))
            .collect(),
        "overlay.monitor" => Vec::new(),
        _ => vec![Reply::Error(libc::ENOSYS, format!("no service {topic}"))],
    });
    let module = fakehost::start(&[NO_KUBE]);
    fakehost::wait_running();
    let deadline = Instant::now() + Duration::from_secs(10);
    while status()["flux"]["synced"] != true {
        assert!(
            Instant::now() < deadline,
            "the journal backlog never applied"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    module
}

fn stop(module: std::thread::JoinHandle<(i32, i32)>) {
    fakehost::send("fluxk8s.shutdown");
    assert_eq!(module.join().expect("mod_main never panics").0, 0);
    assert_eq!(fakehost::live_objects(), (0, 0, 0, 0));
    assert_eq!(fakehost::live_messages(), 0, "a request reference leaked");
}

fn next(stream: &Receiver<Response>) -> Response {
    stream
        .recv_timeout(Duration::from_secs(10))
        .expect("a watch response")
}

fn progress(stream: &Receiver<Response>) -> Value {
    let text = next(stream).expect("progress, not an error");
    serde_json::from_str(&text).expect("progress is JSON")
}

fn quiet(stream: &Receiver<Response>) -> bool {
    stream.recv_timeout(Duration::from_millis(200)) == Err(RecvTimeoutError::Timeout)
}

#[test]
fn watch_answers_now_then_once_per_change_and_ends_when_cancelled() {
    let _serial = fakehost::exclusive();
    let module = start();
    let plain = fakehost::stream(WATCH, None, 1, 7, false);
    let (errno, text) = next(&plain).expect_err("refused");
    assert_eq!(errno, libc::EPROTO, "{text}");
    assert!(text.contains("streaming"), "{text}");
    let typo = fakehost::stream(WATCH, Some(r#"{"ranks":"1"}"#), 1, 8, true);
    assert_eq!(next(&typo).expect_err("refused").0, libc::EPROTO);

    let stream = fakehost::stream(WATCH, None, 1, 7, true);
    let first = progress(&stream);
    assert_eq!(first["real_size"], 0);
    assert_eq!(first["max_size"], 10);
    assert_eq!(
        first["plan"]["waiting"],
        json!(["waiting for both views to sync"])
    );
    assert!(
        first.get("uptime").is_none(),
        "nothing that moves by itself"
    );
    assert_eq!(status()["watchers"], 1);
    assert!(quiet(&stream), "a status request changes nothing");

    journal(&[ONLINE]);
    assert_eq!(progress(&stream)["real_size"], 3);
    journal(&[DRAIN]);
    assert_eq!(progress(&stream)["real_size"], 2);
    assert!(quiet(&stream), "one response per change");

    // Another client's cancel, or this one's for another matchtag, ends nothing.
    fakehost::send_from("fluxk8s.watch-cancel", Some(r#"{"matchtag":7}"#), 2);
    fakehost::send_from("fluxk8s.watch-cancel", Some(r#"{"matchtag":6}"#), 1);
    assert!(quiet(&stream));
    fakehost::send_from("fluxk8s.watch-cancel", Some(r#"{"matchtag":7}"#), 1);
    assert_eq!(next(&stream).expect_err("the end").0, libc::ENODATA);
    assert_eq!(status()["watchers"], 0);
    stop(module);
}

#[test]
fn streams_end_with_enosys_when_the_module_unloads() {
    let _serial = fakehost::exclusive();
    let module = start();
    let stream = fakehost::stream(WATCH, None, 1, 1, true);
    progress(&stream);
    stop(module);
    let (errno, text) = next(&stream).expect_err("the end");
    assert_eq!(errno, libc::ENOSYS);
    assert_eq!(text, "fluxk8s is unloading");
}

#[test]
fn a_thousand_clients_come_and_go_without_a_leak() {
    let _serial = fakehost::exclusive();
    let module = start();
    const CLIENTS: u32 = 1_000;
    let streams: Vec<Receiver<Response>> = (1..=CLIENTS)
        .map(|client| fakehost::stream(WATCH, None, client, 1, true))
        .collect();
    for stream in &streams {
        assert_eq!(progress(stream)["real_size"], 0);
    }
    assert_eq!(status()["watchers"], CLIENTS);

    let change = Instant::now();
    journal(&[ONLINE]);
    for stream in &streams {
        assert_eq!(progress(stream)["real_size"], 3);
    }
    println!(
        "one change to {CLIENTS} watchers: {:?} until the last has it",
        change.elapsed()
    );

    // Each client goes away: every other one says so with a cancel first.
    for client in 1..=CLIENTS {
        if client % 2 == 0 {
            fakehost::send_from("fluxk8s.watch-cancel", Some(r#"{"matchtag":1}"#), client);
        }
        fakehost::send_from("fluxk8s.disconnect", None, client);
    }
    for (client, stream) in (1..=CLIENTS).zip(&streams) {
        if client % 2 == 0 {
            assert_eq!(next(stream).expect_err("cancelled").0, libc::ENODATA);
        }
    }
    let view = status();
    assert_eq!(view["watchers"], 0, "every stream dropped");
    journal(&[DRAIN]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while status()["real_size"] != 2 {
        assert!(Instant::now() < deadline, "the drain never applied");
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(
        streams.iter().all(|s| s.try_recv().is_err()),
        "nothing is sent to a client that went away"
    );
    stop(module);
}
