//! Autoscaling's queue observation in a real flux-core instance: ten configured ranks,
//! two online, `flux submit -N4`. Without Kubernetes the module cannot act, but its
//! status must show the pending job, its node count, and the growth it would ask for.
//! Skipped (and says so) where no flux-core is found; see src/scenario/flux_core.rs.

use fluxk8s::scenario::flux_core::{Scratch, flux_or_skip, leader_only_start, transcript};
use serde_json::Value;

const STATUS: &str =
    r#"flux python -c "import flux,sys; print(flux.Flux().rpc(sys.argv[1]).get_str())""#;

#[test]
fn a_pending_four_node_job_on_two_live_ranks_of_ten_shows_in_the_status() {
    let Some(flux) =
        flux_or_skip("a_pending_four_node_job_on_two_live_ranks_of_ten_shows_in_the_status")
    else {
        return;
    };
    let scratch = Scratch::new("autoscale-broker");
    let dir = scratch.0.display().to_string();
    // Only rank 0 starts; the script starts rank 1 through the test launcher, submits a
    // job needing four nodes, and reads the status twice, two quiet seconds apart.
    let script = format!(
        r#"
        cd {dir}
        flux module load $SO autoscale=true min-size=2
        flux python -c "import flux,os; flux.Flux(os.environ['FLUX_START_URI']).rpc('start.run',{{'rank':1}}).get()"
        for i in $(seq 100); do [ "$(flux resource status -s online -no {{nnodes}})" = 2 ] && break; sleep 0.1; done
        flux submit -N4 hostname > jobid
        for i in $(seq 100); do {STATUS} libfluxk8s.status > status.json; grep -q '"demand":4' status.json && break; sleep 0.1; done
        sleep 2
        {STATUS} libfluxk8s.status > later.json
        flux jobs -no '{{id.f58}} {{state}}' > jobs.txt
        flux cancel $(cat jobid)
        flux module remove libfluxk8s
        "#
    );
    let output = leader_only_start(&flux, &scratch, 10, 120, &script)
        .output()
        .expect("run flux start");
    let text = transcript(&output);
    assert!(output.status.success(), "{text}");

    let read = |name: &str| -> Value {
        serde_json::from_str(&std::fs::read_to_string(scratch.path(name)).unwrap()).unwrap()
    };
    let status = read("status.json");
    let auto = &status["autoscale"];
    let jobs = std::fs::read_to_string(scratch.path("jobs.txt")).unwrap();
    let job_id = std::fs::read_to_string(scratch.path("jobid")).unwrap();
    let job_id = job_id.trim();
    assert_eq!(
        jobs.trim(),
        format!("{job_id} SCHED"),
        "still pending: {text}"
    );
    assert_eq!(auto["enabled"], true, "{status:#}");
    assert_eq!(auto["queue_synced"], true, "{status:#}");
    assert_eq!(auto["pending"][0]["id"], job_id, "{status:#}");
    assert_eq!(auto["pending"][0]["nodes"], 4, "{status:#}");
    assert_eq!(auto["free"], "0-1", "{status:#}");
    let decision = auto["decision"].as_str().unwrap();
    assert_eq!(
        decision,
        format!(
            "Kubernetes view not synced; would: autoscale: grow to 4 for {job_id} (4 nodes): \
             4 node(s) pending, 2 free"
        ),
        "{status:#}"
    );
    // Event-driven: two quiet seconds bring no job event and no planning pass.
    let later = read("later.json");
    assert_eq!(
        later["engine"]["plans"], status["engine"]["plans"],
        "{later:#}"
    );
    assert_eq!(
        later["engine"]["job_events"],
        status["engine"]["job_events"]
    );
    assert_eq!(later["autoscale"]["stream"]["open"], true);
}
