//! A value per rank, kept in rank order as runs of neighbours with the same value: the
//! ranks of one grow start waiting together and most ranks read alike, so 10,000 ranks
//! are a few runs, and a pass steps along the runs instead of 10,000 entries.

/// Ranks with a value, as runs `(first, last, value)`, ascending and apart: two runs that
/// touch hold different values, so one map has one form however it was built.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct RankMap<V>(Vec<(u32, u32, V)>);

impl<V> Default for RankMap<V> {
    fn default() -> Self {
        RankMap(Vec::new())
    }
}

impl<V: PartialEq> RankMap<V> {
    /// Gives ranks `first..=last` the value `v`; they come after every rank given one.
    pub fn push_run(&mut self, first: u32, last: u32, v: V) {
        match self.0.last_mut() {
            Some((_, hi, value)) if *hi + 1 == first && *value == v => *hi = last,
            _ => self.0.push((first, last, v)),
        }
    }

    /// Rank `k`'s value, where it is kept.
    pub fn value_of(&self, k: u32) -> Option<&V> {
        let i = self.run_at(k);
        self.0
            .get(i)
            .filter(|&&(lo, _, _)| lo <= k)
            .map(|(_, _, v)| v)
    }

    /// The runs, ascending, where they are kept.
    pub fn runs_kept(&self) -> impl Iterator<Item = &(u32, u32, V)> {
        self.0.iter()
    }

    /// Where rank `k` is or would go: the first run that does not end below it.
    fn run_at(&self, k: u32) -> usize {
        self.0.partition_point(|&(_, hi, _)| hi < k)
    }
}

impl<V: Copy + PartialEq> RankMap<V> {
    pub fn values(&self) -> impl Iterator<Item = V> + '_ {
        self.0.iter().map(|&(_, _, v)| v)
    }

    /// The runs, ascending.
    pub fn runs(&self) -> impl Iterator<Item = (u32, u32, V)> + '_ {
        self.0.iter().copied()
    }

    /// Gives rank `k` the value `v`; it comes after every rank given one.
    pub fn push(&mut self, k: u32, v: V) {
        self.push_run(k, k, v);
    }

    /// Rank `k`'s value.
    pub fn get(&self, k: u32) -> Option<V> {
        self.value_of(k).copied()
    }

    /// Sets rank `k`'s value, or takes it out (`None`), in any order.
    pub fn set(&mut self, k: u32, value: Option<V>) {
        let i = self.run_at(k);
        if let Some(&(lo, hi, v)) = self.0.get(i).filter(|&&(lo, _, _)| lo <= k) {
            if value == Some(v) {
                return;
            }
            // `lo <= k <= hi`: each arm only steps away from an end `k` is not at.
            match (lo == k, hi == k) {
                (true, true) => {
                    self.0.remove(i);
                }
                (true, false) => self.0[i].0 = k + 1,
                (false, true) => self.0[i].1 = k - 1,
                (false, false) => {
                    self.0[i].1 = k - 1;
                    self.0.insert(i + 1, (k + 1, hi, v));
                }
            }
        }
        let Some(value) = value else { return };
        let i = self.run_at(k);
        // Runs before `i` end below `k` and the one at `i` starts above it.
        let joins_previous = i > 0 && self.0[i - 1].1 + 1 == k && self.0[i - 1].2 == value;
        let joins_next = self
            .0
            .get(i)
            .is_some_and(|&(lo, _, v)| lo - 1 == k && v == value);
        match (joins_previous, joins_next) {
            (true, true) => {
                self.0[i - 1].1 = self.0[i].1;
                self.0.remove(i);
            }
            (true, false) => self.0[i - 1].1 = k,
            (false, true) => self.0[i].0 = k,
            (false, false) => self.0.insert(i, (k, k, value)),
        }
    }

    /// The ranks whose value meets `test`.
    pub fn ranks_where(&self, test: impl Fn(V) -> bool) -> crate::model::IdSet {
        let mut ranks = crate::model::IdSet::new();
        for &(lo, hi, v) in &self.0 {
            if test(v) {
                ranks.insert_range(lo, hi);
            }
        }
        ranks
    }

    /// Ranks `first..=last` as pieces `(from, to, value)` in order, `None` where the
    /// ranks have no value.
    pub fn pieces(&self, first: u32, last: u32) -> impl Iterator<Item = (u32, u32, Option<V>)> {
        let mut at = Some(first);
        let mut runs = self.0[self.run_at(first)..].iter().peekable();
        std::iter::from_fn(move || {
            let from = at.filter(|&k| k <= last)?;
            let (to, value) = match runs.peek() {
                Some(&&(lo, hi, v)) if lo <= from => {
                    runs.next();
                    (hi.min(last), Some(v))
                }
                // `from < lo`, so `lo - 1` does not wrap.
                Some(&&(lo, _, _)) if lo <= last => (lo - 1, None),
                _ => (last, None),
            };
            at = to.checked_add(1);
            Some((from, to, value))
        })
    }

    /// The value of each rank asked, for ranks asked in ascending order.
    pub fn ascending(&self) -> impl FnMut(u32) -> Option<V> + '_ {
        let mut rest = self.0.iter().peekable();
        move |k| {
            while rest.next_if(|&&(_, hi, _)| hi < k).is_some() {}
            rest.peek()
                .filter(|&&&(lo, _, _)| lo <= k)
                .map(|&&(_, _, v)| v)
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::RankMap;

    #[test]
    fn neighbours_with_one_value_are_one_run() {
        let mut times = RankMap::default();
        for (k, t) in [(2, 10.0), (3, 10.0), (4, 11.0), (7, 11.0), (8, 11.0)] {
            times.push(k, t);
        }
        assert_eq!(times.0, [(2, 3, 10.0), (4, 4, 11.0), (7, 8, 11.0)]);
        let mut since = times.ascending();
        let asked: Vec<Option<f64>> = [0, 2, 3, 4, 5, 7, 8, 8, 9]
            .into_iter()
            .map(&mut since)
            .collect();
        assert_eq!(
            asked,
            [
                None,
                Some(10.0),
                Some(10.0),
                Some(11.0),
                None,
                Some(11.0),
                Some(11.0),
                Some(11.0),
                None
            ]
        );
        assert_eq!(times.values().sum::<f64>(), 32.0);
        assert_eq!(RankMap::<f64>::default().ascending()(0), None);
        let pieces: Vec<_> = times.pieces(3, 7).collect();
        assert_eq!(
            pieces,
            [
                (3, 3, Some(10.0)),
                (4, 4, Some(11.0)),
                (5, 6, None),
                (7, 7, Some(11.0))
            ]
        );
    }

    proptest::proptest! {
        #[test]
        fn a_map_set_in_any_order_reads_as_pushed_in_order(
            sets in proptest::collection::vec((0u32..40, proptest::option::of(0u8..3)), 0..60),
            (first, last) in (0u32..42, 0u32..42),
        ) {
            let mut map = RankMap::default();
            let mut model = BTreeMap::new();
            for (k, value) in sets {
                map.set(k, value);
                match value {
                    Some(v) => model.insert(k, v),
                    None => model.remove(&k),
                };
            }
            let mut pushed = RankMap::default();
            model.iter().for_each(|(&k, &v)| pushed.push(k, v));
            proptest::prop_assert_eq!(&map, &pushed);
            for k in 0..41 {
                proptest::prop_assert_eq!(map.get(k), model.get(&k).copied());
            }
            let high: Vec<u32> = map.ranks_where(|v| v >= 1).iter().collect();
            let model_high: Vec<u32> = model.iter().filter(|&(_, &v)| v >= 1).map(|(&k, _)| k).collect();
            proptest::prop_assert_eq!(high, model_high);
            // The pieces cover `first..=last` once, in order, each rank with its value.
            let mut next = first;
            for (from, to, value) in map.pieces(first, last) {
                proptest::prop_assert_eq!(from, next);
                proptest::prop_assert!(from <= to && to <= last);
                for k in from..=to {
                    proptest::prop_assert_eq!(value, model.get(&k).copied());
                }
                next = to + 1;
            }
            proptest::prop_assert_eq!(next, first.max(last + 1));
        }
    }
}
