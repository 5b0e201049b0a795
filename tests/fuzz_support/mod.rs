//! What the fuzz targets share: the case count, and generators for the text shapes that
//! reach fluxk8s from outside (idsets, hostlists, journal and overlay payloads; the module
//! configuration in [`settings`]).
//!
//! Ranges in generated idsets stay narrow (numbers below 10,000, or too large for a u32
//! so they fail to parse): an idset range is expanded id by id, so wide ones (up to the
//! `MAX_IDS` an idset may write) only make each case slow. The bound itself is tested
//! directly (`tests/fuzz_requests.rs`).

#![allow(dead_code)]

pub mod settings;

use proptest::prelude::*;
use proptest::test_runner::Config;
use serde_json::{Value, json};

/// `FUZZ_CASES` cases per target (2,000 when unset): `cargo test` runs a modest number,
/// a long run sets millions.
pub fn config() -> Config {
    let cases = std::env::var("FUZZ_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(2_000);
    Config {
        cases,
        // Inputs are cheap to regenerate; a failure prints its minimal case.
        failure_persistence: None,
        ..Config::default()
    }
}

/// A number as text: mostly below `max`, sometimes zero-padded, sometimes too large for
/// a u32.
pub fn number_text(max: u32) -> impl Strategy<Value = String> {
    prop_oneof![
        6 => (0..max).prop_map(|n| n.to_string()),
        1 => (0u32..100).prop_map(|n| format!("{n:03}")),
        1 => prop::sample::select(vec![
            "4294967296", "99999999999", "18446744073709551616", "00000000000000000000001",
        ])
        .prop_map(str::to_owned),
    ]
}

fn joined(tokens: impl Strategy<Value = String>, most: usize) -> impl Strategy<Value = String> {
    prop::collection::vec(tokens, 0..most).prop_map(|parts| parts.concat())
}

/// Idset-like text: numbers (mostly below `max`) between commas, dashes, brackets,
/// spaces and stray characters. Numbers never touch, so no number grows past its token.
pub fn idset_text(max: u32) -> impl Strategy<Value = String> {
    let separator = prop_oneof![
        4 => Just(","),
        3 => Just("-"),
        1 => prop::sample::select(vec!["[", "]", " ", "x", "+", "\u{e9}", ",,", "--", "-,"]),
    ];
    let pieces = prop::collection::vec((number_text(max), separator), 0..6);
    (any::<bool>(), pieces, prop::option::of(number_text(max))).prop_map(
        |(bracket, pieces, last)| {
            let mut text = String::new();
            if bracket {
                text.push('[');
            }
            for (number, separator) in pieces {
                text.push_str(&number);
                text.push_str(separator);
            }
            text.push_str(last.as_deref().unwrap_or(""));
            if bracket {
                text.push(']');
            }
            text
        },
    )
}

/// Hostlist-like text: names, numbers, brackets, ranges and commas.
pub fn hostlist_text() -> impl Strategy<Value = String> {
    let token = prop_oneof![
        3 => number_text(10_000),
        2 => prop::sample::select(vec!["flux-sample-", "node", "n", "a.b", "-"]).prop_map(str::to_owned),
        2 => prop::sample::select(vec!["[", "]", ",", "-", " ", "\u{e9}"]).prop_map(str::to_owned),
        1 => prop::sample::select(vec![
            "18446744073709551615", "0-18446744073709551615", "0-99999999", "0-999",
        ])
        .prop_map(str::to_owned),
    ];
    joined(token, 12)
}

/// Any JSON value, a few levels deep.
pub fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(|f| json!(f)),
        "\\PC{0,12}".prop_map(Value::from),
        idset_text(10_000).prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
            prop::collection::btree_map("[a-z]{0,8}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A value for a journal context field: usually well typed, sometimes anything.
fn context_value(well_typed: impl Strategy<Value = Value>) -> impl Strategy<Value = Value> {
    prop_oneof![4 => well_typed, 1 => any_json()]
}

/// One `resource.journal` event, shaped like the real ones but with any field wrong;
/// ranks mostly below `max_rank`.
pub fn journal_event(max_rank: u32) -> impl Strategy<Value = Value> {
    let name = prop_oneof![
        8 => prop::sample::select(vec![
            "restart", "resource-define", "online", "offline", "torpid", "lively", "drain",
            "undrain", "resource-update", "truncate", "unknown-event",
        ])
        .prop_map(Value::from),
        1 => any_json(),
    ];
    let idset = || context_value(idset_text(max_rank).prop_map(Value::from));
    let context = (
        idset(),
        idset(),
        idset(),
        context_value(hostlist_text().prop_map(Value::from)),
        context_value("\\PC{0,16}".prop_map(Value::from)),
        context_value((0u8..4).prop_map(Value::from)),
        prop::collection::vec(any::<bool>(), 6),
    )
        .prop_map(
            |(idset, ranks, online, nodelist, reason, overwrite, keep)| {
                let fields = [
                    ("idset", idset),
                    ("ranks", ranks),
                    ("online", online),
                    ("nodelist", nodelist),
                    ("reason", reason),
                    ("overwrite", overwrite),
                ];
                let kept = fields
                    .into_iter()
                    .zip(keep)
                    .filter(|(_, keep)| *keep)
                    .map(|((key, value), _)| (key.to_owned(), value));
                Value::Object(kept.collect())
            },
        );
    let timestamp = context_value(any::<f64>().prop_map(|f| json!(f)));
    (timestamp, name, context, any::<u8>()).prop_map(|(timestamp, name, context, drop)| {
        let mut event = json!({"timestamp": timestamp, "name": name, "context": context});
        // Now and then a required field goes missing.
        match drop % 8 {
            0 => event.as_object_mut().map(|e| e.remove("timestamp")),
            1 => event.as_object_mut().map(|e| e.remove("context")),
            _ => None,
        };
        event
    })
}

/// A `resource.journal` response: `{"events":[...]}`, sometimes malformed.
pub fn journal_payload(max_rank: u32) -> impl Strategy<Value = String> {
    let events = prop::collection::vec(journal_event(max_rank), 0..4);
    prop_oneof![
        8 => events.prop_map(|events| json!({"events": events}).to_string()),
        1 => any_json().prop_map(|v| v.to_string()),
        1 => "\\PC{0,40}",
    ]
}

/// An `overlay.monitor` response, sometimes malformed; ranks mostly below `max_rank`.
pub fn overlay_payload(max_rank: u32) -> impl Strategy<Value = String> {
    let status = prop_oneof![
        4 => prop::sample::select(vec!["full", "partial", "degraded", "lost", "offline", "bogus"])
            .prop_map(Value::from),
        1 => any_json(),
    ];
    let rank = prop_oneof![
        4 => (0..u64::from(max_rank)).prop_map(Value::from),
        1 => any_json(),
    ];
    let torpid = prop_oneof![4 => any::<bool>().prop_map(Value::from), 1 => any_json()];
    prop_oneof![
        8 => (rank, status, torpid)
            .prop_map(|(rank, status, torpid)| json!({"rank": rank, "status": status, "torpid": torpid}).to_string()),
        1 => any_json().prop_map(|v| v.to_string()),
        1 => "\\PC{0,40}",
    ]
}
