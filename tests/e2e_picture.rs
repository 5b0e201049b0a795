//! The README's picture, `docs/downsize.svg`, is what the demo draws now
//! (`cargo run --example demo -- --svg docs/downsize.svg`): the Downsize walkthrough
//! with fluxk8s above the same steps by hand. The picture's time axis is ordinal, so a
//! run draws the same picture every time and any difference is a change to explain.

use fluxk8s::scenario::{Mode, Script, play, quick_planner, timeline_svg};

const COMMITTED: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/downsize.svg");

#[test]
fn the_committed_downsize_picture_is_what_the_demo_draws_now() {
    let script = Script::parse(include_str!("../examples/scenarios/downsize.txt"))
        .expect("the Downsize scenario parses");
    let with = play(&script, Mode::Fluxk8s(quick_planner()), false);
    assert!(with.passed(), "{:#?}", with.timeline);
    let by_hand = play(&script, Mode::ByHand, false);
    assert_eq!(by_hand.error, None, "{:#?}", by_hand.timeline);
    let drawn = timeline_svg(&script.title, &with.history, Some(&by_hand.history));
    let committed = std::fs::read_to_string(COMMITTED).unwrap_or_default();
    if drawn != committed {
        let fresh = std::env::temp_dir().join("fluxk8s-downsize.svg");
        std::fs::write(&fresh, &drawn).expect("the fresh picture is written");
        panic!(
            "{COMMITTED} is not what the demo draws now (drawn: {}); if the change is \
             meant, run `cargo run --example demo -- --svg docs/downsize.svg` and commit it",
            fresh.display()
        );
    }
}
