//! Which ranks changed since their reader last took them: what lets a plan make again only
//! the ranks an event touched, not all 10,000.

use super::idset::IdSet;

/// Ranks changed since the last [`ChangedRanks::take`]. A new log says every rank changed:
/// a reader that has seen nothing yet must read them all.
#[derive(Debug, Clone)]
pub struct ChangedRanks {
    all: bool,
    ranks: IdSet,
}

impl Default for ChangedRanks {
    fn default() -> Self {
        Self {
            all: true,
            ranks: IdSet::new(),
        }
    }
}

/// Bookkeeping for a reader, not part of what its owner says: owners with equal data are
/// equal whatever their logs hold.
impl PartialEq for ChangedRanks {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl ChangedRanks {
    pub fn add(&mut self, ranks: &IdSet) {
        if !self.all && !ranks.is_empty() {
            self.ranks = self.ranks.union(ranks);
        }
    }

    pub fn add_rank(&mut self, k: u32) {
        if !self.all {
            self.ranks.insert(k);
        }
    }

    pub fn add_all(&mut self) {
        self.all = true;
        self.ranks = IdSet::new();
    }

    /// The ranks changed, `None` if every rank may have.
    pub fn ranks(&self) -> Option<&IdSet> {
        (!self.all).then_some(&self.ranks)
    }

    /// What the log holds; it starts again empty.
    pub fn take(&mut self) -> ChangedRanks {
        std::mem::replace(
            self,
            ChangedRanks {
                all: false,
                ranks: IdSet::new(),
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_log_says_every_rank_then_only_what_was_added() {
        let mut log = ChangedRanks::default();
        assert_eq!(log.take().ranks(), None);
        assert_eq!(log.ranks(), Some(&IdSet::new()));
        log.add(&"3-5".parse().unwrap());
        log.add_rank(9);
        assert_eq!(
            log.ranks().map(ToString::to_string).as_deref(),
            Some("3-5,9")
        );
        log.add_rank(1);
        assert_eq!(
            log.take().ranks().map(ToString::to_string).as_deref(),
            Some("1,3-5,9")
        );
        log.add_all();
        log.add_rank(2);
        assert_eq!(log.ranks(), None);
    }
}
