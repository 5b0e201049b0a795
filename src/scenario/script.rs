//! The scenario format: one command per line, `#` starts a comment, words are separated
//! by spaces and `"..."` quotes a word with spaces. The first command describes the
//! cluster; a comment before it is the title.
//!
//! ```text
//! # Downsize walkthrough
//! cluster minicluster size=4 max=10 backoff-per-index=0
//! drain 2 "Goodbye rank 2"
//! wait converged
//! resize 3
//! wait converged
//! expect live 0,1,3
//! ```
//!
//! Commands: `cluster minicluster|bare-job size=N [max=M] [backoff-per-index=K]
//! [complete-workers] [name=NAME]`; `drain RANKS "reason"`, `undrain RANKS` (an
//! administrator, in Flux); `resize N` (an administrator asks fluxk8s), `app-request N`
//! (an application asks fluxk8s), `retire RANKS`; `kill-pod RANK` (another client deletes
//! the pod); `restart-leader`; `wait converged`, `wait 2s`, `wait 500ms`; `expect live
//! RANKS`, `expect pods INDEXES`, `expect drained RANKS`, `expect size N`, `expect phase
//! RANK PHASE`, `expect deletes N`. RANKS is an idset such as `0-1,3`, or `-` for none.

use std::path::Path;
use std::time::Duration;

use super::spec::{ClusterSpec, JobKind};
use crate::model::IdSet;

/// The longest `wait` a scenario may ask for.
const LONGEST_WAIT: Duration = Duration::from_secs(60);
/// Planner phases an `expect phase` may name (as the status writes them).
const PHASES: [&str; 6] = ["up", "starting", "lost", "retiring", "retired", "drained"];

/// What is wrong with a scenario, and on which line (1-based; 0 for the whole file).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {what}")]
pub struct ParseError {
    pub line: usize,
    pub what: String,
}

/// A parsed scenario.
#[derive(Debug, Clone, PartialEq)]
pub struct Script {
    pub title: String,
    pub cluster: ClusterSpec,
    pub steps: Vec<Step>,
}

/// One command with where it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    pub line: usize,
    /// The line as written, without its comment.
    pub text: String,
    pub command: Command,
}

/// One scenario command after the `cluster` line.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// An administrator drains ranks in Flux.
    Drain {
        ranks: IdSet,
        reason: String,
    },
    /// An administrator undrains ranks in Flux.
    Undrain {
        ranks: IdSet,
    },
    /// An administrator asks fluxk8s for a size (by hand: patches the size).
    Resize(u32),
    /// An application asks fluxk8s for a size through its RPC (by hand: patches the size).
    AppRequest(u32),
    /// Retire these ranks for good (by hand: drain them and lower the size).
    Retire(IdSet),
    /// Another client deletes a rank's pod.
    KillPod(u32),
    /// The Flux leader restarts, losing its drains; fluxk8s restarts with it.
    RestartLeader,
    WaitConverged,
    Wait(Duration),
    Expect(Expectation),
}

/// A check on the state at that point of the scenario.
#[derive(Debug, Clone, PartialEq)]
pub enum Expectation {
    /// Exactly these ranks are up and not drained in Flux.
    Live(IdSet),
    /// Exactly these indexes have live pods.
    Pods(IdSet),
    /// Exactly these ranks are drained in Flux.
    Drained(IdSet),
    /// The size asked of Kubernetes (MiniCluster size or Job completions).
    Size(u32),
    /// fluxk8s reports this phase for the rank.
    Phase { rank: u32, phase: String },
    /// fluxk8s deleted this many pods so far.
    Deletes(usize),
}

impl Script {
    /// Reads and parses a scenario file; errors name the file and line.
    pub fn load(path: &Path) -> Result<Script, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        Script::parse(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// Parses a scenario.
    pub fn parse(text: &str) -> Result<Script, ParseError> {
        let mut title = None;
        let mut cluster = None;
        let mut steps = Vec::new();
        for (index, raw) in text.lines().enumerate() {
            let line = index + 1;
            let fail = |what: String| ParseError { line, what };
            let Words {
                words,
                code,
                comment,
            } = split_words(raw).map_err(fail)?;
            let Some((command, args)) = words.split_first() else {
                if cluster.is_none() && title.is_none() {
                    title = comment.filter(|c| !c.is_empty());
                }
                continue;
            };
            let text = code.to_owned();
            match &cluster {
                None if command == "cluster" => cluster = Some(parse_cluster(args).map_err(fail)?),
                None => {
                    return Err(fail(format!(
                        "the first command must be `cluster ...`, not `{command}`"
                    )));
                }
                Some(_) if command == "cluster" => {
                    return Err(fail("only one `cluster` line is allowed".to_owned()));
                }
                Some(spec) => {
                    let command = parse_command(command, args, spec).map_err(fail)?;
                    steps.push(Step {
                        line,
                        text,
                        command,
                    });
                }
            }
        }
        let cluster = cluster.ok_or_else(|| ParseError {
            line: 0,
            what: "no `cluster` line".to_owned(),
        })?;
        Ok(Script {
            title: title.unwrap_or_else(|| "scenario".to_owned()),
            cluster,
            steps,
        })
    }
}

/// One line split up: its words, the text before any comment, and the comment.
struct Words<'a> {
    words: Vec<String>,
    code: &'a str,
    /// Without the `#`, trimmed.
    comment: Option<String>,
}

/// Splits a line into words; a `#` outside quotes starts a comment.
fn split_words(line: &str) -> Result<Words<'_>, String> {
    let mut words = Vec::new();
    let mut chars = line.char_indices().peekable();
    while let Some(&(at, c)) = chars.peek() {
        match c {
            c if c.is_whitespace() => {
                chars.next();
            }
            '#' => {
                return Ok(Words {
                    words,
                    code: line[..at].trim(),
                    comment: Some(line[at + 1..].trim().to_owned()),
                });
            }
            '"' => {
                chars.next();
                let mut word = String::new();
                loop {
                    match chars.next() {
                        Some((_, '"')) => break,
                        Some((_, c)) => word.push(c),
                        None => return Err("unterminated quote".to_owned()),
                    }
                }
                words.push(word);
            }
            _ => {
                let mut word = String::new();
                while let Some(&(_, c)) = chars.peek() {
                    if c.is_whitespace() || c == '#' || c == '"' {
                        break;
                    }
                    word.push(c);
                    chars.next();
                }
                words.push(word);
            }
        }
    }
    Ok(Words {
        words,
        code: line.trim(),
        comment: None,
    })
}

fn number<T: std::str::FromStr>(what: &str, text: &str) -> Result<T, String> {
    text.parse()
        .map_err(|_| format!("{what}: expected a number, got {text:?}"))
}

fn parse_cluster(args: &[String]) -> Result<ClusterSpec, String> {
    let usage = "expected `cluster minicluster|bare-job size=N [max=M] [backoff-per-index=K] \
                 [complete-workers] [name=NAME]`";
    let (kind, options) = args.split_first().ok_or_else(|| usage.to_owned())?;
    let mut spec = match kind.as_str() {
        "minicluster" => ClusterSpec::minicluster(0, 0),
        "bare-job" => ClusterSpec::bare_job(0),
        other => return Err(format!("unknown cluster kind {other:?}; {usage}")),
    };
    let mut max = None;
    for option in options {
        match option.split_once('=') {
            Some(("size", n)) => spec.size = number("size", n)?,
            Some(("max", n)) => max = Some(number("max", n)?),
            Some(("backoff-per-index", n)) => {
                spec.backoff_limit_per_index = Some(number("backoff-per-index", n)?)
            }
            Some(("name", name)) if is_dns_label(name) => spec.name = name.to_owned(),
            Some(("name", name)) => {
                return Err(format!(
                    "name {name:?} must be a DNS label (lowercase letters, digits, '-')"
                ));
            }
            None if option == "complete-workers" && spec.kind != JobKind::BareJob => {
                spec.kind = JobKind::MiniCluster {
                    complete_workers: true,
                };
            }
            _ => return Err(format!("unknown cluster option {option:?}; {usage}")),
        }
    }
    if spec.size == 0 {
        return Err(format!("size must be at least 1; {usage}"));
    }
    spec.max_size = max.unwrap_or(spec.size);
    if spec.max_size < spec.size {
        return Err(format!("max {} is below size {}", spec.max_size, spec.size));
    }
    Ok(spec)
}

fn is_dns_label(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 50
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.starts_with('-')
        && !name.ends_with('-')
}

/// Ranks below the instance size; `-` is the empty set.
fn ranks(text: &str, spec: &ClusterSpec) -> Result<IdSet, String> {
    if text == "-" {
        return Ok(IdSet::new());
    }
    let ranks: IdSet = text.parse().map_err(|e| format!("{e}"))?;
    match ranks.last() {
        Some(last) if last >= spec.max_size => Err(format!(
            "rank {last} is beyond the instance size {}",
            spec.max_size
        )),
        _ => Ok(ranks),
    }
}

fn one_rank(text: &str, spec: &ClusterSpec) -> Result<u32, String> {
    let rank: u32 = number("rank", text)?;
    ranks(&rank.to_string(), spec)?;
    Ok(rank)
}

fn duration(text: &str) -> Result<Duration, String> {
    let bad = || format!("expected `converged` or a duration like 2s or 500ms, got {text:?}");
    let (number, scale) = if let Some(ms) = text.strip_suffix("ms") {
        (ms, 1e-3)
    } else if let Some(s) = text.strip_suffix('s') {
        (s, 1.0)
    } else {
        return Err(bad());
    };
    let seconds: f64 = number.parse().map_err(|_| bad())?;
    let wait = Duration::try_from_secs_f64(seconds * scale).map_err(|_| bad())?;
    if wait > LONGEST_WAIT {
        return Err(format!("wait {text} is longer than {LONGEST_WAIT:?}"));
    }
    Ok(wait)
}

fn parse_command(command: &str, args: &[String], spec: &ClusterSpec) -> Result<Command, String> {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let arity = |n: usize, usage: &str| {
        if args.len() == n {
            Ok(())
        } else {
            Err(format!("expected `{usage}`"))
        }
    };
    match command {
        "drain" => {
            arity(2, "drain RANKS \"reason\"")?;
            Ok(Command::Drain {
                ranks: ranks(args[0], spec)?,
                reason: args[1].to_owned(),
            })
        }
        "undrain" => {
            arity(1, "undrain RANKS")?;
            Ok(Command::Undrain {
                ranks: ranks(args[0], spec)?,
            })
        }
        "resize" => {
            arity(1, "resize N")?;
            Ok(Command::Resize(number("resize", args[0])?))
        }
        "app-request" => {
            arity(1, "app-request N")?;
            Ok(Command::AppRequest(number("app-request", args[0])?))
        }
        "retire" => {
            arity(1, "retire RANKS")?;
            Ok(Command::Retire(ranks(args[0], spec)?))
        }
        "kill-pod" => {
            arity(1, "kill-pod RANK")?;
            match one_rank(args[0], spec)? {
                0 => Err("kill-pod 0: rank 0 runs fluxk8s; losing it is not simulated".to_owned()),
                rank => Ok(Command::KillPod(rank)),
            }
        }
        "restart-leader" => {
            arity(0, "restart-leader")?;
            Ok(Command::RestartLeader)
        }
        "wait" => {
            arity(1, "wait converged|DURATION")?;
            match args[0] {
                "converged" => Ok(Command::WaitConverged),
                text => Ok(Command::Wait(duration(text)?)),
            }
        }
        "expect" => parse_expect(&args, spec).map(Command::Expect),
        other => Err(format!(
            "unknown command {other:?} (known: drain, undrain, resize, app-request, retire, \
             kill-pod, restart-leader, wait, expect)"
        )),
    }
}

fn parse_expect(args: &[&str], spec: &ClusterSpec) -> Result<Expectation, String> {
    let usage = "expected `expect live|pods|drained RANKS`, `expect size N`, \
                 `expect phase RANK PHASE` or `expect deletes N`";
    match args {
        ["live", set] => Ok(Expectation::Live(ranks(set, spec)?)),
        ["pods", set] => Ok(Expectation::Pods(ranks(set, spec)?)),
        ["drained", set] => Ok(Expectation::Drained(ranks(set, spec)?)),
        ["size", n] => Ok(Expectation::Size(number("size", n)?)),
        ["deletes", n] => Ok(Expectation::Deletes(number("deletes", n)?)),
        ["phase", rank, phase] if PHASES.contains(phase) => Ok(Expectation::Phase {
            rank: one_rank(rank, spec)?,
            phase: (*phase).to_owned(),
        }),
        ["phase", _, phase] => Err(format!(
            "unknown phase {phase:?} (known: {})",
            PHASES.join(", ")
        )),
        _ => Err(usage.to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error(text: &str) -> ParseError {
        Script::parse(text).unwrap_err()
    }

    #[test]
    fn parses_the_walkthrough() {
        let script = Script::parse(
            "# Downsize walkthrough\n\
             cluster minicluster size=4 max=10 backoff-per-index=0   # the PR #213 operator\n\
             drain 2 \"Goodbye #2\" # bye\n\
             \n\
             wait converged\n\
             resize 3\n\
             wait 1.5s\n\
             expect live 0,1,3\n\
             expect phase 2 retired\n",
        )
        .unwrap();
        assert_eq!(script.title, "Downsize walkthrough");
        assert_eq!(script.cluster.size, 4);
        assert_eq!(script.cluster.max_size, 10);
        assert_eq!(script.cluster.backoff_limit_per_index, Some(0));
        assert_eq!(
            script.cluster.kind,
            JobKind::MiniCluster {
                complete_workers: false
            }
        );
        let commands: Vec<&Command> = script.steps.iter().map(|s| &s.command).collect();
        assert_eq!(
            commands,
            [
                &Command::Drain {
                    ranks: "2".parse().unwrap(),
                    reason: "Goodbye #2".into()
                },
                &Command::WaitConverged,
                &Command::Resize(3),
                &Command::Wait(Duration::from_millis(1500)),
                &Command::Expect(Expectation::Live("0-1,3".parse().unwrap())),
                &Command::Expect(Expectation::Phase {
                    rank: 2,
                    phase: "retired".into()
                }),
            ]
        );
        assert_eq!(script.steps[0].line, 3);
        assert_eq!(script.steps[0].text, "drain 2 \"Goodbye #2\"");
    }

    #[test]
    fn cluster_kinds_and_options() {
        let bare = Script::parse("cluster bare-job size=3 max=5 name=demo").unwrap();
        assert_eq!(bare.cluster.kind, JobKind::BareJob);
        assert_eq!((bare.cluster.size, bare.cluster.max_size), (3, 5));
        assert_eq!(bare.cluster.name, "demo");
        assert_eq!(bare.title, "scenario");
        let workers = Script::parse("cluster minicluster size=2 complete-workers").unwrap();
        assert_eq!(
            workers.cluster.kind,
            JobKind::MiniCluster {
                complete_workers: true
            }
        );
        assert_eq!(workers.cluster.max_size, 2, "max defaults to size");
        let per_index = Script::parse("cluster minicluster size=2 max=9 backoff-per-index=0");
        for spec in [bare.cluster, workers.cluster, per_index.unwrap().cluster] {
            let again = Script::parse(&format!("cluster {}", spec.describe())).unwrap();
            assert_eq!(again.cluster, spec, "describe() writes the scenario form");
        }
    }

    #[test]
    fn errors_name_the_line_and_the_problem() {
        let cases = [
            ("resize 3", 1, "first command must be `cluster"),
            ("# only a title", 0, "no `cluster` line"),
            ("cluster pods size=3", 1, "unknown cluster kind \"pods\""),
            ("cluster minicluster size=x", 1, "size: expected a number"),
            ("cluster minicluster size=0", 1, "size must be at least 1"),
            (
                "cluster minicluster size=4 max=2",
                1,
                "max 2 is below size 4",
            ),
            (
                "cluster minicluster size=4 color=red",
                1,
                "unknown cluster option",
            ),
            (
                "cluster bare-job size=2 complete-workers",
                1,
                "unknown cluster option",
            ),
            ("cluster minicluster size=4 name=Bad_Name", 1, "DNS label"),
            (
                "cluster minicluster size=4\ncluster bare-job size=1",
                2,
                "only one",
            ),
            (
                "cluster minicluster size=4\n\ndran 2 x",
                3,
                "unknown command \"dran\"",
            ),
            (
                "cluster minicluster size=4\ndrain 2",
                2,
                "expected `drain RANKS",
            ),
            (
                "cluster minicluster size=4\ndrain 2 \"open",
                2,
                "unterminated quote",
            ),
            (
                "cluster minicluster size=4\ndrain 7 x",
                2,
                "rank 7 is beyond",
            ),
            ("cluster minicluster size=4\ndrain 1- x", 2, "invalid idset"),
            (
                "cluster minicluster size=4\nresize many",
                2,
                "resize: expected a number",
            ),
            (
                "cluster minicluster size=4\nwait soon",
                2,
                "expected `converged` or a duration",
            ),
            (
                "cluster minicluster size=4\nwait 2h",
                2,
                "expected `converged` or a duration",
            ),
            ("cluster minicluster size=4\nwait 90s", 2, "longer than"),
            (
                "cluster minicluster size=4\nkill-pod 0",
                2,
                "rank 0 runs fluxk8s",
            ),
            (
                "cluster minicluster size=4\nexpect live",
                2,
                "expected `expect live",
            ),
            (
                "cluster minicluster size=4\nexpect phase 2 gone",
                2,
                "unknown phase \"gone\"",
            ),
            (
                "cluster minicluster size=4\nrestart-leader now",
                2,
                "expected `restart-leader`",
            ),
        ];
        for (text, line, what) in cases {
            let err = error(text);
            assert_eq!(err.line, line, "{text:?}: {err}");
            assert!(err.to_string().contains(what), "{text:?}: {err}");
            assert!(
                err.to_string().starts_with(&format!("line {line}: ")),
                "{err}"
            );
        }
    }
}
