//! Fuzzing idsets and hostlists, the two compact notations every Flux payload and the
//! retire RPC carry: any text is parsed or refused with an error naming it, and what
//! parses prints back to the same thing.
//!
//! `FUZZ_CASES=N` sets the cases per target (default 2,000).

mod fuzz_support;

use std::collections::BTreeSet;

use fluxk8s::model::IdSet;
use fluxk8s::model::hostlist::{self, MAX_HOSTS};
use proptest::prelude::*;

use fuzz_support::{config, hostlist_text, idset_text};

proptest! {
    #![proptest_config(config())]

    #[test]
    fn idset_text_parses_and_prints_back_or_is_refused(text in idset_text(10_000)) {
        match text.parse::<IdSet>() {
            Ok(set) => {
                let printed = set.to_string();
                prop_assert_eq!(printed.parse::<IdSet>().ok(), Some(set));
            }
            Err(err) => prop_assert!(err.to_string().contains(&text), "{err}"),
        }
    }

    #[test]
    fn any_set_prints_in_a_form_that_parses_back(
        ids in prop::collection::btree_set(any::<u32>(), 0..64),
        runs in prop::collection::vec((any::<u32>(), 0u32..50), 0..4),
    ) {
        let mut set: IdSet = ids.into_iter().collect();
        for (start, length) in runs {
            set = set.union(&IdSet::range(start, start.saturating_add(length)));
        }
        prop_assert_eq!(set.to_string().parse::<IdSet>().ok(), Some(set));
    }

    #[test]
    fn set_operations_agree_with_a_plain_set(
        a in set_and_model(),
        b in set_and_model(),
        edits in prop::collection::vec((any::<bool>(), edge_id()), 0..40),
    ) {
        let ((mut set, mut model), (other, other_model)) = (a, b);
        for (insert, id) in edits {
            let changed = if insert { set.insert(id) } else { set.remove(id) };
            let model_changed = if insert { model.insert(id) } else { model.remove(&id) };
            prop_assert_eq!(changed, model_changed, "insert {} {}: {}", insert, id, set);
        }
        let same = |set: &IdSet, model: &BTreeSet<u32>| {
            set.iter().eq(model.iter().copied())
                && set.iter().rev().eq(model.iter().rev().copied())
                && set.len() == model.len()
                && set.first() == model.first().copied()
                && set.last() == model.last().copied()
                && set == &model.iter().copied().collect::<IdSet>()
        };
        prop_assert!(same(&set, &model), "{} after edits", set);
        for id in model.iter().chain(other_model.iter()).flat_map(|&id| [id.wrapping_sub(1), id, id.wrapping_add(1)]) {
            prop_assert_eq!(set.contains(id), model.contains(&id), "{} in {}", id, set);
        }
        let union: BTreeSet<u32> = model.union(&other_model).copied().collect();
        let difference: BTreeSet<u32> = model.difference(&other_model).copied().collect();
        let intersection: BTreeSet<u32> = model.intersection(&other_model).copied().collect();
        prop_assert!(same(&set.union(&other), &union), "{} | {}", set, other);
        prop_assert!(same(&set.difference(&other), &difference), "{} - {}", set, other);
        prop_assert!(same(&set.intersection(&other), &intersection), "{} & {}", set, other);
    }

    #[test]
    fn parse_below_keeps_every_id_under_the_limit(
        text in idset_text(10_000),
        limit in 0u32..12_000,
    ) {
        match IdSet::parse_below(&text, limit) {
            Ok(set) => prop_assert!(set.last().is_none_or(|id| id < limit)),
            Err(err) => prop_assert!(err.to_string().contains(&text), "{err}"),
        }
    }

    #[test]
    fn hostlist_text_expands_within_bounds_and_encodes_back_or_is_refused(
        text in hostlist_text(),
    ) {
        let expanded = hostlist::expand(&text);
        // Counting checks what expanding checks, and counts what it makes.
        prop_assert_eq!(hostlist::count(&text), expanded.as_ref().map(Vec::len).map_err(Clone::clone));
        match expanded {
            Ok(hosts) => {
                prop_assert!(hosts.len() <= MAX_HOSTS);
                let encoded = hostlist::encode(&hosts);
                prop_assert_eq!(hostlist::expand(&encoded).ok(), Some(hosts), "{}", encoded);
            }
            Err(err) => prop_assert!(err.to_string().contains(&text), "{err}"),
        }
    }

    #[test]
    fn numbered_host_names_encode_and_expand_back(
        hosts in prop::collection::vec(
            (prop::sample::select(vec!["flux-sample-", "node", "n0", "a.b-"]), 0u64..2_000, 0usize..4),
            0..40,
        ),
    ) {
        let names: Vec<String> = hosts
            .into_iter()
            .map(|(prefix, n, width)| format!("{prefix}{n:0width$}"))
            .collect();
        let encoded = hostlist::encode(&names);
        prop_assert_eq!(hostlist::expand(&encoded).ok(), Some(names), "{}", encoded);
    }
}

/// Ids where runs meet their edges: small ones, and ones next to u32::MAX.
fn edge_id() -> impl Strategy<Value = u32> {
    prop_oneof![0u32..40, (u32::MAX - 40)..=u32::MAX]
}

/// A set built the ways sets are built (ids in any order, ranges, removals), with the same
/// set kept plainly beside it.
fn set_and_model() -> impl Strategy<Value = (IdSet, BTreeSet<u32>)> {
    (
        prop::collection::vec(edge_id(), 0..30),
        prop::collection::vec((edge_id(), 0u32..8), 0..4),
    )
        .prop_map(|(ids, ranges)| {
            let mut set: IdSet = ids.iter().copied().collect();
            let mut model: BTreeSet<u32> = ids.into_iter().collect();
            for (lo, extra) in ranges {
                let hi = lo.saturating_add(extra);
                set = set.union(&IdSet::range(lo, hi));
                model.extend(lo..=hi);
            }
            (set, model)
        })
}
