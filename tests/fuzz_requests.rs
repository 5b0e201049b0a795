//! Fuzzing the module's RPC request payloads, as its handlers read them before acting:
//! `<name>.status` (and `stats-get`), `resize`, `retire` and `config-reload`. Any payload
//! is either the request it spells or a refusal with an errno and a message (which the
//! handler sends as the error response); well-formed requests parse to what was given.
//!
//! Payloads that are not UTF-8 never reach these parsers: `Message::payload` refuses them
//! (EPROTO) first.
//!
//! `FUZZ_CASES=N` sets the cases per target (default 2,000).

mod fuzz_support;

use fluxk8s::config::Config;
use fluxk8s::model::IdSet;
use fluxk8s::model::idset::MAX_IDS;
use fluxk8s::rpc::{Refusal, reloaded_config, resize_request, retire_request, status_request};
use libc::{EINVAL, EPROTO};
use proptest::prelude::*;
use serde_json::{Map, Value, json};

use fuzz_support::settings::{key, table_text, table_value, valid_settings};
use fuzz_support::{any_json, config, idset_text, number_text};

/// A value for a request field: what resize and retire take, near misses, or anything.
fn field_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        3 => any::<u32>().prop_map(Value::from),
        1 => any::<u64>().prop_map(Value::from),
        1 => any::<i64>().prop_map(Value::from),
        1 => any::<f64>().prop_map(|f| json!(f)),
        1 => Just(json!(3.0)),
        3 => idset_text(10_000).prop_map(Value::from),
        1 => number_text(u32::MAX).prop_map(Value::from),
        2 => any_json(),
    ]
}

/// A request payload: none, shaped like the real ones with any field wrong, any JSON,
/// any text, or any bytes as text.
fn payload() -> impl Strategy<Value = Option<String>> {
    let field = prop_oneof![
        4 => prop::sample::select(vec!["size", "ranks"]),
        1 => prop::sample::select(vec!["", "Size", "rank", "extra"]),
    ];
    let object = prop::collection::btree_map(field, field_value(), 0..3).prop_map(|fields| {
        let fields = fields.into_iter().map(|(k, v)| (k.to_owned(), v));
        Value::Object(fields.collect()).to_string()
    });
    prop_oneof![
        1 => Just(None),
        6 => object.prop_map(Some),
        2 => any_json().prop_map(|v| Some(v.to_string())),
        1 => "\\PC{0,40}".prop_map(Some),
        1 => prop::collection::vec(any::<u8>(), 0..40)
            .prop_map(|bytes| Some(String::from_utf8_lossy(&bytes).into_owned())),
    ]
}

/// A refusal is answerable: a known errno and something to say.
fn check_refusal(refusal: &Refusal) -> Result<(), TestCaseError> {
    prop_assert!([EPROTO, EINVAL].contains(&refusal.errno), "{refusal:?}");
    prop_assert!(!refusal.message.is_empty());
    Ok(())
}

/// The payload's fields, if it is a JSON object (no payload counts as `{}`).
fn fields(payload: Option<&str>) -> Option<Map<String, Value>> {
    match payload {
        None => Some(Map::new()),
        Some(text) => match serde_json::from_str(text) {
            Ok(Value::Object(fields)) => Some(fields),
            _ => None,
        },
    }
}

/// The value of `name` when it is the payload's only field.
fn only_field(fields: &Option<Map<String, Value>>, name: &str) -> Option<Value> {
    let fields = fields.as_ref()?;
    (fields.len() == 1).then(|| fields.get(name).cloned())?
}

/// A non-empty set of ranks, some near the top of the u32 range.
fn ranks() -> impl Strategy<Value = IdSet> {
    let id = prop_oneof![4 => 0..100_000u32, 1 => u32::MAX - 64..=u32::MAX];
    let runs = prop::collection::vec((id.clone(), 0..1_000u32), 0..3);
    (prop::collection::btree_set(id, 1..20), runs).prop_map(|(ids, runs)| {
        let mut set: IdSet = ids.into_iter().collect();
        for (start, length) in runs {
            set = set.union(&IdSet::range(start, start.saturating_add(length)));
        }
        set
    })
}

/// The settings a reload may not change.
fn connection(config: &Config) -> impl PartialEq + std::fmt::Debug {
    (
        config.namespace.clone(),
        config.kubeconfig.clone(),
        config.job.clone(),
        config.minicluster.clone(),
        config.evict,
    )
}

/// Overlapping ranges cannot make a short payload expensive: the parser counts the ids
/// written, not only the set they make (a thousand `0-524287` took 40 s before).
#[test]
fn a_retire_of_overlapping_ranges_is_refused_past_the_id_limit() {
    let half = format!("0-{}", MAX_IDS / 2 - 1);
    let ranks = [half.as_str(); 3].join(",");
    let refusal = retire_request(Some(&json!({ "ranks": ranks }).to_string()))
        .expect_err("1.5 Mi ids written");
    assert_eq!(refusal.errno, EINVAL);
    assert!(refusal.message.contains("too many ids"), "{refusal:?}");
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn any_payload_is_a_request_or_a_refusal(payload in payload()) {
        let payload = payload.as_deref();
        let fields = fields(payload);

        // A status takes nothing, or the ranks to detail.
        let ranks_text = only_field(&fields, "ranks").and_then(|r| r.as_str().map(str::to_owned));
        let detail = ranks_text.as_deref().map(str::parse::<IdSet>);
        let status = status_request(payload);
        let plain = fields.as_ref().is_some_and(Map::is_empty);
        match (&status, &detail) {
            (Ok(None), _) => prop_assert!(plain),
            (Ok(Some(asked)), Some(Ok(given))) => prop_assert_eq!(asked, given),
            (Ok(Some(asked)), _) => prop_assert!(false, "{} parsed to {}", payload.unwrap_or(""), asked),
            (Err(refusal), _) => {
                prop_assert!(!plain && !matches!(detail, Some(Ok(_))), "{:?}", refusal);
                check_refusal(refusal)?;
                prop_assert_eq!(refusal.errno == EINVAL, matches!(detail, Some(Err(_))), "{:?}", refusal);
            }
        }

        let size = only_field(&fields, "size")
            .and_then(|size| size.as_u64())
            .and_then(|size| u32::try_from(size).ok());
        let resize = resize_request(payload);
        prop_assert_eq!(resize.as_ref().ok(), size.as_ref());
        if let Err(refusal) = &resize {
            check_refusal(refusal)?;
            prop_assert_eq!(refusal.errno, EPROTO);
        }

        // A well-formed retire names an idset: if that is not a non-empty set of ranks,
        // the request is invalid (EINVAL) rather than malformed (EPROTO).
        let ranks = ranks_text
            .as_deref()
            .and_then(|text| text.parse::<IdSet>().ok())
            .filter(|ranks| !ranks.is_empty());
        let retire = retire_request(payload);
        prop_assert_eq!(retire.as_ref().ok(), ranks.as_ref());
        if let Err(refusal) = &retire {
            check_refusal(refusal)?;
            prop_assert_eq!(refusal.errno == EINVAL, ranks_text.is_some(), "{:?}", refusal);
            // The message quotes a text that is no idset.
            if let Some(text) = ranks_text.filter(|text| text.parse::<IdSet>().is_err()) {
                prop_assert!(refusal.message.contains(&format!("{text:?}")), "{:?}", refusal);
            }
        }
    }

    #[test]
    fn well_formed_requests_parse_to_what_was_given(
        size in any::<u32>(),
        ranks in ranks(),
        pretty in any::<bool>(),
        bracketed in any::<bool>(),
    ) {
        let print = |value: Value| if pretty {
            serde_json::to_string_pretty(&value).expect("JSON prints")
        } else {
            value.to_string()
        };
        let written = if bracketed { format!("[{ranks}]") } else { ranks.to_string() };
        let resize = print(json!({"size": size}));
        let retire = print(json!({"ranks": written}));

        prop_assert_eq!(resize_request(Some(&resize)), Ok(size));
        prop_assert_eq!(retire_request(Some(&retire)), Ok(ranks.clone()));
        for empty in [None, Some("{}"), Some(" {\n} ")] {
            prop_assert_eq!(status_request(empty), Ok(None));
        }
        prop_assert_eq!(status_request(Some(&retire)), Ok(Some(ranks)));
        // Sent to the wrong method, a request is refused naming the field.
        for (payload, parsed, field) in [
            (&resize, retire_request(Some(&resize)).err(), "'size'"),
            (&retire, resize_request(Some(&retire)).err(), "'ranks'"),
            (&resize, status_request(Some(&resize)).err(), "'size'"),
        ] {
            let refusal = parsed.ok_or_else(|| TestCaseError::fail(format!("{payload} parsed")))?;
            prop_assert_eq!(refusal.errno, EPROTO);
            prop_assert!(refusal.message.contains(field), "{:?}", refusal);
        }
    }

    #[test]
    fn config_reload_keeps_the_connection_or_is_refused(
        loaded in valid_settings(),
        changes in prop::collection::vec((key(), prop::option::of(table_value())), 0..3),
        any_table in prop::option::weighted(0.25, table_text()),
    ) {
        let args = loaded.arguments();
        let current = Config::load(Some(&loaded.table().to_string()), &args)
            .map_err(|err| TestCaseError::fail(format!("valid settings refused: {err}")))?;
        // The new table: the loaded one changed here and there, or anything.
        let new_table = any_table.unwrap_or_else(|| {
            let mut table = loaded.table();
            for (key, value) in changes {
                match value {
                    Some(value) => table[&key] = value,
                    None => drop(table.as_object_mut().and_then(|t| t.remove(&key))),
                }
            }
            Some(table.to_string())
        });

        let reloaded = reloaded_config(new_table.as_deref(), &args, &current);
        match (reloaded, Config::load(new_table.as_deref(), &args)) {
            (Ok(config), Ok(load)) => {
                prop_assert_eq!(&config, &load);
                prop_assert_eq!(connection(&config), connection(&current));
            }
            (Err(refusal), Ok(load)) => {
                check_refusal(&refusal)?;
                prop_assert_eq!(refusal.errno, EINVAL);
                prop_assert!(refusal.message.contains("apply only at load"), "{:?}", refusal);
                prop_assert_ne!(connection(&load), connection(&current));
            }
            (Err(refusal), Err(err)) => {
                check_refusal(&refusal)?;
                prop_assert_eq!(refusal.errno, EINVAL);
                prop_assert_eq!(refusal.message, err.to_string());
            }
            (Ok(config), Err(err)) => {
                return Err(TestCaseError::fail(format!("reloaded {config:?} that fails to load: {err}")));
            }
        }
    }
}
