//! RFC 22 idsets: sets of broker ranks written as `0-3,5,7-9` (optionally in brackets).

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

/// Most ids one idset's text may write (ids in overlapping ranges count again): far
/// above any instance, far below what a hostile `0-4294967295` would make us allocate.
pub const MAX_IDS: usize = 1 << 20;

/// A set of ranks (or Job completion indexes, which Kubernetes writes the same way).
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct IdSet(BTreeSet<u32>);

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

    /// The ranks `lo..=hi`.
    pub fn range(lo: u32, hi: u32) -> Self {
        Self((lo..=hi).collect())
    }

    pub fn contains(&self, id: u32) -> bool {
        self.0.contains(&id)
    }

    pub fn insert(&mut self, id: u32) -> bool {
        self.0.insert(id)
    }

    pub fn remove(&mut self, id: u32) -> bool {
        self.0.remove(&id)
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn iter(&self) -> impl DoubleEndedIterator<Item = u32> + '_ {
        self.0.iter().copied()
    }

    pub fn first(&self) -> Option<u32> {
        self.0.first().copied()
    }

    pub fn last(&self) -> Option<u32> {
        self.0.last().copied()
    }

    pub fn union(&self, other: &IdSet) -> IdSet {
        Self(self.0.union(&other.0).copied().collect())
    }

    pub fn difference(&self, other: &IdSet) -> IdSet {
        Self(self.0.difference(&other.0).copied().collect())
    }

    pub fn intersection(&self, other: &IdSet) -> IdSet {
        Self(self.0.intersection(&other.0).copied().collect())
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
        let mut set = BTreeSet::new();
        if body.is_empty() {
            return Ok(Self(set));
        }
        // Ids as written, overlaps counted again: bounds the work, which the size of the
        // set does not (`0-524287` written a thousand times took 40 s).
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
            set.extend(lo..=hi);
        }
        Ok(Self(set))
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
        let mut ids = self.0.iter().copied().peekable();
        let mut first = true;
        while let Some(lo) = ids.next() {
            let mut hi = lo;
            // checked: `hi` may be u32::MAX, the last id there is.
            while hi
                .checked_add(1)
                .is_some_and(|next| ids.peek() == Some(&next))
            {
                hi += 1;
                ids.next();
            }
            if !first {
                f.write_str(",")?;
            }
            first = false;
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
        Self(iter.into_iter().collect())
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
    fn parse_below_names_the_bound() {
        assert!(IdSet::parse_below("0-9", 10).is_ok());
        let err = IdSet::parse_below("8-10", 10).unwrap_err();
        assert!(err.to_string().contains("out of range"), "{err}");
    }
}
