//! Generators for the module configuration: `[fluxk8s]` tables (as the JSON the broker
//! hands over, and as TOML text), `key=value` module arguments, and valid settings with
//! the value each must load to.

use proptest::prelude::*;
use serde_json::{Value, json};

use fluxk8s::config::Config;

use super::{any_json, idset_text};

/// Every key of the `[fluxk8s]` table, as documented in `etc/fluxk8s.toml`.
pub const KEYS: [&str; 17] = [
    "namespace",
    "kubeconfig",
    "job",
    "minicluster",
    "evict",
    "min-size",
    "protect",
    "drain-grace",
    "startup-timeout",
    "max-lost-fraction",
    "cooldown",
    "dry-run",
    "autoscale",
    "idle-timeout",
    "max-grow-per-minute",
    "max-actions-per-minute",
    "log-filter",
];

/// The keys that only apply when the module loads (a reload may not change them).
pub const CONNECTION_KEYS: [&str; 5] = ["namespace", "kubeconfig", "job", "minicluster", "evict"];

/// A key: mostly a real one, sometimes a near miss or anything.
pub fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        8 => prop::sample::select(KEYS.to_vec()).prop_map(str::to_owned),
        2 => prop::sample::select(vec![
            "nmespace", "min_size", "Min-Size", "size", "fluxk8s", "", " evict", "protect ",
        ])
        .prop_map(str::to_owned),
        1 => "\\PC{0,10}",
    ]
}

/// Text a setting might be given as: numbers, durations, booleans, idsets, names and
/// anything else, well formed or not.
pub fn value_text() -> impl Strategy<Value = String> {
    prop_oneof![
        2 => prop::sample::select(vec![
            "0", "1", "-1", "2.5", "1e3", "4294967295", "4294967296", "NaN", "inf", "-0", "0.5",
            "1.0", "", " 5", "0x10",
        ])
        .prop_map(str::to_owned),
        2 => prop::sample::select(vec![
            "30s", "5m", "1.5h", "1d", "-5s", "s", "1x", " 5m ", "1e308d", "NaNs", "1.5", "\u{e9}s",
        ])
        .prop_map(str::to_owned),
        1 => prop::sample::select(vec!["true", "false", "yes", "no", "1", "0", "on", "True"])
            .prop_map(str::to_owned),
        2 => idset_text(10_000),
        1 => any::<f64>().prop_map(|f| f.to_string()),
        1 => any::<i64>().prop_map(|n| n.to_string()),
        2 => "\\PC{0,16}",
    ]
}

/// A value in the `[fluxk8s]` table: as the setting's type would have it, or any JSON.
pub fn table_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        3 => value_text().prop_map(Value::from),
        1 => any::<bool>().prop_map(Value::from),
        2 => any::<i64>().prop_map(Value::from),
        1 => any::<u64>().prop_map(Value::from),
        1 => any::<f64>().prop_map(|f| json!(f)),
        1 => (0.0..=1.0f64).prop_map(Value::from),
        2 => any_json(),
    ]
}

/// The `[fluxk8s]` table as the broker would hand it over (JSON text), or anything.
pub fn table_text() -> impl Strategy<Value = Option<String>> {
    let object = prop::collection::btree_map(key(), table_value(), 0..5)
        .prop_map(|entries| Value::Object(entries.into_iter().collect()).to_string());
    prop_oneof![
        1 => Just(None),
        6 => object.prop_map(Some),
        1 => any_json().prop_map(|v| Some(v.to_string())),
        1 => "\\PC{0,24}".prop_map(Some),
    ]
}

/// Module arguments: mostly `key=value`, sometimes a word without `=`.
pub fn arguments() -> impl Strategy<Value = Vec<String>> {
    let argument = prop_oneof![
        8 => (key(), value_text()).prop_map(|(key, value)| format!("{key}={value}")),
        1 => key(),
        1 => "\\PC{0,16}",
    ];
    prop::collection::vec(argument, 0..4)
}

/// One valid setting: how the `[fluxk8s]` table spells it, how a module argument spells
/// it, and the value it loads to (as `Config` serializes it).
#[derive(Debug, Clone)]
pub struct ValidSetting {
    pub key: &'static str,
    pub table: Value,
    pub argument: String,
    pub loads_to: Value,
}

impl ValidSetting {
    fn new(key: &'static str, table: Value, argument: String, loads_to: Value) -> Self {
        ValidSetting {
            key,
            table,
            argument: format!("{key}={argument}"),
            loads_to,
        }
    }
}

/// A valid value for `key`, in its table and argument spellings.
pub fn valid_setting(key: &'static str) -> BoxedStrategy<ValidSetting> {
    match key {
        "namespace" | "kubeconfig" | "job" | "minicluster" => "\\PC{1,20}"
            .prop_map(move |name| ValidSetting::new(key, json!(name), name.clone(), json!(name)))
            .boxed(),
        "evict" | "dry-run" | "autoscale" => (any::<bool>(), 0..3usize)
            .prop_map(move |(on, spelling)| {
                let words = if on {
                    ["true", "1", "yes"]
                } else {
                    ["false", "0", "no"]
                };
                ValidSetting::new(key, json!(on), words[spelling].to_owned(), json!(on))
            })
            .boxed(),
        "min-size" | "max-grow-per-minute" | "max-actions-per-minute" => (
            prop_oneof![3 => 1..100u32, 1 => 1..=u32::MAX],
            any::<bool>(),
        )
            .prop_map(move |(n, as_float)| {
                // TOML may write a whole number as a float; so may an argument.
                let (table, argument) = if as_float {
                    (json!(f64::from(n)), format!("{n}.0"))
                } else {
                    (json!(n), n.to_string())
                };
                ValidSetting::new(key, table, argument, json!(n))
            })
            .boxed(),
        "protect" => (
            prop::collection::btree_set(0..10_000u32, 0..12),
            any::<bool>(),
        )
            .prop_map(move |(ranks, bracketed)| {
                let text = ranks
                    .iter()
                    .map(u32::to_string)
                    .collect::<Vec<_>>()
                    .join(",");
                let canonical: fluxk8s::model::IdSet = ranks.into_iter().collect();
                let written = if bracketed { format!("[{text}]") } else { text };
                ValidSetting::new(
                    key,
                    json!(written),
                    written.clone(),
                    json!(canonical.to_string()),
                )
            })
            .boxed(),
        "drain-grace" | "startup-timeout" | "cooldown" | "idle-timeout" => (
            0..1_000_000u32,
            any::<bool>(),
            prop::sample::select(vec![
                ("", 1.0),
                ("s", 1.0),
                ("m", 60.0),
                ("h", 3600.0),
                ("d", 86400.0),
            ]),
            any::<bool>(),
        )
            .prop_map(move |(whole, half, (unit, scale), table_as_number)| {
                let number = f64::from(whole) + if half { 0.5 } else { 0.0 };
                let seconds = number * scale;
                let text = format!("{number}{unit}");
                let table = if table_as_number {
                    json!(seconds)
                } else {
                    json!(text)
                };
                ValidSetting::new(key, table, text, json!(seconds))
            })
            .boxed(),
        // Fractions as people write them, up to 15 digits: the broker hands the table
        // over as JSON, and serde_json's default float parsing may land one ulp off
        // on 17-digit numbers (e.g. 0.21291890726713458).
        "max-lost-fraction" => (1..=15u32)
            .prop_flat_map(|digits| (Just(digits), 0..=10u64.pow(digits)))
            .prop_map(move |(digits, scaled)| {
                let one = 10u64.pow(digits);
                let width = digits as usize;
                let written = format!("{}.{:0width$}", scaled / one, scaled % one);
                let fraction: f64 = written.parse().expect("a decimal parses");
                ValidSetting::new(key, json!(fraction), written, json!(fraction))
            })
            .boxed(),
        "log-filter" => (
            prop::sample::select(vec!["fluxk8s", "kube", "hyper", "tower"]),
            prop::sample::select(vec!["error", "warn", "info", "debug", "trace", "off"]),
            prop::sample::select(vec!["", "warn,", "info,"]),
        )
            .prop_map(move |(target, level, global)| {
                let directives = format!("{global}{target}={level}");
                ValidSetting::new(
                    key,
                    json!(directives),
                    directives.clone(),
                    json!(directives),
                )
            })
            .boxed(),
        other => panic!("no valid setting for unknown key {other:?}"),
    }
}

/// For every key, maybe a valid table entry and maybe a valid argument.
#[derive(Debug, Clone)]
pub struct ValidSettings(pub Vec<(Option<ValidSetting>, Option<ValidSetting>)>);

impl ValidSettings {
    /// The `[fluxk8s]` table holding the table entries, as JSON.
    pub fn table(&self) -> Value {
        let entries = self.0.iter().filter_map(|(entry, _)| entry.as_ref());
        Value::Object(
            entries
                .map(|setting| (setting.key.to_owned(), setting.table.clone()))
                .collect(),
        )
    }

    /// The module arguments.
    pub fn arguments(&self) -> Vec<String> {
        let arguments = self.0.iter().filter_map(|(_, argument)| argument.as_ref());
        arguments.map(|setting| setting.argument.clone()).collect()
    }

    /// The configuration these settings load to, as `Config` serializes it: an argument
    /// overrides the table, which overrides the default.
    pub fn loads_to(&self) -> Value {
        let mut config = serde_json::to_value(Config::default()).expect("a config serializes");
        for (entry, argument) in &self.0 {
            if let Some(setting) = argument.as_ref().or(entry.as_ref()) {
                config[setting.key] = setting.loads_to.clone();
            }
        }
        config
    }
}

/// Any mix of valid table entries and arguments, over every key.
pub fn valid_settings() -> impl Strategy<Value = ValidSettings> {
    let per_key: Vec<_> = KEYS
        .iter()
        .map(|key| {
            (
                prop::option::of(valid_setting(key)),
                prop::option::of(valid_setting(key)),
            )
        })
        .collect();
    per_key.prop_map(ValidSettings)
}
