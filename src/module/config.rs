//! Module configuration: the broker config's `[fluxk8s]` table, overridden by the
//! `key=value` words given to `flux module load`.
//!
//! The broker parses its TOML files and hands the module the table as JSON;
//! [`Config::load`] reads that JSON text and the arguments. Pure, so public for tests
//! and fuzzers.

use std::path::PathBuf;

use serde::Serialize;
use serde_json::Value;
use tracing_subscriber::EnvFilter;

use crate::model::IdSet;

/// The effective configuration.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct Config {
    /// Kubernetes namespace of the MiniCluster (default: from kubeconfig or the pod).
    pub namespace: Option<String>,
    /// Path of a kubeconfig file (default: `KUBECONFIG`, else in-cluster).
    pub kubeconfig: Option<PathBuf>,
    /// The Indexed Job running the brokers (default: the broker hostname minus `-<rank>`).
    pub job: Option<String>,
    /// The MiniCluster owning the Job (default: the Job's owner).
    pub minicluster: Option<String>,
    /// Remove pods through the Eviction API (honours PodDisruptionBudgets) instead of
    /// DELETE.
    pub evict: bool,
    /// Never shrink below this many live ranks.
    pub min_size: u32,
    /// Ranks that are never retired.
    pub protect: IdSet,
    /// Seconds a drained rank still running jobs is kept before it is retired anyway.
    pub drain_grace: Option<f64>,
    /// Seconds a newly grown rank has to come online before it is drained.
    pub startup_timeout: f64,
    /// Freeze removals while more than this fraction of ranks is lost.
    pub max_lost_fraction: f64,
    /// Seconds between opposite moves (grow, then shrink).
    pub cooldown: f64,
    /// Plan and log every action, touch nothing.
    pub dry_run: bool,
    /// Size the instance to its job queue: grow for pending jobs, retire idle ranks.
    pub autoscale: bool,
    /// Seconds a rank must have had no job before autoscaling retires it.
    pub idle_timeout: f64,
    /// Ranks autoscaling adds per rolling minute, at most.
    pub max_grow_per_minute: u32,
    /// Size changes, pod deletes and broker shutdowns started per rolling minute, at most.
    pub max_actions_per_minute: u32,
    /// Which `tracing` events reach the broker log, in `RUST_LOG` directive syntax.
    pub log_filter: String,
}

/// fluxk8s's own lines from `info`, its dependencies' only from `warn`.
pub const DEFAULT_LOG_FILTER: &str = "warn,fluxk8s=info";

/// Parses `RUST_LOG`-style directives (`fluxk8s=debug,kube=info`).
pub fn log_filter(directives: &str) -> Result<EnvFilter, String> {
    EnvFilter::builder()
        .parse(directives)
        .map_err(|e| e.to_string())
}

impl Default for Config {
    fn default() -> Self {
        Config {
            namespace: None,
            kubeconfig: None,
            job: None,
            minicluster: None,
            evict: false,
            min_size: 1,
            protect: IdSet::new(),
            drain_grace: None,
            startup_timeout: 300.0,
            max_lost_fraction: 0.5,
            cooldown: 30.0,
            dry_run: false,
            autoscale: false,
            idle_timeout: 300.0,
            max_grow_per_minute: 10,
            max_actions_per_minute: 20,
            log_filter: DEFAULT_LOG_FILTER.to_owned(),
        }
    }
}

/// Where a bad value came from, for the error message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// A `key=value` word given to `flux module load`.
    Argument,
    /// The broker config's `[fluxk8s]` table.
    Table,
}

/// A configuration error, naming the key and what it accepts.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// A key fluxk8s does not know (a typo must not pass silently).
    #[error("unknown key '{key}' ({where_}); accepted keys: {accepted}", where_ = source_name(*.origin), accepted = accepted_keys())]
    UnknownKey { key: String, origin: Source },
    /// A known key with a value it does not accept.
    #[error("bad value for '{key}' ({where_}): got {got}, expected {expected}", where_ = source_name(*.origin))]
    BadValue {
        key: &'static str,
        origin: Source,
        got: String,
        expected: &'static str,
    },
    /// A bare module argument naming a key that is not a flag.
    #[error("'{key}' (module argument) needs a value: {key}=<{expected}>")]
    NeedsValue {
        key: &'static str,
        expected: &'static str,
    },
    /// The `[fluxk8s]` table is not a table (or not JSON at all).
    #[error("the [fluxk8s] table is not a TOML table")]
    NotATable,
}

fn source_name(origin: Source) -> &'static str {
    match origin {
        Source::Argument => "module argument",
        Source::Table => "[fluxk8s] table",
    }
}

/// Every key with what it accepts; the one list that parsing and errors share.
const KEYS: &[(&str, &str)] = &[
    ("namespace", "a Kubernetes namespace name"),
    ("kubeconfig", "a path to a kubeconfig file"),
    ("job", "a Job name"),
    ("minicluster", "a MiniCluster name"),
    ("evict", "true or false"),
    ("min-size", "a whole number >= 1"),
    ("protect", "an idset of ranks, e.g. 1-3,7"),
    ("drain-grace", "a duration such as 90, 30s, 5m, 1.5h, 1d"),
    (
        "startup-timeout",
        "a duration such as 90, 30s, 5m, 1.5h, 1d",
    ),
    ("max-lost-fraction", "a number from 0 to 1"),
    ("cooldown", "a duration such as 90, 30s, 5m, 1.5h, 1d"),
    ("dry-run", "true or false"),
    ("autoscale", "true or false"),
    ("idle-timeout", "a duration such as 90, 30s, 5m, 1.5h, 1d"),
    ("max-grow-per-minute", "a whole number >= 1"),
    ("max-actions-per-minute", "a whole number >= 1"),
    (
        "log-filter",
        "RUST_LOG directives, e.g. fluxk8s=debug,kube=info",
    ),
];

/// The keys a bare module argument turns on, as `flux module load resource noverify` does.
const FLAGS: &[&str] = &["evict", "dry-run", "autoscale"];

fn accepted_keys() -> String {
    KEYS.iter().map(|(k, _)| *k).collect::<Vec<_>>().join(", ")
}

/// One raw setting: a TOML value (as JSON) or the text after `=` in an argument.
enum Raw<'a> {
    Json(&'a Value),
    Text(&'a str),
}

impl Raw<'_> {
    fn describe(&self) -> String {
        match self {
            Raw::Json(v) => v.to_string(),
            Raw::Text(t) => format!("{t:?}"),
        }
    }

    fn text(&self) -> Option<&str> {
        match self {
            Raw::Json(Value::String(s)) => Some(s),
            Raw::Json(_) => None,
            Raw::Text(t) => Some(t),
        }
    }

    fn number(&self) -> Option<f64> {
        match self {
            Raw::Json(Value::Number(n)) => n.as_f64(),
            Raw::Json(_) => None,
            Raw::Text(t) => t.parse().ok().filter(|v: &f64| v.is_finite()),
        }
    }
}

impl Config {
    /// Builds the configuration from the `[fluxk8s]` table (JSON text, if the broker
    /// config has one) and the module arguments, which win.
    pub fn load(table: Option<&str>, args: &[String]) -> Result<Config, ConfigError> {
        let mut config = Config::default();
        if let Some(table) = table {
            let value: Value = serde_json::from_str(table).map_err(|_| ConfigError::NotATable)?;
            let Value::Object(entries) = &value else {
                return Err(ConfigError::NotATable);
            };
            for (key, value) in entries {
                config.set(key, Raw::Json(value), Source::Table)?;
            }
        }
        for arg in args {
            let (key, value) = match arg.split_once('=') {
                Some(pair) => pair,
                None if FLAGS.contains(&arg.as_str()) => (arg.as_str(), "true"),
                None => {
                    return Err(match KEYS.iter().find(|(k, _)| k == arg) {
                        Some(&(key, expected)) => ConfigError::NeedsValue { key, expected },
                        None => ConfigError::UnknownKey {
                            key: arg.clone(),
                            origin: Source::Argument,
                        },
                    });
                }
            };
            config.set(key, Raw::Text(value), Source::Argument)?;
        }
        Ok(config)
    }

    /// The settings that only take effect when the Kubernetes connection is made.
    pub fn connection_differs(&self, other: &Config) -> bool {
        let connection = |c: &Config| {
            (
                c.namespace.clone(),
                c.kubeconfig.clone(),
                c.job.clone(),
                c.minicluster.clone(),
                c.evict,
            )
        };
        connection(self) != connection(other)
    }

    fn set(&mut self, key: &str, raw: Raw<'_>, origin: Source) -> Result<(), ConfigError> {
        let Some(&(key, expected)) = KEYS.iter().find(|(k, _)| *k == key) else {
            return Err(ConfigError::UnknownKey {
                key: key.to_owned(),
                origin,
            });
        };
        let bad = || ConfigError::BadValue {
            key,
            origin,
            got: raw.describe(),
            expected,
        };
        let name = || {
            raw.text()
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .ok_or_else(bad)
        };
        match key {
            "namespace" => self.namespace = Some(name()?),
            "kubeconfig" => self.kubeconfig = Some(PathBuf::from(name()?)),
            "job" => self.job = Some(name()?),
            "minicluster" => self.minicluster = Some(name()?),
            "min-size" => self.min_size = positive_whole(&raw).ok_or_else(bad)?,
            "max-grow-per-minute" => {
                self.max_grow_per_minute = positive_whole(&raw).ok_or_else(bad)?
            }
            "max-actions-per-minute" => {
                self.max_actions_per_minute = positive_whole(&raw).ok_or_else(bad)?
            }
            "protect" => self.protect = raw.text().and_then(|t| t.parse().ok()).ok_or_else(bad)?,
            "drain-grace" => self.drain_grace = Some(duration(&raw).ok_or_else(bad)?),
            "startup-timeout" => self.startup_timeout = duration(&raw).ok_or_else(bad)?,
            "cooldown" => self.cooldown = duration(&raw).ok_or_else(bad)?,
            "max-lost-fraction" => {
                self.max_lost_fraction = raw
                    .number()
                    .filter(|f| (0.0..=1.0).contains(f))
                    .ok_or_else(bad)?
            }
            "dry-run" => self.dry_run = boolean(&raw).ok_or_else(bad)?,
            "autoscale" => self.autoscale = boolean(&raw).ok_or_else(bad)?,
            "idle-timeout" => self.idle_timeout = duration(&raw).ok_or_else(bad)?,
            "evict" => self.evict = boolean(&raw).ok_or_else(bad)?,
            "log-filter" => {
                let directives = name()?;
                log_filter(&directives).map_err(|_| bad())?;
                self.log_filter = directives;
            }
            _ => unreachable!("every key in KEYS is handled"),
        }
        Ok(())
    }
}

/// A whole number from 1 to `u32::MAX`.
fn positive_whole(raw: &Raw<'_>) -> Option<u32> {
    raw.number()
        .filter(|n| n.fract() == 0.0 && *n >= 1.0 && *n <= f64::from(u32::MAX))
        .map(|n| n as u32)
}

/// A duration in seconds: a number, or Flux's form with an `s`, `m`, `h` or `d` suffix.
fn duration(raw: &Raw<'_>) -> Option<f64> {
    let seconds = match raw {
        Raw::Json(Value::Number(n)) => n.as_f64()?,
        _ => {
            let text = raw.text()?.trim();
            let (number, unit) = match text.char_indices().last()? {
                (i, 's') => (&text[..i], 1.0),
                (i, 'm') => (&text[..i], 60.0),
                (i, 'h') => (&text[..i], 3600.0),
                (i, 'd') => (&text[..i], 86400.0),
                _ => (text, 1.0),
            };
            number.parse::<f64>().ok()? * unit
        }
    };
    (seconds.is_finite() && seconds >= 0.0).then_some(seconds)
}

fn boolean(raw: &Raw<'_>) -> Option<bool> {
    match raw {
        Raw::Json(Value::Bool(b)) => Some(*b),
        Raw::Json(_) => None,
        Raw::Text(t) => match *t {
            "true" | "1" | "yes" => Some(true),
            "false" | "0" | "no" => Some(false),
            _ => None,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(words: &[&str]) -> Vec<String> {
        words.iter().map(|w| w.to_string()).collect()
    }

    #[test]
    fn defaults_without_table_or_arguments() {
        assert_eq!(Config::load(None, &[]).unwrap(), Config::default());
    }

    #[test]
    fn arguments_override_the_table() {
        let table = r#"{"namespace":"flux","min-size":2,"cooldown":"1m","dry-run":true}"#;
        let config = Config::load(Some(table), &args(&["min-size=3", "protect=1-2,5"])).unwrap();
        assert_eq!(config.namespace.as_deref(), Some("flux"));
        assert_eq!(config.min_size, 3);
        assert_eq!(config.cooldown, 60.0);
        assert!(config.dry_run);
        assert_eq!(config.protect.to_string(), "1-2,5");
    }

    #[test]
    fn autoscale_keys_are_read() {
        let config = Config::load(
            Some(r#"{"autoscale":true,"idle-timeout":"10m"}"#),
            &args(&["max-grow-per-minute=4"]),
        )
        .unwrap();
        assert!(config.autoscale);
        assert_eq!(config.idle_timeout, 600.0);
        assert_eq!(config.max_grow_per_minute, 4);
    }

    #[test]
    fn durations_take_flux_units_and_plain_seconds() {
        let config = Config::load(
            Some(r#"{"startup-timeout":90,"drain-grace":"1.5h"}"#),
            &args(&["cooldown=2d"]),
        )
        .unwrap();
        assert_eq!(config.startup_timeout, 90.0);
        assert_eq!(config.drain_grace, Some(5400.0));
        assert_eq!(config.cooldown, 172800.0);
    }

    #[test]
    fn unknown_key_is_named_with_the_accepted_list() {
        let err = Config::load(None, &args(&["nmespace=x"])).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("unknown key 'nmespace' (module argument)"),
            "{text}"
        );
        assert!(
            text.contains("accepted keys: namespace, kubeconfig"),
            "{text}"
        );
        let err = Config::load(Some(r#"{"size":3}"#), &[]).unwrap_err();
        assert!(
            err.to_string().contains("'size' ([fluxk8s] table)"),
            "{err}"
        );
    }

    #[test]
    fn bad_values_name_key_value_and_expectation() {
        let cases = [
            ("min-size=0", "min-size", "a whole number >= 1"),
            ("min-size=2.5", "min-size", "a whole number >= 1"),
            ("protect=1-", "protect", "an idset"),
            ("cooldown=soon", "cooldown", "a duration"),
            ("cooldown=-5s", "cooldown", "a duration"),
            ("max-lost-fraction=1.5", "max-lost-fraction", "from 0 to 1"),
            ("dry-run=maybe", "dry-run", "true or false"),
            ("autoscale=on", "autoscale", "true or false"),
            ("idle-timeout=later", "idle-timeout", "a duration"),
            (
                "max-grow-per-minute=0",
                "max-grow-per-minute",
                "a whole number >= 1",
            ),
            ("namespace=", "namespace", "namespace name"),
        ];
        for (arg, key, expected) in cases {
            let text = Config::load(None, &args(&[arg])).unwrap_err().to_string();
            assert!(text.contains(&format!("'{key}'")), "{arg}: {text}");
            assert!(text.contains(expected), "{arg}: {text}");
        }
    }

    #[test]
    fn table_values_must_have_the_right_type() {
        let err = Config::load(Some(r#"{"dry-run":"yes"}"#), &[]).unwrap_err();
        assert!(err.to_string().contains("'dry-run'"), "{err}");
        let err = Config::load(Some(r#"{"namespace":5}"#), &[]).unwrap_err();
        assert!(err.to_string().contains("got 5"), "{err}");
        assert_eq!(
            Config::load(Some("[1]"), &[]).unwrap_err(),
            ConfigError::NotATable
        );
    }

    #[test]
    fn a_bare_flag_turns_its_key_on_and_other_keys_need_values() {
        let config = Config::load(None, &args(&["dry-run", "autoscale", "evict"])).unwrap();
        assert!(config.dry_run && config.autoscale && config.evict);
        let err = Config::load(None, &args(&["min-size"])).unwrap_err();
        assert_eq!(
            err.to_string(),
            "'min-size' (module argument) needs a value: min-size=<a whole number >= 1>"
        );
        let err = Config::load(None, &args(&["dryrun"])).unwrap_err();
        assert!(err.to_string().contains("unknown key 'dryrun'"), "{err}");
    }

    #[test]
    fn the_log_filter_is_checked_at_load() {
        assert_eq!(Config::default().log_filter, "warn,fluxk8s=info");
        let config =
            Config::load(Some(r#"{"log-filter":"fluxk8s=debug,kube=info"}"#), &[]).unwrap();
        assert_eq!(config.log_filter, "fluxk8s=debug,kube=info");
        for bad in ["fluxk8s=loud", "[unclosed"] {
            let err = Config::load(None, &args(&[&format!("log-filter={bad}")])).unwrap_err();
            assert!(
                err.to_string().contains("bad value for 'log-filter'"),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn shipped_example_is_valid_and_documents_every_key() {
        let text = include_str!("../../etc/fluxk8s.toml");
        let document: toml::Table = toml::from_str(text).expect("etc/fluxk8s.toml is TOML");
        let table = serde_json::to_string(&document["fluxk8s"]).unwrap();
        assert_eq!(Config::load(Some(&table), &[]).unwrap(), Config::default());
        for (key, _) in KEYS {
            assert!(
                text.contains(&format!("{key} =")),
                "etc/fluxk8s.toml lacks {key}"
            );
        }
    }

    #[test]
    fn connection_settings_are_told_apart() {
        let a = Config::default();
        let b = Config {
            min_size: 4,
            ..Config::default()
        };
        let c = Config {
            namespace: Some("x".into()),
            ..Config::default()
        };
        let d = Config {
            evict: true,
            ..Config::default()
        };
        assert!(!a.connection_differs(&b));
        assert!(a.connection_differs(&c));
        assert!(
            a.connection_differs(&d),
            "the removal path is fixed at load"
        );
    }
}
