//! Fuzzing scenario files (`cargo run --example demo -- --scenario FILE`): any text
//! either parses or is refused with an error naming its first bad line, and valid
//! scripts parse to the cluster, steps and title they were written with.
//!
//! `FUZZ_CASES=N` sets the cases per target (default 2,000).

mod fuzz_support;

use std::time::Duration;

use fluxk8s::model::IdSet;
use fluxk8s::scenario::{ClusterSpec, Command, Expectation, JobKind, Script, Step};
use proptest::prelude::*;

use fuzz_support::{config, idset_text, number_text};

/// The longest `wait` a scenario may ask for.
const LONGEST_WAIT: Duration = Duration::from_secs(60);
/// The phases an `expect phase` may name.
const PHASES: [&str; 6] = ["up", "starting", "lost", "retiring", "retired", "drained"];

/// A command (with the words that pick its form) and how many arguments it takes:
/// mostly a known one.
fn command_words() -> impl Strategy<Value = (String, Option<usize>)> {
    let known = prop::sample::select(vec![
        ("drain", 2),
        ("undrain", 1),
        ("resize", 1),
        ("app-request", 1),
        ("retire", 1),
        ("kill-pod", 1),
        ("restart-leader", 0),
        ("wait", 1),
        ("expect live", 1),
        ("expect pods", 1),
        ("expect drained", 1),
        ("expect size", 1),
        ("expect deletes", 1),
        ("expect phase", 2),
    ]);
    prop_oneof![
        8 => known.prop_map(|(words, arity)| (words.to_owned(), Some(arity))),
        1 => prop::sample::select(vec!["cluster", "expect", "dran", "Resize", "#", "\"#\"", "\"\""])
            .prop_map(|word| (word.to_owned(), None)),
        1 => "\\PC{0,8}".prop_map(|word| (word, None)),
    ]
}

/// An argument word: what commands take, well formed or not.
fn argument_word() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::sample::select(vec![
            "minicluster", "bare-job", "converged", "live", "pods", "drained", "size", "phase",
            "deletes", "up", "retired", "gone", "-", "complete-workers", "2s", "500ms", "1.5s",
            "90s", "-1s", "1e9ms", "NaNs", "s", "ms", "0s", "60s", "60.000000001s", "inf s",
        ])
        .prop_map(str::to_owned),
        4 => number_text(12),
        3 => idset_text(12),
        2 => (
            prop::sample::select(vec!["size=", "max=", "backoff-per-index=", "name="]),
            prop_oneof![number_text(12), number_text(u32::MAX), "[a-zA-Z_-]{0,6}"],
        )
            .prop_map(|(option, value)| format!("{option}{value}")),
        1 => "\"[^\"\n]{0,10}\"",
        1 => "\"[^\n]{0,6}",
        1 => "#[^\n]{0,10}",
        1 => "\\PC{0,8}",
    ]
}

/// A scenario line: a command and arguments (usually as many as it takes), or any
/// characters.
fn line() -> impl Strategy<Value = String> {
    let separators = prop::collection::vec(prop::sample::select(vec![" ", "  ", "\t"]), 4);
    let arguments = prop::collection::vec(argument_word(), 4);
    let command = (
        command_words(),
        arguments,
        0..4usize,
        prop::bool::weighted(0.8),
        separators,
    )
        .prop_map(
            |((command, arity), arguments, any_count, right_count, separators)| {
                let count = arity.filter(|_| right_count).unwrap_or(any_count);
                let mut line = command;
                for (separator, argument) in separators.iter().zip(&arguments).take(count) {
                    line.push_str(separator);
                    line.push_str(argument);
                }
                line
            },
        );
    prop_oneof![
        8 => command,
        1 => Just(String::new()),
        1 => "[^\n]{0,30}",
    ]
}

/// Scenario text: usually a small cluster first, then any lines.
fn scenario_text() -> impl Strategy<Value = String> {
    let sizes = prop_oneof![
        3 => (1..6u32).prop_flat_map(|size| (Just(size), size..10)),
        1 => (0..6u32, 0..10u32),
    ];
    let cluster = prop::option::weighted(
        0.8,
        sizes.prop_map(|(size, max)| format!("cluster minicluster size={size} max={max}")),
    );
    let newline = prop::sample::select(vec!["\n", "\r\n"]);
    (cluster, prop::collection::vec(line(), 0..8), newline).prop_map(|(cluster, lines, newline)| {
        cluster
            .into_iter()
            .chain(lines)
            .collect::<Vec<_>>()
            .join(newline)
    })
}

/// The ranks and rank a command targets.
fn targets(command: &Command) -> (Vec<&IdSet>, Option<u32>) {
    match command {
        Command::Drain { ranks, .. } | Command::Undrain { ranks } | Command::Retire(ranks) => {
            (vec![ranks], None)
        }
        Command::Expect(
            Expectation::Live(ranks) | Expectation::Pods(ranks) | Expectation::Drained(ranks),
        ) => (vec![ranks], None),
        Command::KillPod(rank) | Command::Expect(Expectation::Phase { rank, .. }) => {
            (Vec::new(), Some(*rank))
        }
        _ => (Vec::new(), None),
    }
}

/// Holds for every script that parses: a sane cluster, steps in line order, each taken
/// from its line, and every target within the instance.
fn check_script(script: &Script, lines: &[&str]) -> Result<(), TestCaseError> {
    let cluster = &script.cluster;
    prop_assert!(
        1 <= cluster.size && cluster.size <= cluster.max_size,
        "{cluster:?}"
    );
    let mut previous = 0;
    for step in &script.steps {
        prop_assert!(previous < step.line && step.line <= lines.len(), "{step:?}");
        previous = step.line;
        prop_assert!(!step.text.is_empty() && lines[step.line - 1].contains(&step.text));
        let (sets, rank) = targets(&step.command);
        for set in sets {
            prop_assert!(
                set.last().is_none_or(|last| last < cluster.max_size),
                "{step:?}"
            );
        }
        prop_assert!(rank.is_none_or(|rank| rank < cluster.max_size), "{step:?}");
        match step.command {
            Command::KillPod(rank) => prop_assert_ne!(rank, 0),
            Command::Wait(wait) => prop_assert!(wait <= LONGEST_WAIT),
            _ => {}
        }
    }
    Ok(())
}

/// A cluster line (options in any order) and the spec it describes.
fn cluster() -> impl Strategy<Value = (String, ClusterSpec)> {
    let kind = prop::sample::select(vec![
        JobKind::MiniCluster {
            complete_workers: false,
        },
        JobKind::MiniCluster {
            complete_workers: true,
        },
        JobKind::BareJob,
    ]);
    let size = prop_oneof![4 => 1..20u32, 1 => 1..=u32::MAX];
    let extra = prop::option::of(prop_oneof![3 => 0..20u32, 1 => any::<u32>()]);
    let backoff = prop::option::of(prop_oneof![3 => 0..3u32, 1 => any::<u32>()]);
    let name = prop::option::of("[a-z0-9]([a-z0-9-]{0,20}[a-z0-9])?");
    (kind, size, extra, backoff, name)
        .prop_flat_map(|(kind, size, extra, backoff, name)| {
            let max_size = extra.map_or(size, |extra| size.saturating_add(extra));
            let mut options = vec![format!("size={size}")];
            options.extend(extra.map(|_| format!("max={max_size}")));
            options.extend(backoff.map(|limit| format!("backoff-per-index={limit}")));
            options.extend(name.as_ref().map(|name| format!("name={name}")));
            let kind_word = match kind {
                JobKind::MiniCluster { complete_workers } => {
                    if complete_workers {
                        options.push("complete-workers".to_owned());
                    }
                    "minicluster"
                }
                JobKind::BareJob => "bare-job",
            };
            let mut spec = ClusterSpec::minicluster(size, max_size);
            spec.kind = kind;
            spec.backoff_limit_per_index = backoff;
            spec.name = name.unwrap_or(spec.name);
            let words = Just(options).prop_shuffle().prop_map(move |options| {
                [vec!["cluster".to_owned(), kind_word.to_owned()], options].concat()
            });
            (words, Just(spec))
        })
        .prop_map(|(words, spec)| (words.join(" "), spec))
}

/// A set of ranks below `max_size` and how a scenario writes it.
fn ranks(max_size: u32) -> impl Strategy<Value = (String, IdSet)> {
    let below = max_size.min(5_000);
    (prop::collection::btree_set(0..below, 0..6), any::<bool>()).prop_map(|(ids, bracketed)| {
        let set: IdSet = ids.into_iter().collect();
        let written = match (set.is_empty(), bracketed) {
            (true, _) => "-".to_owned(),
            (false, true) => format!("[{set}]"),
            (false, false) => set.to_string(),
        };
        (written, set)
    })
}

/// A valid command for a cluster of `max_size` ranks, as words (the reason of a drain
/// already quoted), and what it parses to.
fn command(max_size: u32) -> impl Strategy<Value = (Vec<String>, Command)> {
    let words = |words: &[&str]| words.iter().map(|w| (*w).to_owned()).collect::<Vec<_>>();
    let rank = 0..max_size;
    let wait = (0..=60_000u64, 0..3usize).prop_map(|(ms, form)| {
        let text = match form {
            0 => format!("{ms}ms"),
            1 => format!("{}.{:03}s", ms / 1000, ms % 1000),
            _ => format!("{}s", ms / 1000),
        };
        let ms = if form == 2 { ms / 1000 * 1000 } else { ms };
        (
            vec!["wait".to_owned(), text],
            Command::Wait(Duration::from_millis(ms)),
        )
    });
    let expect_ranks = (
        prop::sample::select(vec!["live", "pods", "drained"]),
        ranks(max_size),
    )
        .prop_map(move |(what, (written, set))| {
            let expectation = match what {
                "live" => Expectation::Live(set),
                "pods" => Expectation::Pods(set),
                _ => Expectation::Drained(set),
            };
            (
                words(&["expect", what, &written]),
                Command::Expect(expectation),
            )
        });
    let mut commands = vec![
        (ranks(max_size), "[^\"\n\r]{0,20}")
            .prop_map(move |((written, ranks), reason)| {
                let quoted = format!("\"{reason}\"");
                (
                    words(&["drain", &written, &quoted]),
                    Command::Drain { ranks, reason },
                )
            })
            .boxed(),
        ranks(max_size)
            .prop_map(move |(written, ranks)| {
                (words(&["undrain", &written]), Command::Undrain { ranks })
            })
            .boxed(),
        ranks(max_size)
            .prop_map(move |(written, ranks)| {
                (words(&["retire", &written]), Command::Retire(ranks))
            })
            .boxed(),
        any::<u32>()
            .prop_map(move |n| (words(&["resize", &n.to_string()]), Command::Resize(n)))
            .boxed(),
        any::<u32>()
            .prop_map(move |n| {
                (
                    words(&["app-request", &n.to_string()]),
                    Command::AppRequest(n),
                )
            })
            .boxed(),
        Just((words(&["restart-leader"]), Command::RestartLeader)).boxed(),
        Just((words(&["wait", "converged"]), Command::WaitConverged)).boxed(),
        wait.boxed(),
        expect_ranks.boxed(),
        any::<u32>()
            .prop_map(move |n| {
                (
                    words(&["expect", "size", &n.to_string()]),
                    Command::Expect(Expectation::Size(n)),
                )
            })
            .boxed(),
        any::<usize>()
            .prop_map(move |n| {
                (
                    words(&["expect", "deletes", &n.to_string()]),
                    Command::Expect(Expectation::Deletes(n)),
                )
            })
            .boxed(),
        (rank, prop::sample::select(PHASES.to_vec()))
            .prop_map(move |(rank, phase)| {
                let phase_owned = phase.to_owned();
                (
                    words(&["expect", "phase", &rank.to_string(), phase]),
                    Command::Expect(Expectation::Phase {
                        rank,
                        phase: phase_owned,
                    }),
                )
            })
            .boxed(),
    ];
    if max_size > 1 {
        commands.push(
            (1..max_size)
                .prop_map(move |rank| {
                    (
                        words(&["kill-pod", &rank.to_string()]),
                        Command::KillPod(rank),
                    )
                })
                .boxed(),
        );
    }
    prop::strategy::Union::new(commands)
}

/// How a line is laid out: indentation, separators (one per word), which plain words
/// are quoted, and a trailing comment.
#[derive(Debug, Clone)]
struct Layout {
    indent: &'static str,
    separators: Vec<&'static str>,
    quoted: Vec<bool>,
    comment: Option<String>,
}

fn layout() -> impl Strategy<Value = Layout> {
    (
        prop::sample::select(vec!["", " ", "\t"]),
        prop::collection::vec(prop::sample::select(vec![" ", "  ", "\t"]), 4),
        prop::collection::vec(prop::bool::weighted(0.125), 4),
        prop::option::weighted(0.25, "[^\n\r]{0,15}"),
    )
        .prop_map(|(indent, separators, quoted, comment)| Layout {
            indent,
            separators,
            quoted,
            comment,
        })
}

/// Writes `words` as a line; returns the line and its text without the comment.
fn lay_out(words: &[String], layout: &Layout) -> (String, String) {
    let mut code = layout.indent.to_owned();
    for (i, word) in words.iter().enumerate() {
        if i > 0 {
            code.push_str(layout.separators[(i - 1) % layout.separators.len()]);
        }
        let plain = !word.starts_with('"');
        if plain && layout.quoted[i % layout.quoted.len()] {
            code.push_str(&format!("\"{word}\""));
        } else {
            code.push_str(word);
        }
    }
    let line = match &layout.comment {
        Some(comment) => format!("{code}  #{comment}"),
        None => code.clone(),
    };
    (line, code.trim().to_owned())
}

/// A valid scenario: its text and the script it must parse to.
fn valid_scenario() -> impl Strategy<Value = (String, Script)> {
    // Before the cluster line: blank lines and comments (the first non-empty one is the
    // title).
    let preamble = prop::collection::vec(prop::option::of("[^\n\r]{0,20}"), 0..4);
    (cluster(), layout(), preamble)
        .prop_flat_map(|((cluster_line, spec), cluster_layout, preamble)| {
            let line = (command(spec.max_size), layout(), 0..3usize);
            (
                Just((cluster_line, spec, cluster_layout, preamble)),
                prop::collection::vec(line, 0..10),
                prop::sample::select(vec!["\n", "\r\n"]),
            )
        })
        .prop_map(
            |((cluster_line, spec, cluster_layout, preamble), commands, newline)| {
                let mut lines: Vec<String> = preamble
                    .iter()
                    .map(|comment| {
                        comment
                            .as_ref()
                            .map_or_else(String::new, |c| format!("#{c}"))
                    })
                    .collect();
                let title = preamble
                    .iter()
                    .flatten()
                    .map(|comment| comment.trim())
                    .find(|comment| !comment.is_empty())
                    .unwrap_or("scenario")
                    .to_owned();
                let cluster_words: Vec<String> =
                    cluster_line.split(' ').map(str::to_owned).collect();
                lines.push(lay_out(&cluster_words, &cluster_layout).0);
                let mut steps = Vec::new();
                for ((words, command), layout, blank_lines_before) in commands {
                    lines.extend(std::iter::repeat_n(String::new(), blank_lines_before));
                    let (line, text) = lay_out(&words, &layout);
                    lines.push(line);
                    steps.push(Step {
                        line: lines.len(),
                        text,
                        command,
                    });
                }
                let script = Script {
                    title,
                    cluster: spec,
                    steps,
                };
                (lines.join(newline), script)
            },
        )
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn any_text_parses_or_is_refused_at_its_first_bad_line(text in scenario_text()) {
        let lines: Vec<&str> = text.lines().collect();
        match Script::parse(&text) {
            Ok(script) => check_script(&script, &lines)?,
            Err(err) => {
                prop_assert!(err.to_string().starts_with(&format!("line {}: ", err.line)), "{err}");
                prop_assert!(!err.what.is_empty());
                prop_assert!(err.line <= lines.len(), "{err}");
                if err.line == 0 {
                    prop_assert!(err.what.contains("no `cluster` line"), "{err}");
                } else {
                    // The lines before it are fine (short of a cluster line, perhaps), and
                    // with it they fail on it.
                    let before = Script::parse(&lines[..err.line - 1].join("\n"));
                    prop_assert!(before.as_ref().err().is_none_or(|e| e.line == 0), "{before:?}");
                    let with_it = Script::parse(&lines[..err.line].join("\n"));
                    prop_assert_eq!(with_it.err(), Some(err));
                }
            }
        }
    }

    #[test]
    fn valid_scripts_parse_to_their_steps((text, script) in valid_scenario()) {
        prop_assert_eq!(Script::parse(&text), Ok(script), "{}", text);
    }
}
