//! Fuzzing the module configuration: the broker config's `[fluxk8s]` table (as JSON, the
//! form the broker hands over, and as the TOML it is written in) and the `key=value`
//! module arguments. Anything either loads or is refused with an error naming the
//! offending key or argument; valid settings load to the values given.
//!
//! `FUZZ_CASES=N` sets the cases per target (default 2,000).

mod fuzz_support;

use fluxk8s::config::{Config, ConfigError, Source};
use proptest::prelude::*;
use serde_json::{Value, json};

use fuzz_support::config;
use fuzz_support::settings::{KEYS, arguments, key, table_text, valid_settings, value_text};

/// Holds for every configuration that loads: each setting is within what it accepts.
fn check_loaded(config: &Config) -> Result<(), TestCaseError> {
    prop_assert!(config.min_size >= 1);
    prop_assert!(config.max_grow_per_minute >= 1);
    prop_assert!(config.max_actions_per_minute >= 1);
    prop_assert!((0.0..=1.0).contains(&config.max_lost_fraction));
    let durations = [
        config.startup_timeout,
        config.cooldown,
        config.idle_timeout,
        config.drain_grace.unwrap_or(0.0),
    ];
    prop_assert!(
        durations.iter().all(|d| d.is_finite() && *d >= 0.0),
        "{durations:?}"
    );
    let names = [&config.namespace, &config.job, &config.minicluster];
    prop_assert!(
        names
            .iter()
            .all(|n| n.as_ref().is_none_or(|n| !n.is_empty()))
    );
    Ok(())
}

/// The arguments whose key is `key`.
fn arguments_for<'a>(args: &'a [String], key: &'a str) -> impl Iterator<Item = &'a String> {
    args.iter().filter(move |arg| {
        arg.split_once('=')
            .map_or(arg.as_str() == key, |(k, _)| k == key)
    })
}

/// What an error blames: its kind, the key and where the key came from. Not the value as
/// printed: a float read from JSON text may print back one ulp apart (serde_json's
/// default float parsing).
fn blamed(err: &ConfigError) -> Option<(&'static str, &str, Source)> {
    match err {
        ConfigError::UnknownKey { key, origin } => Some(("unknown key", key, *origin)),
        ConfigError::BadValue { key, origin, .. } => Some(("bad value", key, *origin)),
        ConfigError::NeedsValue { key, .. } => Some(("needs a value", key, Source::Argument)),
        ConfigError::NotATable => None,
    }
}

/// Loads `table` and `args`: either a configuration within bounds, or an error that names
/// an entry of the input which is refused on its own.
fn check_load(table: Option<&str>, args: &[String]) -> Result<(), TestCaseError> {
    let err = match Config::load(table, args) {
        Ok(config) => return check_loaded(&config),
        Err(err) => err,
    };
    let text = err.to_string();
    let object = || {
        table
            .and_then(|t| serde_json::from_str::<Value>(t).ok())
            .and_then(|v| v.as_object().cloned())
    };
    let (key, origin) = match &err {
        ConfigError::NotATable => {
            prop_assert!(object().is_none(), "{table:?}");
            return Ok(());
        }
        ConfigError::NeedsValue { key, .. } => {
            prop_assert!(
                args.iter().any(|arg| arg == key),
                "{key:?} not bare in {args:?}"
            );
            prop_assert!(
                !["evict", "dry-run", "autoscale"].contains(key),
                "a flag: {text}"
            );
            (*key, Source::Argument)
        }
        ConfigError::UnknownKey { key, origin } => {
            prop_assert!(!KEYS.contains(&key.as_str()), "{text}");
            (key.as_str(), *origin)
        }
        ConfigError::BadValue { key, origin, .. } => (*key, *origin),
    };
    prop_assert!(text.contains(&format!("'{key}'")), "{text}");
    let alone = match origin {
        Source::Table => {
            let value = object().and_then(|o| o.get(key).cloned());
            prop_assert!(value.is_some(), "{key:?} is not in {table:?}");
            let entry = json!({ key: value }).to_string();
            vec![Config::load(Some(&entry), &[])]
        }
        Source::Argument => {
            // The table is read first, so it was fine.
            prop_assert!(Config::load(table, &[]).is_ok());
            arguments_for(args, key)
                .map(|arg| Config::load(None, std::slice::from_ref(arg)))
                .collect()
        }
    };
    prop_assert!(
        alone
            .iter()
            .any(|result| result.as_ref().err().and_then(blamed) == blamed(&err)),
        "no entry for {key:?} is refused alone: {text}"
    );
    Ok(())
}

/// A TOML value as written in a file: well-typed or not, sometimes malformed.
fn toml_value() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => value_text().prop_map(|text| Value::from(text).to_string()),
        1 => value_text().prop_map(|text| format!("'{text}'")),
        2 => any::<i64>().prop_map(|n| n.to_string()),
        2 => prop::sample::select(vec![
            "1.5", "0.5", "1e3", "inf", "-inf", "nan", "-0.0", "3.0", "1_000", "0x1F", "+5",
            "true", "false", "1979-05-27T07:32:00Z", "1979-05-27", "07:32:00", "[1, \"a\"]", "[]",
            "{ a = 1 }", "{}", "\"\"", "\"1-3,7\"", "\"5m\"",
        ])
        .prop_map(str::to_owned),
        1 => "\\PC{0,8}",
    ]
}

/// A key as written in a file: bare when it can be, else quoted.
fn toml_key() -> impl Strategy<Value = String> {
    key().prop_map(|key| {
        let bare = !key.is_empty()
            && key
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if bare {
            key
        } else {
            Value::from(key).to_string()
        }
    })
}

/// A broker config file: a `[fluxk8s]` table (or something in its place) and entries.
fn toml_document() -> impl Strategy<Value = String> {
    let header = prop_oneof![
        6 => Just("[fluxk8s]"),
        1 => prop::sample::select(vec!["", "[other]", "[fluxk8s.sub]", "[[fluxk8s]]", "fluxk8s = 5"]),
    ];
    let entries = prop::collection::vec((toml_key(), toml_value()), 0..6);
    (header, entries).prop_map(|(header, entries)| {
        let mut text = format!("{header}\n");
        for (key, value) in entries {
            text.push_str(&format!("{key} = {value}\n"));
        }
        text
    })
}

/// The `[fluxk8s]` table of a parsed config file, as the broker hands it to the module.
fn fluxk8s_table(document: &toml::Table) -> Option<String> {
    document
        .get("fluxk8s")
        .map(|table| serde_json::to_string(table).expect("TOML values convert to JSON"))
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn any_table_and_arguments_load_or_name_the_offending_entry(
        table in table_text(),
        args in arguments(),
    ) {
        check_load(table.as_deref(), &args)?;
    }

    #[test]
    fn toml_files_load_or_are_refused(text in toml_document(), args in arguments()) {
        match toml::from_str::<toml::Table>(&text) {
            // The broker refuses a malformed file before the module sees it.
            Err(err) => prop_assert!(!err.to_string().is_empty()),
            Ok(document) => check_load(fluxk8s_table(&document).as_deref(), &args)?,
        }
    }

    #[test]
    fn valid_settings_load_to_the_values_given(
        (settings, args) in valid_settings()
            .prop_flat_map(|settings| {
                let args = settings.arguments();
                (Just(settings), Just(args).prop_shuffle())
            }),
    ) {
        // Through a TOML file, the way the broker reads it.
        let table = toml::Value::try_from(settings.table()).expect("valid settings are TOML");
        let mut document = toml::Table::new();
        document.insert("fluxk8s".to_owned(), table);
        let file = toml::to_string(&document).expect("a table prints as TOML");
        let document: toml::Table = toml::from_str(&file).expect("printed TOML parses back");
        let loaded = Config::load(fluxk8s_table(&document).as_deref(), &args)
            .map_err(|err| TestCaseError::fail(format!("{file}{args:?}: {err}")))?;
        let loaded = serde_json::to_value(loaded).expect("a config serializes");
        prop_assert_eq!(loaded, settings.loads_to(), "{}{:?}", file, args);
    }
}
