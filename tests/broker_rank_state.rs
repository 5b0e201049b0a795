//! Rank state in a real flux-core instance whose brokers are started and killed like
//! pods (tests/common/cluster.rs): what `fluxk8s.status` shows after drains, crashes,
//! restarts, late joins and a reload of the resource module. No Kubernetes: the module
//! runs its Flux side alone. Skipped without flux-core.

mod common;

use common::cluster::{Cluster, hostname};
use fluxk8s::scenario::flux_core::flux_or_skip;
use serde_json::Value;

/// The field `key` of the status's `flux` section.
fn flux_field<'a>(status: &'a Value, key: &str) -> &'a str {
    status["flux"][key].as_str().unwrap_or_default()
}

/// A leader and `followers` started, the module loaded and its Flux view synced with
/// all of them online.
fn cluster_with_module(tag: &str, max_size: u32, followers: u32) -> Option<Cluster> {
    let flux = flux_or_skip(tag)?;
    let cluster = Cluster::new(&flux, tag, "flux-sample", max_size, "");
    for rank in 0..=followers {
        cluster.start(rank);
    }
    cluster.load_module(&[]);
    let online = if followers == 0 {
        "0".to_owned()
    } else {
        format!("0-{followers}")
    };
    cluster.wait_for_status("all started brokers online", |s| {
        s["flux"]["synced"] == true && flux_field(s, "online") == online
    });
    Some(cluster)
}

#[test]
fn drain_and_undrain_show_in_status() {
    let Some(cluster) = cluster_with_module("drain", 4, 2) else {
        return;
    };
    let status = cluster.status();
    assert_eq!(status["max_size"], 4, "size is every configured host");
    assert_eq!(flux_field(&status, "never_started"), "3");
    let problems = status["problems"].to_string();
    assert!(
        problems.contains("kubernetes unavailable") && problems.contains("no-such-kubeconfig"),
        "the module must not find a kubeconfig: {problems}"
    );
    assert_eq!(status["kubernetes"]["connected"], false);

    cluster.flux_ok(&["resource", "drain", "2", "maintenance"]);
    let status = cluster.wait_for_status("rank 2 drained", |s| flux_field(s, "drained") == "2");
    assert_eq!(
        flux_field(&status, "drained_by_fluxk8s"),
        "",
        "an operator's drain is not the module's"
    );
    assert_eq!(status["real_size"], 2, "a drained rank does not count");

    cluster.flux_ok(&["resource", "undrain", "2"]);
    let status =
        cluster.wait_for_status("rank 2 undrained", |s| flux_field(s, "drained").is_empty());
    assert_eq!(status["real_size"], 3);
    assert!(
        !status["problems"].to_string().contains("overlay.monitor"),
        "stream reports were all understood: {}",
        status["problems"]
    );
}

#[test]
fn a_killed_broker_is_lost_until_restarted_and_a_never_up_rank_joins() {
    let Some(cluster) = cluster_with_module("crash", 4, 2) else {
        return;
    };
    cluster.kill(2);
    // The overlay (lost) and the journal (offline) report the crash separately.
    let status = cluster.wait_for_status("rank 2 lost and offline", |s| {
        flux_field(s, "lost") == "2" && flux_field(s, "online") == "0-1"
    });
    assert_eq!(flux_field(&status, "offline"), "2-3");
    assert_eq!(
        flux_field(&status, "never_started"),
        "3",
        "rank 2 was up once"
    );

    cluster.start(2);
    let status = cluster.wait_for_status("rank 2 back", |s| flux_field(s, "online") == "0-2");
    assert_eq!(
        flux_field(&status, "lost"),
        "",
        "back online is no longer lost"
    );

    cluster.start(3);
    let status = cluster.wait_for_status("rank 3 joined", |s| flux_field(s, "online") == "0-3");
    assert_eq!(flux_field(&status, "never_started"), "");
    assert_eq!(status["real_size"], 4);
    assert_eq!(cluster.hostname(3), hostname("flux-sample", 3));
}

#[test]
fn a_resource_reload_ends_the_journal_and_the_module_resubscribes_with_state_intact() {
    let Some(cluster) = cluster_with_module("reload", 4, 2) else {
        return;
    };
    cluster.flux_ok(&["resource", "drain", "1", "keep this"]);
    cluster.kill(2);
    cluster.wait_for_status("drain and loss seen", |s| {
        flux_field(s, "drained") == "1"
            && flux_field(s, "lost") == "2"
            && flux_field(s, "online") == "0-1"
    });
    let replies_before = cluster.status()["flux"]["journal"]["replies"].clone();

    cluster.flux_ok(&["module", "reload", "resource"]);
    let status = cluster.wait_for_status("the journal resubscribed and synced", |s| {
        s["flux"]["journal"]["resubscribes"].as_u64() > Some(0)
            && s["flux"]["journal"]["open"] == true
            && s["flux"]["synced"] == true
    });
    assert_ne!(status["flux"]["journal"]["replies"], replies_before);
    assert_eq!(
        flux_field(&status, "drained"),
        "1",
        "the drain is still known"
    );
    assert_eq!(flux_field(&status, "online"), "0-1");
    assert_eq!(
        flux_field(&status, "lost"),
        "2",
        "the overlay's loss survives"
    );
    assert_eq!(flux_field(&status, "never_started"), "3");
    let logs = String::from_utf8(cluster.flux_ok(&["dmesg"]).stdout).unwrap();
    assert!(
        logs.contains("fluxk8s.info[0]: resource.journal ended"),
        "the end of the stream is logged"
    );

    // Still following live events after the resubscription.
    cluster.flux_ok(&["resource", "undrain", "1"]);
    cluster.wait_for_status("undrain after the reload", |s| {
        flux_field(s, "drained").is_empty()
    });
}
