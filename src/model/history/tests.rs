use super::*;

fn ids(text: &str) -> IdSet {
    text.parse().unwrap()
}

fn up(ranks: &str) -> impl Iterator<Item = (u32, FluxState)> {
    ids(ranks)
        .iter()
        .map(|k| (k, FluxState::Up))
        .collect::<Vec<_>>()
        .into_iter()
}

fn pod(index: u32, phase: PodPhase, terminating: bool) -> PodView {
    PodView {
        phase,
        terminating,
        ..PodView::running(
            format!("mc-{index}"),
            format!("uid-{index}-{phase:?}"),
            index,
        )
    }
}

fn changes(history: &History) -> Vec<Change> {
    history
        .entries(0, None)
        .into_iter()
        .map(|e| e.change)
        .collect()
}

#[test]
fn a_change_of_many_ranks_is_one_entry_and_no_change_is_none() {
    let mut history = History::new();
    history.flux(1.0, up("0-9999"));
    history.flux(2.0, up("0-9999"));
    assert_eq!(
        changes(&history),
        [Change::Flux {
            ranks: ids("0-9999"),
            state: FluxState::Up
        }]
    );
    let mixed = [
        (2, FluxState::Drained),
        (3, FluxState::Up),
        (5, FluxState::Lost),
        (6, FluxState::Drained),
    ];
    history.flux(3.0, mixed);
    let last_two: Vec<Change> = changes(&history).into_iter().skip(1).collect();
    assert_eq!(
        last_two,
        [
            Change::Flux {
                ranks: ids("2,6"),
                state: FluxState::Drained
            },
            Change::Flux {
                ranks: ids("5"),
                state: FluxState::Lost
            },
        ],
        "rank 3 was up already"
    );
}

#[test]
fn pods_are_diffed_per_index_and_a_live_pod_speaks_for_its_index() {
    let mut history = History::new();
    let first: Vec<PodView> = (0..4).map(|k| pod(k, PodPhase::Running, false)).collect();
    history.pods(1.0, &first);
    // Index 2 completed, index 3's pod is gone, index 1's old pod terminates beside
    // its pending replacement.
    let second = [
        pod(0, PodPhase::Running, false),
        pod(1, PodPhase::Running, true),
        pod(1, PodPhase::Pending, false),
        pod(2, PodPhase::Succeeded, false),
    ];
    history.pods(2.0, &second);
    assert_eq!(
        changes(&history),
        [
            Change::Pod {
                ranks: ids("0-3"),
                state: PodState::Running
            },
            Change::Pod {
                ranks: ids("1"),
                state: PodState::Pending
            },
            Change::Pod {
                ranks: ids("2"),
                state: PodState::Succeeded
            },
            Change::Pod {
                ranks: ids("3"),
                state: PodState::None
            },
        ]
    );
}

#[test]
fn the_entry_count_is_bounded_and_sequence_numbers_go_on() {
    let mut history = History::new();
    for n in 0..(ENTRIES_KEPT + 3_000) {
        history.request(n as f64, &format!("resize {n}"), None);
    }
    assert_eq!(history.len(), ENTRIES_KEPT);
    assert_eq!(history.dropped(), 3_000);
    let kept = history.entries(0, None);
    assert_eq!(kept[0].seq, 3_000);
    assert_eq!(kept.last().unwrap().seq, 4_999);
    let newest = history.entries(4_998, None);
    assert_eq!(
        newest.iter().map(|e| e.seq).collect::<Vec<_>>(),
        [4_998, 4_999]
    );
    assert!(history.entries(5_000, None).is_empty());
}

#[test]
fn scattered_changes_at_ten_thousand_ranks_stay_within_the_run_budget() {
    let mut history = History::new();
    history.flux(0.0, up("0-9999"));
    // Every other rank drains, then comes back, over and over: each entry holds 5,000
    // runs, so the budget, not the entry count, bounds what is kept.
    for round in 0..50 {
        let state = if round % 2 == 0 {
            FluxState::Drained
        } else {
            FluxState::Up
        };
        history.flux(round as f64, (0..10_000).step_by(2).map(|k| (k, state)));
        assert!(history.runs <= RUNS_KEPT, "{} runs", history.runs);
    }
    assert_eq!(history.runs, 20_000, "four entries of 5,000 runs");
    let footprint = history.footprint();
    println!("history at 10,000 ranks, scattered changes: {footprint} bytes");
    assert!(footprint < 1_000_000, "{footprint} bytes");
    // What fell off is folded into the start: start + kept entries = now.
    let mut replayed = history.start.clone();
    for entry in &history.entries {
        replayed.apply(&entry.change);
    }
    assert_eq!(replayed, history.now);
    // Rounds 46-49 are kept; round 45, the last to fall off, brought rank 0 back up.
    assert_eq!(history.entries[0].time, 46.0);
    assert_eq!(history.start.flux[0], Some(FluxState::Up));
    assert_eq!(history.now.flux[0], Some(FluxState::Up));
    assert_eq!(history.start.flux[1], Some(FluxState::Up), "never changed");
}

#[test]
fn a_filter_cuts_changes_to_the_ranks_asked_and_keeps_what_concerns_all() {
    let mut history = History::new();
    history.flux(1.0, up("0-9"));
    history.size(1.0, 10);
    history.request(2.0, "resize 8", None);
    history.action(
        3.0,
        "drain rank(s) 8-9 (fluxk8s: shrink)",
        Some(&ids("8-9")),
    );
    history.action(3.0, "shut down broker 5", Some(&ids("5")));
    history.size(4.0, 10);
    let about_5: Vec<Change> = history
        .entries(0, Some(&ids("5")))
        .into_iter()
        .map(|e| e.change)
        .collect();
    assert_eq!(
        about_5,
        [
            Change::Flux {
                ranks: ids("5"),
                state: FluxState::Up
            },
            Change::Size { size: 10 },
            Change::Request {
                text: "resize 8".into(),
                ranks: None
            },
            Change::Action {
                text: "shut down broker 5".into(),
                ranks: Some(ids("5"))
            },
        ],
        "an unchanged size is not recorded twice"
    );
    let json = serde_json::to_value(history.entries(0, Some(&ids("9"))));
    let json = json.unwrap();
    assert_eq!(
        json[0],
        serde_json::json!({"seq": 0, "time": 1.0, "kind": "flux", "ranks": "9", "state": "up"})
    );
    assert_eq!(json[3]["ranks"], "8-9");
}

#[test]
fn long_texts_are_cut_on_a_character_boundary() {
    let mut history = History::new();
    let long = "é".repeat(TEXT_KEPT);
    history.action(0.0, &long, None);
    let Change::Action { text, .. } = &history.entries(0, None)[0].change else {
        panic!("an action")
    };
    assert!(text.len() <= TEXT_KEPT, "{} bytes", text.len());
    assert!(text.ends_with('…'));
}

/// 1,000 ranks: 0-499 stay, 500-999 are drained, shut down and their pods complete.
fn thousand_ranks_shrinking() -> History {
    let mut history = History::new();
    let running: Vec<PodView> = (0..1_000)
        .map(|k| pod(k, PodPhase::Running, false))
        .collect();
    history.flux(0.0, up("0-999"));
    history.pods(0.0, &running);
    history.size(0.0, 1_000);
    history.request(1.0, "resize 500", None);
    let drained = (500..1_000).map(|k| (k, FluxState::Drained));
    history.flux(1.5, drained);
    history.action(1.5, "drain rank(s) 500-999 (fluxk8s: shrink)", None);
    history.flux(2.0, (500..1_000).map(|k| (k, FluxState::Offline)));
    let done: Vec<PodView> = (0..1_000)
        .map(|k| match k {
            0..500 => pod(k, PodPhase::Running, false),
            _ => pod(k, PodPhase::Succeeded, false),
        })
        .collect();
    history.pods(2.5, &done);
    history
}

#[test]
fn the_picture_groups_ranks_with_one_history_into_one_row() {
    let history = thousand_ranks_shrinking();
    let panel = |clock| Panel {
        heading: "shrink <1000> & more".into(),
        history: &history,
        ranks: None,
        clock,
    };
    let picture = svg("title", &[panel(false)]);
    assert_eq!(picture, svg("title", &[panel(false)]), "deterministic");
    let rows: Vec<&str> = picture
        .lines()
        .filter(|l| l.contains("<title>ranks "))
        .collect();
    assert_eq!(rows.len(), 2, "{rows:#?}");
    assert!(rows[0].contains(">0-499</text>"), "{}", rows[0]);
    assert!(rows[1].contains(">500-999</text>"), "{}", rows[1]);
    assert!(picture.contains("shrink &lt;1000&gt; &amp; more"));
    assert!(picture.contains(">resize 500</text>"));
    assert!(picture.contains("fluxk8s: 1</text>"));
    assert!(!picture.contains("00:00:01"), "no clock unless asked");
    let with_clock = svg("title", &[panel(true)]);
    assert!(with_clock.contains(">00:00:01 resize 500</text>"));
    assert!(with_clock.contains(">since 1970-01-01 00:00:00</text>"));
    // Filtered to ranks 498-501: one row each side of the split.
    let some = ids("498-501");
    let filtered = svg(
        "title",
        &[Panel {
            ranks: Some(&some),
            ..panel(false)
        }],
    );
    let rows: Vec<&str> = filtered
        .lines()
        .filter(|l| l.contains("<title>ranks "))
        .collect();
    assert_eq!(rows.len(), 2);
    assert!(rows[0].contains(">498-499</text>") && rows[1].contains(">500-501</text>"));
}

#[test]
fn dates_are_utc_calendar_days() {
    for (time, day) in [
        (0.0, "1970-01-01"),
        (951_782_400.0, "2000-02-29"),
        (1_796_327_407.6, "2026-12-03"),
        (4_107_542_399.0, "2100-02-28"),
        (4_107_542_400.0, "2100-03-01"),
    ] {
        assert_eq!(svg::date(time), day, "{time}");
    }
}

#[test]
fn a_stripe_lays_its_changes_out_in_order_ending_together() {
    let history = thousand_ranks_shrinking();
    let layout = svg::Layout::new(&Panel {
        heading: String::new(),
        history: &history,
        ranks: None,
        clock: false,
    });
    let [start, resize] = &layout.segments[..] else {
        panic!("{:?}", layout.segments)
    };
    // Start: one change per stripe (the first view); resize: drained then offline.
    assert_eq!((start.slots, resize.slots), (2, 3));
    let (_, leaving) = &layout.groups[1];
    assert_eq!(
        leaving.flux,
        [
            (0, FluxState::Up),
            (1, FluxState::Drained),
            (1, FluxState::Offline)
        ]
    );
    // The pod completes in the last slot, with the broker's exit.
    assert_eq!(resize.change_x(0, 1), resize.change_x(1, 2));
}

#[test]
fn a_view_of_ten_thousand_pods_with_one_change_records_one_entry() {
    let mut history = History::new();
    let mut pods: Vec<PodView> = (0..10_000)
        .map(|k| pod(k, PodPhase::Running, false))
        .collect();
    history.pods(0.0, &pods);
    pods[4_321].terminating = true;
    let started = std::time::Instant::now();
    history.pods(1.0, &pods);
    let took = started.elapsed();
    history.flux(1.0, [(4_321, FluxState::Lost)]);
    let one_rank = started.elapsed() - took;
    println!("recording a view of 10,000 pods: {took:?}; one rank's change: {one_rank:?}");
    assert_eq!(
        changes(&history)[1..],
        [
            Change::Pod {
                ranks: ids("4321"),
                state: PodState::Terminating
            },
            Change::Flux {
                ranks: ids("4321"),
                state: FluxState::Lost
            },
        ]
    );
}

/// One pod per (index, suffix, phase) chosen, sorted as the driver sends them.
fn view_of(pods: &[(u32, u8, u8)]) -> Vec<Arc<PodView>> {
    let phases = [PodPhase::Pending, PodPhase::Running, PodPhase::Succeeded];
    let mut view: Vec<Arc<PodView>> = pods
        .iter()
        .map(|&(index, suffix, phase)| {
            Arc::new(PodView {
                phase: phases[phase as usize % phases.len()],
                ..PodView::running(format!("mc-{index}-{suffix}"), format!("u{suffix}"), index)
            })
        })
        .collect();
    view.sort_by(|a, b| (a.index, &a.name).cmp(&(b.index, &b.name)));
    view.dedup_by(|a, b| a.name == b.name);
    view
}

proptest::proptest! {
    /// Following a view by what changed since the last records what looking at every
    /// pod records: pods kept from `before` are shared, the others new.
    #[test]
    fn pods_since_the_last_view_records_what_a_full_look_records(
        before in proptest::collection::vec((0u32..12, 0u8..3, 0u8..3), 0..20),
        kept in proptest::collection::vec(proptest::bool::ANY, 20),
        added in proptest::collection::vec((0u32..12, 3u8..5, 0u8..3), 0..6),
    ) {
        let before = view_of(&before);
        // Some of `before`'s pods stay as they were (the very same), the rest go or
        // come back changed; new ones come.
        let mut after: Vec<Arc<PodView>> = Vec::new();
        for (pod, &keep) in before.iter().zip(kept.iter().cycle()) {
            if keep {
                after.push(Arc::clone(pod));
            } else if pod.index % 2 == 0 {
                after.push(Arc::new(PodView { ready: !pod.ready, phase: PodPhase::Failed, ..(**pod).clone() }));
            }
        }
        after.extend(view_of(&added));
        after.sort_by(|a, b| (a.index, &a.name).cmp(&(b.index, &b.name)));

        let mut full = History::new();
        let mut followed = History::new();
        full.pods(1.0, before.iter().map(Arc::as_ref));
        followed.pods(1.0, before.iter().map(Arc::as_ref));
        full.pods(2.0, after.iter().map(Arc::as_ref));
        followed.pods_since(2.0, &before, &after);
        proptest::prop_assert_eq!(changes(&full), changes(&followed));
    }
}
