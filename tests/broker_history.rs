//! `fluxk8s.history` and `flux k8s history` in a real flux-core instance: what the
//! module recorded of the ranks and of a drain, filtered by rank, drawn as a picture,
//! and followed as a stream. No Kubernetes: only the Flux side is recorded. Skipped
//! without flux-core.

mod common;

use common::cluster::{As, Cluster};
use fluxk8s::model::IdSet;
use fluxk8s::scenario::flux_core::{flux_or_skip, transcript};
use serde_json::Value;

/// Follows the history of rank 1 as a stream: the records so far, then its undrain
/// after the stream opened, then the stream's end on `history-cancel`; a picture asked
/// for as a stream is refused.
const FOLLOW_RANK_1: &str = r#"
import errno, json, flux, flux.constants

def ended_with(stream):
    """Reads a stream to its end; the errno it ended with."""
    while True:
        try:
            stream.get_str()
            stream.reset()
        except OSError as e:
            return e.errno

h = flux.Flux()
f = h.rpc("fluxk8s.history", {"ranks": "1"}, nodeid=0,
          flags=flux.constants.FLUX_RPC_STREAMING)
first = json.loads(f.get_str())
f.reset()
assert all(e.get("ranks") in (None, "1") for e in first["entries"]), first
h.rpc("resource.undrain", {"targets": "1"}, nodeid=0).get()
seen = []
while not any(e.get("state") == "up" for e in seen):
    seen += json.loads(f.get_str())["entries"]
    f.reset()
h.rpc("fluxk8s.history-cancel", {"matchtag": f.pimpl.get_matchtag()}, nodeid=0,
      flags=flux.constants.FLUX_RPC_NORESPONSE)
assert ended_with(f) == errno.ENODATA
picture = h.rpc("fluxk8s.history", {"svg": True}, nodeid=0,
                flags=flux.constants.FLUX_RPC_STREAMING)
assert ended_with(picture) == errno.EPROTO
print(json.dumps(seen))
"#;

fn entries(answer: &Value) -> &[Value] {
    answer["entries"].as_array().map_or(&[], Vec::as_slice)
}

#[test]
fn the_history_says_what_happened_to_a_rank_as_records_lines_a_picture_and_a_stream() {
    let Some(flux) = flux_or_skip("history") else {
        return;
    };
    let cluster = Cluster::new(&flux, "history", "flux-sample", 3, "");
    cluster.start(0);
    cluster.start(1);
    cluster.load_module(&[]);
    cluster.wait_for_status("ranks 0-1 online", |s| {
        s["flux"]["synced"] == true && s["flux"]["online"] == "0-1"
    });
    cluster.flux_ok(&["resource", "drain", "1", "history test"]);
    cluster.wait_for_status("rank 1 drained", |s| s["flux"]["drained"] == "1");

    let all = cluster
        .rpc("fluxk8s.history", None, As::Guest)
        .expect("anyone may read the history");
    let records = entries(&all);
    let has = |records: &[Value], want: &Value| records.iter().any(|e| subset(want, e));
    let states: Vec<&str> = (0..3).map(|k| last_state(records, k)).collect();
    assert_eq!(states, ["up", "drained", "offline"], "{all:#}");
    let drain =
        serde_json::json!({"kind": "request", "text": "drain 1 (history test)", "ranks": "1"});
    assert!(has(records, &drain), "{all:#}");
    // Times are the reactor's clock: seconds since the epoch, as Flux's own.
    let time = records[0]["time"].as_f64().unwrap_or_default();
    assert!(time > 1.6e9, "{time}");
    assert_eq!(all["dropped"], 0);

    // Rank 2 only: its own records, none of the drain of rank 1.
    let of_2 = cluster
        .rpc("fluxk8s.history", Some(r#"{"ranks":"2"}"#), As::Owner)
        .unwrap();
    let kinds_and_ranks: Vec<(&Value, &Value)> = entries(&of_2)
        .iter()
        .map(|e| (&e["kind"], &e["ranks"]))
        .collect();
    assert_eq!(kinds_and_ranks, [(&"flux".into(), &"2".into())], "{of_2:#}");

    let picture = cluster
        .rpc("fluxk8s.history", Some(r#"{"svg":true}"#), As::Owner)
        .unwrap();
    let svg = picture["svg"].as_str().unwrap_or_default();
    assert!(svg.starts_with("<svg "), "{picture}");
    assert!(svg.contains(" drain 1 (history test)</text>"), "{svg}");

    for (payload, errno, says) in [
        (r#"{"svg":1}"#, libc::EPROTO, "svg must be true or false"),
        (r#"{"ranks":"x"}"#, libc::EINVAL, "x"),
        (r#"{"since":3}"#, libc::EPROTO, "unknown field 'since'"),
    ] {
        let refused = cluster
            .rpc("fluxk8s.history", Some(payload), As::Owner)
            .expect_err(payload);
        assert_eq!(refused.errno, errno, "{payload}: {refused:?}");
        assert!(refused.message.contains(says), "{payload}: {refused:?}");
    }

    // The command: lines, filtered lines, the picture.
    let lines = String::from_utf8(cluster.flux_ok(&["k8s", "history"]).stdout).unwrap();
    assert!(
        lines.contains("  request: drain 1 (history test)\n"),
        "{lines}"
    );
    assert!(lines.contains("  ranks 1: drained\n"), "{lines}");
    let of_0 = String::from_utf8(cluster.flux_ok(&["k8s", "history", "0"]).stdout).unwrap();
    assert!(of_0.contains("  ranks 0: up\n"), "{of_0}");
    assert!(!of_0.contains("drain"), "{of_0}");
    let file = cluster.dir().join("history.svg");
    let file_arg = file.to_str().unwrap();
    cluster.flux_ok(&["k8s", "history", "--svg", file_arg, "1"]);
    let drawn = std::fs::read_to_string(&file).expect("the picture is written");
    assert!(drawn.contains("ranks 1 (times UTC)"), "{drawn}");
    let usage = cluster.flux(&["k8s", "history", "--svg", file_arg, "--follow"]);
    assert_eq!(usage.status.code(), Some(2), "{}", transcript(&usage));

    // Followed: an undrain after the stream opened arrives on it; it ends on cancel.
    let output = cluster.flux_ok(&["python", "-c", FOLLOW_RANK_1]);
    let followed: Value = serde_json::from_slice(&output.stdout).unwrap();
    let followed = followed.as_array().unwrap();
    assert!(
        has(
            followed,
            &serde_json::json!({"kind": "flux", "ranks": "1", "state": "up"})
        ),
        "{followed:#?}"
    );
    cluster.wait_for_status("the stream dropped", |s| s["history_followers"] == 0);
}

/// The Flux state the last record naming rank `k` gives it.
fn last_state(records: &[Value], k: u32) -> &str {
    records
        .iter()
        .filter(|e| e["kind"] == "flux")
        .filter(|e| {
            let ranks: IdSet = e["ranks"].as_str().unwrap_or_default().parse().unwrap();
            ranks.contains(k)
        })
        .filter_map(|e| e["state"].as_str())
        .next_back()
        .unwrap_or("none recorded")
}

/// Every field of `want` is in `have`, equal.
fn subset(want: &Value, have: &Value) -> bool {
    want.as_object()
        .is_some_and(|w| w.iter().all(|(key, value)| have.get(key) == Some(value)))
}
