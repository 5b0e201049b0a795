//! RFC 29 hostlists: `flux-sample-[0-9]`, `node[01-10]`, `a[1-3,5]`, `foo1,bar[2-3]`.
//!
//! Order matters (position in the list is the broker rank), so expansion keeps the written
//! order and encoding only merges neighbours.

use std::fmt::Write as _;

/// Expansions beyond this many hosts are refused: no real instance is that large, and a
/// typo like `n[0-4294967295]` must not exhaust memory.
pub const MAX_HOSTS: usize = 1_000_000;

/// Why a string is not a hostlist.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HostlistError {
    #[error("invalid hostlist {input:?}: empty entry")]
    EmptyEntry { input: String },
    #[error("invalid hostlist {input:?}: unbalanced brackets")]
    UnbalancedBrackets { input: String },
    #[error("invalid hostlist {input:?}: more than one bracket group in {entry:?}")]
    SeveralBrackets { input: String, entry: String },
    #[error("invalid hostlist {input:?}: bad range {range:?}")]
    BadRange { input: String, range: String },
    #[error("invalid hostlist {input:?}: more than {MAX_HOSTS} hosts")]
    TooLarge { input: String },
}

/// Expands a hostlist into host names, in the written order.
pub fn expand(input: &str) -> Result<Vec<String>, HostlistError> {
    let mut hosts = Vec::new();
    walk(input, |span| match span {
        Span::Host(host) => hosts.push(host.to_owned()),
        Span::Range(range) => hosts.extend((range.lo..=range.hi).map(|n| {
            let (prefix, width, suffix) = (range.prefix, range.width, range.suffix);
            format!("{prefix}{n:0width$}{suffix}")
        })),
    })?;
    Ok(hosts)
}

/// How many hosts a hostlist names, checked as [`expand`] checks it but without making
/// their names: a journal event names every host of a 10,000-rank drain.
pub fn count(input: &str) -> Result<usize, HostlistError> {
    let mut hosts = 0;
    walk(input, |span| hosts += span.len())?;
    Ok(hosts)
}

/// Hosts as a hostlist writes them: one name, or a numbered range.
enum Span<'a> {
    Host(&'a str),
    Range(Range<'a>),
}

struct Range<'a> {
    prefix: &'a str,
    lo: u64,
    hi: u64,
    /// Digits of every number, zero-padded (`[01-10]`); 0: as they come.
    width: usize,
    suffix: &'a str,
}

impl Span<'_> {
    fn len(&self) -> usize {
        match self {
            Span::Host(_) => 1,
            Span::Range(range) => usize::try_from(range.hi - range.lo + 1).unwrap_or(usize::MAX),
        }
    }
}

/// Checks `input` and hands its spans to `visit` in the written order.
fn walk<'a>(input: &'a str, mut visit: impl FnMut(Span<'a>)) -> Result<(), HostlistError> {
    if input.trim().is_empty() {
        return Ok(());
    }
    let mut hosts = 0usize;
    for entry in split_entries(input)? {
        for span in entry_spans(input, entry.trim())? {
            if span.len() > MAX_HOSTS - hosts {
                return Err(HostlistError::TooLarge {
                    input: input.to_owned(),
                });
            }
            hosts += span.len();
            visit(span);
        }
    }
    Ok(())
}

/// Splits at commas outside brackets.
fn split_entries(input: &str) -> Result<Vec<&str>, HostlistError> {
    let unbalanced = || HostlistError::UnbalancedBrackets {
        input: input.to_owned(),
    };
    let mut entries = Vec::new();
    let mut depth = 0u32;
    let mut start = 0;
    for (at, c) in input.char_indices() {
        match c {
            '[' if depth == 0 => depth = 1,
            ']' if depth == 1 => depth = 0,
            '[' | ']' => return Err(unbalanced()),
            ',' if depth == 0 => {
                entries.push(&input[start..at]);
                start = at + 1;
            }
            _ => {}
        }
    }
    if depth != 0 {
        return Err(unbalanced());
    }
    entries.push(&input[start..]);
    Ok(entries)
}

fn entry_spans<'a>(input: &str, entry: &'a str) -> Result<Vec<Span<'a>>, HostlistError> {
    if entry.is_empty() {
        return Err(HostlistError::EmptyEntry {
            input: input.to_owned(),
        });
    }
    let Some((prefix, rest)) = entry.split_once('[') else {
        return Ok(vec![Span::Host(entry)]);
    };
    // split_entries guarantees a matching `]` after every `[`.
    let (ranges, suffix) = rest.split_once(']').unwrap_or((rest, ""));
    if suffix.contains('[') {
        return Err(HostlistError::SeveralBrackets {
            input: input.to_owned(),
            entry: entry.to_owned(),
        });
    }
    let mut spans = Vec::new();
    for range in ranges.split(',') {
        let bad = || HostlistError::BadRange {
            input: input.to_owned(),
            range: range.to_owned(),
        };
        let (lo_text, hi_text) = range.split_once('-').unwrap_or((range, range));
        let (lo, hi) = (
            parse_number(lo_text).ok_or_else(bad)?,
            parse_number(hi_text).ok_or_else(bad)?,
        );
        if lo > hi {
            return Err(bad());
        }
        // A zero-padded start fixes the width for the whole range (`[01-10]`).
        let width = if lo_text.len() > 1 && lo_text.starts_with('0') {
            lo_text.len()
        } else {
            0
        };
        spans.push(Span::Range(Range {
            prefix,
            lo,
            hi,
            width,
            suffix,
        }));
    }
    Ok(spans)
}

fn parse_number(text: &str) -> Option<u64> {
    if text.is_empty() || text.len() > 19 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// A host name split into a prefix and a trailing number, as written.
struct Numbered<'a> {
    prefix: &'a str,
    digits: &'a str,
    value: u64,
}

fn split_number(host: &str) -> Option<Numbered<'_>> {
    let digits_at = host.trim_end_matches(|c: char| c.is_ascii_digit()).len();
    let digits = &host[digits_at..];
    let value = parse_number(digits)?;
    Some(Numbered {
        prefix: &host[..digits_at],
        digits,
        value,
    })
}

/// A run of neighbouring hosts that share a prefix and a number width, ascending.
struct Run<'a> {
    prefix: &'a str,
    width: usize,
    values: Vec<u64>,
}

impl Run<'_> {
    fn accepts(&self, host: &Numbered<'_>) -> bool {
        host.prefix == self.prefix
            && self.values.last().is_some_and(|&last| host.value > last)
            && format!("{:0width$}", host.value, width = self.width) == host.digits
    }

    fn write(&self, out: &mut String) {
        out.push_str(self.prefix);
        let width = self.width;
        if let [only] = self.values[..] {
            let _ = write!(out, "{only:0width$}");
            return;
        }
        out.push('[');
        let mut i = 0;
        while i < self.values.len() {
            let lo = self.values[i];
            let mut j = i;
            while j + 1 < self.values.len() && self.values[j + 1] == self.values[j] + 1 {
                j += 1;
            }
            if i > 0 {
                out.push(',');
            }
            let hi = self.values[j];
            if lo == hi {
                let _ = write!(out, "{lo:0width$}");
            } else {
                let _ = write!(out, "{lo:0width$}-{hi:0width$}");
            }
            i = j + 1;
        }
        out.push(']');
    }
}

/// Encodes host names in compact form; `expand(&encode(h)) == h` for names without
/// brackets or commas.
pub fn encode<S: AsRef<str>>(hosts: &[S]) -> String {
    let mut out = String::new();
    let mut run: Option<Run<'_>> = None;
    for host in hosts.iter().map(AsRef::as_ref) {
        let numbered = split_number(host);
        if let (Some(current), Some(n)) = (run.as_mut(), numbered.as_ref())
            && current.accepts(n)
        {
            current.values.push(n.value);
            continue;
        }
        if let Some(done) = run.take() {
            separate(&mut out);
            done.write(&mut out);
        }
        match numbered {
            Some(n) => {
                let width = if n.digits.len() > 1 && n.digits.starts_with('0') {
                    n.digits.len()
                } else {
                    0
                };
                run = Some(Run {
                    prefix: n.prefix,
                    width,
                    values: vec![n.value],
                });
            }
            None => {
                separate(&mut out);
                out.push_str(host);
            }
        }
    }
    if let Some(done) = run {
        separate(&mut out);
        done.write(&mut out);
    }
    out
}

fn separate(out: &mut String) {
    if !out.is_empty() {
        out.push(',');
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn expands_the_forms_flux_writes() {
        assert_eq!(
            expand("flux-sample-[0-3]").unwrap(),
            names(&[
                "flux-sample-0",
                "flux-sample-1",
                "flux-sample-2",
                "flux-sample-3"
            ])
        );
        assert_eq!(
            expand("node[01-03]").unwrap(),
            names(&["node01", "node02", "node03"])
        );
        assert_eq!(expand("node[09-10]").unwrap(), names(&["node09", "node10"]));
        assert_eq!(
            expand("a[1-3,5]").unwrap(),
            names(&["a1", "a2", "a3", "a5"])
        );
        assert_eq!(
            expand("foo1,bar[2-3]").unwrap(),
            names(&["foo1", "bar2", "bar3"])
        );
        assert_eq!(expand("login").unwrap(), names(&["login"]));
        assert_eq!(expand("r[1-2]n").unwrap(), names(&["r1n", "r2n"]));
        assert!(expand("").unwrap().is_empty());
    }

    #[test]
    fn names_each_kind_of_error() {
        type IsExpected = fn(&HostlistError) -> bool;
        let cases: &[(&str, IsExpected)] = &[
            ("a,,b", |e| matches!(e, HostlistError::EmptyEntry { .. })),
            ("a[1-2", |e| {
                matches!(e, HostlistError::UnbalancedBrackets { .. })
            }),
            ("a1-2]", |e| {
                matches!(e, HostlistError::UnbalancedBrackets { .. })
            }),
            ("a[[1]]", |e| {
                matches!(e, HostlistError::UnbalancedBrackets { .. })
            }),
            ("a[1]b[2]", |e| {
                matches!(e, HostlistError::SeveralBrackets { .. })
            }),
            ("a[3-1]", |e| matches!(e, HostlistError::BadRange { .. })),
            ("a[x]", |e| matches!(e, HostlistError::BadRange { .. })),
            ("a[]", |e| matches!(e, HostlistError::BadRange { .. })),
            ("a[0-4294967295]", |e| {
                matches!(e, HostlistError::TooLarge { .. })
            }),
            ("a[0-999999],b[0-1]", |e| {
                matches!(e, HostlistError::TooLarge { .. })
            }),
        ];
        for (input, expected) in cases {
            let err = expand(input).unwrap_err();
            assert!(expected(&err), "{input:?} gave {err:?}");
            assert!(err.to_string().contains(input), "{err}");
        }
    }

    #[test]
    fn encodes_compactly_and_keeps_order() {
        let hosts: Vec<String> = (0..10).map(|i| format!("flux-sample-{i}")).collect();
        assert_eq!(encode(&hosts), "flux-sample-[0-9]");
        assert_eq!(encode(&["node01", "node02", "node10"]), "node[01-02,10]");
        assert_eq!(encode(&["a1", "a2", "a3", "a5"]), "a[1-3,5]");
        assert_eq!(encode(&["foo1", "bar2", "bar3"]), "foo1,bar[2-3]");
        assert_eq!(encode(&["b2", "a1"]), "b2,a1");
        assert_eq!(encode(&["a3", "a1"]), "a3,a1");
        assert_eq!(encode(&["login", "n1"]), "login,n1");
        assert_eq!(encode::<&str>(&[]), "");
    }

    proptest::proptest! {
        #[test]
        fn encode_then_expand_gives_the_same_list(
            hosts in proptest::collection::vec(("[ab]{0,2}", proptest::option::of(0u64..30), proptest::bool::ANY), 0..12)
        ) {
            let hosts: Vec<String> = hosts
                .into_iter()
                .filter_map(|(prefix, number, padded)| match number {
                    Some(n) if padded => Some(format!("{prefix}{n:03}")),
                    Some(n) => Some(format!("{prefix}{n}")),
                    None if prefix.is_empty() => None,
                    None => Some(prefix),
                })
                .collect();
            proptest::prop_assert_eq!(expand(&encode(&hosts)).unwrap(), hosts);
        }
    }
}
