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
    if input.trim().is_empty() {
        return Ok(hosts);
    }
    for entry in split_entries(input)? {
        expand_entry(input, entry.trim(), &mut hosts)?;
    }
    Ok(hosts)
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

fn expand_entry(input: &str, entry: &str, hosts: &mut Vec<String>) -> Result<(), HostlistError> {
    if entry.is_empty() {
        return Err(HostlistError::EmptyEntry {
            input: input.to_owned(),
        });
    }
    let Some((prefix, rest)) = entry.split_once('[') else {
        return push_host(input, hosts, entry.to_owned());
    };
    // split_entries guarantees a matching `]` after every `[`.
    let (ranges, suffix) = rest.split_once(']').unwrap_or((rest, ""));
    if suffix.contains('[') {
        return Err(HostlistError::SeveralBrackets {
            input: input.to_owned(),
            entry: entry.to_owned(),
        });
    }
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
        let count = usize::try_from(hi - lo + 1).unwrap_or(usize::MAX);
        if count > MAX_HOSTS - hosts.len() {
            return Err(HostlistError::TooLarge {
                input: input.to_owned(),
            });
        }
        for n in lo..=hi {
            hosts.push(format!("{prefix}{n:0width$}{suffix}"));
        }
    }
    Ok(())
}

fn push_host(input: &str, hosts: &mut Vec<String>, host: String) -> Result<(), HostlistError> {
    if hosts.len() >= MAX_HOSTS {
        return Err(HostlistError::TooLarge {
            input: input.to_owned(),
        });
    }
    hosts.push(host);
    Ok(())
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
