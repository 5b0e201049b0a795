//! RFC 22 idsets: sets of broker ranks written as `0-3,5,7-9` (optionally in brackets).

use std::collections::HashMap;
use std::fmt;
use std::hash::Hash;
use std::str::FromStr;

/// Most ids one idset's text may write (ids in overlapping ranges count again): far
/// above any instance, far below what a hostile `0-4294967295` would make us iterate.
pub const MAX_IDS: usize = 1 << 20;

/// A set of ranks (or Job completion indexes, which Kubernetes writes the same way).
///
/// Kept as its runs, the way RFC 22 writes it: ranks come in long runs (all online, all
/// seen up), so a lookup is a binary search over a handful of runs instead of a tree walk
/// over a thousand nodes, and printing is a walk over the runs.
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct IdSet {
    /// Ascending, disjoint and not touching (`1-2,3` is `1-3`): one form per set, so the
    /// derived equality and hash are the set's.
    runs: Vec<(u32, u32)>,
}

/// Adds `id` to `runs` if it lies past the last run (extending it when adjacent);
/// false, and nothing done, if it does not.
#[inline]
fn append(runs: &mut Vec<(u32, u32)>, id: u32) -> bool {
    match runs.last_mut() {
        Some((_, hi)) if *hi >= id => return false,
        Some((_, hi)) if *hi + 1 == id => *hi = id,
        _ => runs.push((id, id)),
    }
    true
}

/// See [`IdSet::ascending`].
pub struct Ascending<'a> {
    /// The first run that does not end below the last id asked (`None`: past the last),
    /// kept at hand: a pass over the ranks asks once per rank, mostly inside one run.
    current: Option<(u32, u32)>,
    /// The runs after it.
    rest: &'a [(u32, u32)],
    #[cfg(debug_assertions)]
    last_asked: u32,
}

impl Ascending<'_> {
    /// Whether `id` is in the set. Ids asked must not decrease.
    #[inline]
    pub fn contains(&mut self, id: u32) -> bool {
        #[cfg(debug_assertions)]
        {
            assert!(self.last_asked <= id, "ids asked in ascending order");
            self.last_asked = id;
        }
        loop {
            match self.current {
                Some((lo, hi)) if id <= hi => return lo <= id,
                Some(_) => self.current = self.next_run(),
                None => return false,
            }
        }
    }

    fn next_run(&mut self) -> Option<(u32, u32)> {
        let (&first, rest) = self.rest.split_first()?;
        self.rest = rest;
        Some(first)
    }
}

/// Why a string is not an idset.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid idset {input:?}: {why}")]
pub struct IdSetError {
    input: String,
    why: &'static str,
}

impl IdSet {
    pub fn new() -> Self {
        Self::default()
    }

    /// The ranks `lo..=hi` (none if `lo > hi`).
    pub fn range(lo: u32, hi: u32) -> Self {
        let runs = if lo <= hi { vec![(lo, hi)] } else { Vec::new() };
        Self { runs }
    }

    /// Any runs, in any order, overlapping or not.
    fn from_runs(mut runs: Vec<(u32, u32)>) -> Self {
        runs.sort_unstable();
        let mut merged: Vec<(u32, u32)> = Vec::with_capacity(runs.len());
        for (lo, hi) in runs {
            match merged.last_mut() {
                // saturating: a run ending at u32::MAX absorbs everything after it.
                Some((_, last)) if lo <= last.saturating_add(1) => *last = (*last).max(hi),
                _ => merged.push((lo, hi)),
            }
        }
        Self { runs: merged }
    }

    /// Where `id` is or would go: the first run that does not end below it.
    fn run_at(&self, id: u32) -> usize {
        self.runs.partition_point(|&(_, hi)| hi < id)
    }

    pub fn contains(&self, id: u32) -> bool {
        self.runs
            .get(self.run_at(id))
            .is_some_and(|&(lo, _)| lo <= id)
    }

    /// Inlined where it is called: passes over 10,000 ranks insert in ascending order,
    /// and pay for the append, not a call.
    #[inline]
    pub fn insert(&mut self, id: u32) -> bool {
        // Ids mostly come in ascending order (a pass over the ranks): no search for those.
        if append(&mut self.runs, id) {
            return true;
        }
        self.insert_between(id)
    }

    /// [`Self::insert`] of an id below the last.
    fn insert_between(&mut self, id: u32) -> bool {
        let i = self.run_at(id);
        let next = self.runs.get(i).copied();
        if next.is_some_and(|(lo, _)| lo <= id) {
            return false;
        }
        // Runs before `i` end below `id` and the one at `i` starts above it, so neither
        // `+ 1` nor `- 1` can wrap.
        let joins_previous = i > 0 && self.runs[i - 1].1 + 1 == id;
        let joins_next = next.is_some_and(|(lo, _)| lo - 1 == id);
        match (joins_previous, joins_next) {
            (true, true) => {
                self.runs[i - 1].1 = self.runs[i].1;
                self.runs.remove(i);
            }
            (true, false) => self.runs[i - 1].1 = id,
            (false, true) => self.runs[i].0 = id,
            (false, false) => self.runs.insert(i, (id, id)),
        }
        true
    }

    /// Adds `lo..=hi`. Ranges mostly come in ascending order (the runs of a status): those
    /// extend or follow the last run, with no search.
    pub fn insert_range(&mut self, lo: u32, hi: u32) {
        match self.runs.last_mut() {
            _ if lo > hi => {}
            // Already in: a pod group sees an index once per pod.
            Some((first, last)) if *first <= lo && hi <= *last => {}
            Some((_, last)) if *last >= lo => *self = self.union(&IdSet::range(lo, hi)),
            // `last < lo` here, so `+ 1` cannot wrap.
            Some((_, last)) if *last + 1 == lo => *last = hi,
            _ => self.runs.push((lo, hi)),
        }
    }

    pub fn remove(&mut self, id: u32) -> bool {
        let i = self.run_at(id);
        let Some(&(lo, hi)) = self.runs.get(i).filter(|&&(lo, _)| lo <= id) else {
            return false;
        };
        // `lo <= id <= hi`, and each arm only steps away from an end `id` is not at.
        match (lo == id, hi == id) {
            (true, true) => {
                self.runs.remove(i);
            }
            (true, false) => self.runs[i].0 = id + 1,
            (false, true) => self.runs[i].1 = id - 1,
            (false, false) => {
                self.runs[i].1 = id - 1;
                self.runs.insert(i + 1, (id + 1, hi));
            }
        }
        true
    }

    /// Membership of ids asked in ascending order, each found by stepping along the runs
    /// rather than by a search: a pass over every rank asks several sets about each.
    pub fn ascending(&self) -> Ascending<'_> {
        let mut cursor = Ascending {
            current: None,
            rest: &self.runs,
            #[cfg(debug_assertions)]
            last_asked: 0,
        };
        cursor.current = cursor.next_run();
        cursor
    }

    pub fn len(&self) -> usize {
        self.runs
            .iter()
            .map(|&(lo, hi)| (hi - lo) as usize + 1)
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.runs.is_empty()
    }

    /// How many runs it is written with (`0-3,5` has two): what it holds in memory.
    pub fn run_count(&self) -> usize {
        self.runs.len()
    }

    pub fn iter(&self) -> impl DoubleEndedIterator<Item = u32> + '_ {
        self.runs.iter().flat_map(|&(lo, hi)| lo..=hi)
    }

    pub fn first(&self) -> Option<u32> {
        self.runs.first().map(|&(lo, _)| lo)
    }

    pub fn last(&self) -> Option<u32> {
        self.runs.last().map(|&(_, hi)| hi)
    }

    pub fn union(&self, other: &IdSet) -> IdSet {
        Self::from_runs([&self.runs[..], &other.runs[..]].concat())
    }

    pub fn difference(&self, other: &IdSet) -> IdSet {
        let mut runs = Vec::new();
        // Runs of `other` wholly below the current run of `self` are done with.
        let mut skip = 0;
        for &(lo, hi) in &self.runs {
            while other.runs.get(skip).is_some_and(|&(_, cut_hi)| cut_hi < lo) {
                skip += 1;
            }
            let mut rest = Some(lo);
            for &(cut_lo, cut_hi) in other.runs[skip..].iter().take_while(|r| r.0 <= hi) {
                let Some(from) = rest else { break };
                if cut_lo > from {
                    runs.push((from, cut_lo - 1));
                }
                // Nothing is left once the cut reaches the end of the run.
                rest = (cut_hi < hi).then(|| cut_hi + 1);
            }
            if let Some(from) = rest {
                runs.push((from, hi));
            }
        }
        Self { runs }
    }

    pub fn intersection(&self, other: &IdSet) -> IdSet {
        let (mut a, mut b) = (self.runs.iter().peekable(), other.runs.iter().peekable());
        let mut runs = Vec::new();
        while let (Some(&&(a_lo, a_hi)), Some(&&(b_lo, b_hi))) = (a.peek(), b.peek()) {
            let (lo, hi) = (a_lo.max(b_lo), a_hi.min(b_hi));
            if lo <= hi {
                runs.push((lo, hi));
            }
            // The run that ends first can meet nothing further on.
            if a_hi < b_hi {
                a.next();
            } else {
                b.next();
            }
        }
        Self { runs }
    }

    /// Parses an idset, rejecting ids at or above `limit` (the instance size, or a Job's
    /// completions) with an error that names the bound.
    pub fn parse_below(input: &str, limit: u32) -> Result<IdSet, IdSetError> {
        let set: IdSet = input.parse()?;
        match set.last() {
            Some(max) if max >= limit => Err(IdSetError {
                input: input.to_owned(),
                why: "id out of range",
            }),
            _ => Ok(set),
        }
    }
}

/// Ids that share a key (a phase, a reason, a state), as [`group_by_key`] makes them.
#[derive(Debug, Clone, PartialEq)]
pub struct IdGroup<K> {
    pub key: K,
    pub ids: IdSet,
    /// Items in the group: more than `ids.len()` when an id came more than once.
    pub count: usize,
}

/// Groups `(key, id)` items by key, the groups in the order their keys first came: how
/// a status of 1,000 ranks or pods says it in a handful of entries.
pub fn group_by_key<K: Eq + Hash + Clone>(
    items: impl IntoIterator<Item = (K, u32)>,
) -> Vec<IdGroup<K>> {
    group_runs_by_key(items.into_iter().map(|(key, id)| (key, id, id)))
}

/// [`group_by_key`] of `(key, lo, hi)` items, each the ids `lo..=hi`.
pub fn group_runs_by_key<K: Eq + Hash + Clone>(
    items: impl IntoIterator<Item = (K, u32, u32)>,
) -> Vec<IdGroup<K>> {
    let mut groups: Vec<IdGroup<K>> = Vec::new();
    let mut index: HashMap<K, usize> = HashMap::new();
    // Neighbours mostly share a key (10,000 ranks fall in a handful of runs): comparing
    // with the last group's key spares hashing each item.
    let mut last: Option<usize> = None;
    for (key, lo, hi) in items {
        let at = match last {
            Some(at) if groups[at].key == key => at,
            _ => *index.entry(key).or_insert_with_key(|key| {
                groups.push(IdGroup {
                    key: key.clone(),
                    ids: IdSet::new(),
                    count: 0,
                });
                groups.len() - 1
            }),
        };
        last = Some(at);
        groups[at].ids.insert_range(lo, hi);
        groups[at].count += (hi - lo) as usize + 1;
    }
    groups
}

impl FromStr for IdSet {
    type Err = IdSetError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let fail = |why| IdSetError {
            input: input.to_owned(),
            why,
        };
        let trimmed = input.trim();
        let body = match (trimmed.strip_prefix('['), trimmed.strip_suffix(']')) {
            (Some(_), Some(_)) => &trimmed[1..trimmed.len() - 1],
            (None, None) => trimmed,
            _ => return Err(fail("unbalanced brackets")),
        };
        if body.is_empty() {
            return Ok(Self::new());
        }
        let mut runs = Vec::new();
        // Ids as written, overlaps counted again: what a caller may go on to iterate is
        // bounded by the text, not only by the set.
        let mut written = 0usize;
        for part in body.split(',') {
            let (lo, hi) = match part.split_once('-') {
                Some((lo, hi)) => (
                    parse_id(lo).ok_or(fail("bad range start"))?,
                    parse_id(hi).ok_or(fail("bad range end"))?,
                ),
                None => {
                    let id = parse_id(part).ok_or(fail("bad id"))?;
                    (id, id)
                }
            };
            if lo > hi {
                return Err(fail("descending range"));
            }
            written += (hi - lo) as usize + 1;
            if written > MAX_IDS {
                return Err(fail("too many ids"));
            }
            runs.push((lo, hi));
        }
        Ok(Self::from_runs(runs))
    }
}

fn parse_id(s: &str) -> Option<u32> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// Writes the compact RFC 22 form: ascending, runs collapsed to `lo-hi`.
impl fmt::Display for IdSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, &(lo, hi)) in self.runs.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            if lo == hi {
                write!(f, "{lo}")?;
            } else {
                write!(f, "{lo}-{hi}")?;
            }
        }
        Ok(())
    }
}

impl fmt::Debug for IdSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "IdSet({self})")
    }
}

impl FromIterator<u32> for IdSet {
    fn from_iter<I: IntoIterator<Item = u32>>(iter: I) -> Self {
        let mut runs: Vec<(u32, u32)> = Vec::new();
        let mut unordered = false;
        for id in iter {
            // Ids mostly come in ascending order: extend the last run in place. The others
            // are sorted and merged once at the end.
            if !append(&mut runs, id) {
                unordered = true;
                runs.push((id, id));
            }
        }
        if unordered {
            Self::from_runs(runs)
        } else {
            Self { runs }
        }
    }
}

impl serde::Serialize for IdSet {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for IdSet {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_insert_like_their_ids_in_any_order() {
        let ranges = [
            (5, 7),
            (8, 8),
            (10, 12),
            (11, 11),
            (0, 2),
            (3, 4),
            (20, 19),
            (6, 15),
        ];
        let mut by_range = IdSet::new();
        let mut by_id = IdSet::new();
        for (lo, hi) in ranges {
            by_range.insert_range(lo, hi);
            for id in lo..=hi {
                by_id.insert(id);
            }
            assert_eq!(by_range, by_id, "after {lo}-{hi}");
        }
        assert_eq!(by_range.to_string(), "0-15");
    }

    #[test]
    fn ascending_lookups_agree_with_contains() {
        let set: IdSet = "1-3,7,9-12,20".parse().unwrap();
        let mut lookup = set.ascending();
        for id in 0..25 {
            assert_eq!(lookup.contains(id), set.contains(id), "{id}");
        }
        let mut sparse = set.ascending();
        let asked: Vec<u32> = [0, 2, 2, 8, 10, 30]
            .into_iter()
            .filter(|&id| sparse.contains(id))
            .collect();
        assert_eq!(asked, [2, 2, 10]);
        assert!(!IdSet::new().ascending().contains(0));
    }

    #[test]
    fn parses_ranges_singles_and_brackets() {
        let set: IdSet = "0-3,5,7-9".parse().unwrap();
        assert_eq!(set.iter().collect::<Vec<_>>(), vec![0, 1, 2, 3, 5, 7, 8, 9]);
        assert_eq!("[1-2]".parse::<IdSet>().unwrap(), IdSet::range(1, 2));
        assert!("".parse::<IdSet>().unwrap().is_empty());
    }

    #[test]
    fn displays_compact_form() {
        let set: IdSet = [9, 0, 1, 2, 4, 6, 7].into_iter().collect();
        assert_eq!(set.to_string(), "0-2,4,6-7,9");
        assert_eq!(IdSet::new().to_string(), "");
    }

    #[test]
    fn rejects_malformed_input() {
        for bad in [
            "a",
            "1-",
            "-1",
            "3-1",
            "1,,2",
            "[1-2",
            "1 2",
            "99999999999",
            "0-4294967295",
            "0-1048575,2000000",
        ] {
            assert!(bad.parse::<IdSet>().is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn groups_keep_the_order_their_keys_came_and_count_repeats() {
        let groups = group_by_key([("up", 1), ("lost", 2), ("up", 3), ("up", 3)]);
        let got: Vec<_> = groups
            .iter()
            .map(|g| (g.key, g.ids.to_string(), g.count))
            .collect();
        assert_eq!(
            got,
            [("up", "1,3".to_owned(), 3), ("lost", "2".to_owned(), 1)]
        );
    }

    #[test]
    fn parse_below_names_the_bound() {
        assert!(IdSet::parse_below("0-9", 10).is_ok());
        let err = IdSet::parse_below("8-10", 10).unwrap_err();
        assert!(err.to_string().contains("out of range"), "{err}");
    }
}
