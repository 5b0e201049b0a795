//! The example scenarios (`examples/scenarios/*.txt`, which the demo runs) hold: every
//! `expect` line passes with fluxk8s, so the demo cannot rot.

use std::path::{Path, PathBuf};

use fluxk8s::scenario::{Mode, Outcome, Script, play, quick_planner};

fn scenario_files() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/scenarios");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "txt"))
        .collect();
    files.sort();
    files
}

fn report(outcome: &Outcome) -> String {
    let failures: Vec<String> = outcome
        .failures()
        .map(|c| format!("line {}: {} (found {})", c.line, c.what, c.found))
        .collect();
    format!(
        "error: {:?}\nfailures: {failures:#?}\ntimeline:\n{}",
        outcome.error,
        outcome.timeline.join("\n")
    )
}

#[test]
fn every_example_scenario_holds_with_fluxk8s() {
    let files = scenario_files();
    assert!(files.len() >= 4, "{files:?}");
    let scripts: Vec<(PathBuf, Script)> = files
        .into_iter()
        .map(|path| {
            let script = Script::load(&path).unwrap_or_else(|e| panic!("{e}"));
            (path, script)
        })
        .collect();
    // Each run has its own API server and driver, so they may run side by side.
    let outcomes: Vec<Outcome> = std::thread::scope(|scope| {
        let runs: Vec<_> = scripts
            .iter()
            .map(|(_, script)| scope.spawn(|| play(script, Mode::Fluxk8s(quick_planner()), false)))
            .collect();
        runs.into_iter().map(|run| run.join().unwrap()).collect()
    });
    for ((path, _), outcome) in scripts.iter().zip(&outcomes) {
        assert!(
            !outcome.checks.is_empty(),
            "{} checks nothing",
            path.display()
        );
        assert!(outcome.passed(), "{}\n{}", path.display(), report(outcome));
    }
}

#[test]
fn by_hand_the_downsize_walkthrough_ends_one_rank_short() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/scenarios/downsize.txt");
    let script = Script::load(&path).unwrap();
    let outcome = play(&script, Mode::ByHand, false);
    assert!(outcome.error.is_none(), "{}", report(&outcome));
    assert!(
        outcome.checks.is_empty(),
        "expectations are skipped by hand"
    );
    let after_resize_to_3 = outcome
        .checkpoints
        .iter()
        .find(|c| c.asked == Some(3))
        .expect("a checkpoint after `resize 3`");
    assert_eq!(
        after_resize_to_3.live,
        "0-1".parse().unwrap(),
        "draining 2 then patching size 3 removes index 3 too\n{}",
        report(&outcome)
    );
    assert_eq!(after_resize_to_3.size, Some(3));
}

#[test]
fn a_malformed_scenario_names_its_file_and_line() {
    let dir = std::env::temp_dir().join(format!("fluxk8s-e2e-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("bad.txt");
    std::fs::write(&path, "# bad\ncluster minicluster size=4\nresize three\n").unwrap();
    let err = Script::load(&path).unwrap_err();
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(
        err.contains("bad.txt: line 3: resize: expected a number"),
        "{err}"
    );
    let missing = Script::load(&dir.join("missing.txt")).unwrap_err();
    assert!(missing.contains("cannot read"), "{missing}");
}
