//! In-pod integration tests: the built `libfluxk8s.so` in a real flux-core broker.
//! Skipped (and say so) where no flux-core is found; see src/scenario/flux_core.rs.

use fluxk8s::scenario::flux_core::{Scratch, flux_or_skip, flux_start, transcript};

// In these `bash -e` scripts a check that something is absent is written
// `if ...; then exit 1; fi`: bash never exits on a `!`-negated command. grep without -q
// reads all its input, so `flux` cannot die of SIGPIPE and hide a match under pipefail.

/// The status RPC, through Flux's own Python bindings (as `flux k8s` does).
const STATUS: &str =
    r#"flux python -c "import flux,sys; print(flux.Flux().rpc(sys.argv[1]).get_str())""#;

#[test]
fn loads_by_path_reports_stats_and_unloads() {
    let Some(flux) = flux_or_skip("loads_by_path_reports_stats_and_unloads") else {
        return;
    };
    let script = format!(
        r#"
        flux module load $SO min-size=2
        flux module list | grep -q '^libfluxk8s '
        flux module stats libfluxk8s > stats.json
        {STATUS} libfluxk8s.status > status.json
        cat stats.json; echo; cat status.json
        flux module remove libfluxk8s
        if flux module list | grep libfluxk8s; then exit 1; fi
        flux dmesg | grep libfluxk8s
        "#
    );
    let scratch = Scratch::new("load");
    let output = flux_start(
        &flux,
        2,
        &format!("cd {}\n{script}", scratch.0.display()),
        &[],
    );
    let text = transcript(&output);
    assert!(output.status.success(), "{text}");
    let stats: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(scratch.path("stats.json")).unwrap())
            .unwrap();
    let status: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(scratch.path("status.json")).unwrap())
            .unwrap();
    assert_eq!(stats["name"], "libfluxk8s", "{text}");
    assert_eq!(stats["config"]["min-size"], 2, "{text}");
    assert_eq!(status["config"], stats["config"], "{text}");
    assert!(
        text.contains("libfluxk8s.info[0]: libfluxk8s 0.1.0 loaded on rank 0"),
        "{text}"
    );
    assert!(text.contains("libfluxk8s unloading"), "{text}");
}

#[test]
fn modprobe_loads_it_as_fluxk8s_and_rc3_removes_it() {
    let Some(flux) = flux_or_skip("modprobe_loads_it_as_fluxk8s_and_rc3_removes_it") else {
        return;
    };
    let scratch = Scratch::new("modprobe");
    let modprobe = scratch.path("modprobe");
    let shipped = env!("CARGO_MANIFEST_DIR").to_owned() + "/etc/modprobe";
    std::fs::create_dir_all(modprobe.join("modprobe.d")).unwrap();
    std::fs::create_dir_all(modprobe.join("rc1.d")).unwrap();
    let entry = std::fs::read_to_string(format!("{shipped}/modprobe.d/fluxk8s.toml")).unwrap();
    let so = fluxk8s::scenario::flux_core::module_path();
    let entry = entry.replace(
        "/usr/local/lib/flux/modules/libfluxk8s.so",
        so.to_str().unwrap(),
    );
    assert!(
        entry.contains(so.to_str().unwrap()),
        "the shipped entry names a module path"
    );
    std::fs::write(modprobe.join("modprobe.d/fluxk8s.toml"), entry).unwrap();
    std::fs::copy(
        format!("{shipped}/rc1.d/fluxk8s.py"),
        modprobe.join("rc1.d/fluxk8s.py"),
    )
    .unwrap();

    let script = format!(
        r#"
        flux module list | grep -q '^fluxk8s '
        {STATUS} fluxk8s.status
        flux module stats fluxk8s | grep -q '"name": "fluxk8s"'
        "#
    );
    let output = flux_start(
        &flux,
        2,
        &script,
        &[("FLUX_MODPROBE_PATH_APPEND", modprobe.to_str().unwrap())],
    );
    let text = transcript(&output);
    assert!(
        output.status.success(),
        "the instance exits 0 after rc3: {text}"
    );
    assert!(text.contains(r#""name":"fluxk8s""#), "{text}");
}

#[test]
fn bad_key_fails_the_load_with_the_reason_in_dmesg() {
    let Some(flux) = flux_or_skip("bad_key_fails_the_load_with_the_reason_in_dmesg") else {
        return;
    };
    let script = r#"
        if flux module load $SO colldown=5s; then echo "loaded?!"; exit 1; fi
        flux dmesg | grep "unknown key 'colldown' (module argument); accepted keys: namespace"
        if flux module load $SO min-size=zero; then exit 1; fi
        flux dmesg | grep "bad value for 'min-size' (module argument): got \"zero\""
        if flux exec -r 1 flux module load $SO; then exit 1; fi
        flux dmesg | grep 'runs on rank 0 only (this is rank 1)' || flux exec -r 1 flux dmesg | grep 'runs on rank 0 only'
        if flux module list | grep libfluxk8s; then exit 1; fi
        "#;
    let output = flux_start(&flux, 2, script, &[]);
    assert!(output.status.success(), "{}", transcript(&output));
}

#[test]
fn a_forced_panic_is_contained_and_the_broker_keeps_running() {
    let Some(flux) = flux_or_skip("a_forced_panic_is_contained_and_the_broker_keeps_running")
    else {
        return;
    };
    let script = format!(
        r#"
        flux module load $SO
        if flux python -c "import flux; flux.Flux().rpc('libfluxk8s.test-panic').get()" 2> panic.err; then exit 1; fi
        cat panic.err
        {STATUS} libfluxk8s.status | grep '"panics_contained":1'
        flux dmesg | grep 'panic in request handler contained'
        flux module remove libfluxk8s
        flux getattr size
        "#
    );
    let scratch = Scratch::new("panic");
    let script = format!("cd {}\n{script}", scratch.0.display());
    let output = flux_start(&flux, 2, &script, &[("FLUXK8S_TEST_PANIC", "1")]);
    let text = transcript(&output);
    assert!(output.status.success(), "{text}");
    assert!(
        text.contains("fluxk8s internal error (contained)"),
        "the caller got an answer: {text}"
    );
}

#[test]
fn bare_flags_load_as_flux_modules_take_them_and_bad_filters_are_named() {
    let Some(flux) =
        flux_or_skip("bare_flags_load_as_flux_modules_take_them_and_bad_filters_are_named")
    else {
        return;
    };
    let script = r#"
        flux module load --name=fluxk8s $SO dry-run log-filter=fluxk8s=debug
        flux module stats -p config.dry-run fluxk8s | grep -x true
        flux module stats -p config.log-filter fluxk8s | grep -x '"fluxk8s=debug"'
        flux module remove fluxk8s
        if flux module load $SO min-size; then echo "loaded?!"; exit 1; fi
        flux dmesg | grep "'min-size' (module argument) needs a value: min-size=<a whole number >= 1>"
        if flux module load $SO log-filter=fluxk8s=loud; then echo "loaded?!"; exit 1; fi
        flux dmesg | grep "bad value for 'log-filter' (module argument)"
        "#;
    let output = flux_start(&flux, 1, script, &[]);
    assert!(output.status.success(), "{}", transcript(&output));
}

/// The threads of the broker process by name, one a line, into `$1`.
const BROKER_THREADS: &str =
    r#"threads() { cat /proc/$(flux getattr broker.pid)/task/*/comm > "$1"; }"#;

/// `flux module remove --cancel` cancels the module's thread where its reactor waits.
/// The module is stopped as the thread exits (its Kubernetes thread is joined, so none
/// is left running code of an unloaded library), the broker carries on, and the module
/// loads and unloads again.
#[test]
fn a_cancelled_module_is_stopped_and_the_broker_carries_on() {
    let Some(flux) = flux_or_skip("a_cancelled_module_is_stopped_and_the_broker_carries_on") else {
        return;
    };
    let scratch = Scratch::new("cancel");
    // A cluster no one serves: the driver thread starts, and keeps retrying.
    std::fs::write(
        scratch.path("kubeconfig"),
        r#"
apiVersion: v1
kind: Config
clusters: [{name: none, cluster: {server: "https://127.0.0.1:9"}}]
users: [{name: none, user: {token: unused}}]
contexts: [{name: none, context: {cluster: none, user: none, namespace: default}}]
current-context: none
"#,
    )
    .unwrap();
    let script = format!(
        r#"
        cd {dir}
        {BROKER_THREADS}
        flux module load $SO job=flux-sample kubeconfig={dir}/kubeconfig
        threads loaded.txt
        flux module remove --cancel libfluxk8s
        # The broker joins the thread after it has answered the remove.
        for _ in $(seq 100); do
            threads cancelled.txt
            grep fluxk8s cancelled.txt > /dev/null || break
            sleep 0.1
        done
        if flux module list | grep libfluxk8s; then exit 1; fi
        flux module load $SO
        flux module remove libfluxk8s
        flux dmesg | grep 'libfluxk8s thread was canceled'
        flux dmesg | grep 'libfluxk8s unloading'
        "#,
        dir = scratch.0.display()
    );
    let output = flux_start(&flux, 1, &script, &[]);
    let text = transcript(&output);
    assert!(output.status.success(), "{text}");
    let threads = |file: &str| std::fs::read_to_string(scratch.path(file)).unwrap();
    let loaded = threads("loaded.txt");
    assert!(
        loaded.lines().any(|t| t == "libfluxk8s") && loaded.lines().any(|t| t == "fluxk8s-kube"),
        "the module and its Kubernetes threads run: {loaded}"
    );
    let cancelled = threads("cancelled.txt");
    assert!(
        !cancelled.contains("fluxk8s"),
        "no thread of the module is left: {cancelled}"
    );
}

/// A broker that exits with the module still loaded cancels its thread: the broker
/// exits 1, as with any module left loaded, and does not abort.
#[test]
fn a_broker_exiting_with_the_module_loaded_exits_1_without_aborting() {
    let Some(flux) =
        flux_or_skip("a_broker_exiting_with_the_module_loaded_exits_1_without_aborting")
    else {
        return;
    };
    let output = flux_start(&flux, 1, "flux module load $SO", &[]);
    let text = transcript(&output);
    assert_eq!(output.status.code(), Some(1), "{text}");
    assert!(
        text.contains("broker module 'libfluxk8s' was not properly shut down"),
        "{text}"
    );
    assert!(!text.contains("exception not rethrown"), "{text}");
}
