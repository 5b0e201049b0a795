//! Fuzzing what the Kubernetes API server sends the driver: pods, Jobs and MiniClusters
//! with any labels, annotations, counts and index lists, and 403 messages of any wording.
//! The driver reads each without panicking, and takes only what is well formed.
//!
//! `FUZZ_CASES=N` sets the cases per target (default 2,000).

mod fuzz_support;

use fluxk8s::k8s::failure::forbidden_verb_resource;
use fluxk8s::k8s::state::{COMPLETION_INDEX_KEY, job_view, minicluster_view, pod_record};
use fluxk8s::model::{IdSet, PodPhase};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::api::DynamicObject;
use proptest::prelude::*;
use serde_json::{Value, json};

use fuzz_support::{any_json, config, idset_text, number_text};

/// Text for an index label: a number, or anything.
fn index_text() -> impl Strategy<Value = String> {
    prop_oneof![3 => number_text(100_000), 1 => "\\PC{0,8}", 1 => Just("-1".to_owned())]
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn pod_index_comes_from_the_label_else_the_annotation(
        label in prop::option::of(index_text()),
        annotation in prop::option::of(index_text()),
        phase in prop::option::of(prop::sample::select(vec![
            "Pending", "Running", "Succeeded", "Failed", "Unknown", "", "running",
        ])),
        ready in prop::option::of(prop::sample::select(vec!["True", "False", "true", ""])),
        deleting in any::<bool>(),
    ) {
        let mut pod = json!({
            "metadata": {"name": "p", "uid": "u", "labels": {}, "annotations": {}},
            "status": {},
        });
        if let Some(label) = &label {
            pod["metadata"]["labels"][COMPLETION_INDEX_KEY] = json!(label);
        }
        if let Some(annotation) = &annotation {
            pod["metadata"]["annotations"][COMPLETION_INDEX_KEY] = json!(annotation);
        }
        if let Some(phase) = phase {
            pod["status"]["phase"] = json!(phase);
        }
        if let Some(ready) = ready {
            pod["status"]["conditions"] = json!([{"type": "Ready", "status": ready}]);
        }
        if deleting {
            pod["metadata"]["deletionTimestamp"] = json!("2025-01-01T00:00:00Z");
        }
        let pod: Pod = serde_json::from_value(pod).expect("a well-typed pod");
        let expected = label.or(annotation).and_then(|text| text.parse::<u32>().ok());
        let record = pod_record(&pod);
        prop_assert_eq!(record.as_ref().map(|r| r.view.index), expected);
        if let Some(record) = record {
            prop_assert_eq!(record.view.terminating, deleting);
            prop_assert_eq!(record.view.ready, ready == Some("True"));
            let known = matches!(phase, Some("Pending" | "Running" | "Succeeded" | "Failed"));
            prop_assert_eq!(record.view.phase == PodPhase::Unknown, !known);
        }
    }

    #[test]
    fn job_counts_and_index_lists_are_read_or_ignored(
        parallelism in prop::option::of(any::<i32>()),
        completions in prop::option::of(any::<i32>()),
        per_index in prop::option::of(any::<i32>()),
        completed in prop::option::of(idset_text(10_000)),
        failed in prop::option::of(idset_text(10_000)),
        counts in prop::collection::vec(prop::option::of(any::<i32>()), 3),
    ) {
        let job = json!({
            "metadata": {"name": "j", "uid": "u"},
            "spec": {
                "parallelism": parallelism,
                "completions": completions,
                "backoffLimitPerIndex": per_index,
                "template": {},
            },
            "status": {
                "completedIndexes": completed,
                "failedIndexes": failed,
                "active": counts[0],
                "succeeded": counts[1],
                "failed": counts[2],
            },
        });
        let job: Job = serde_json::from_value(job).expect("a well-typed Job");
        let view = job_view(&job);
        let indexes = |text: &Option<String>| {
            text.as_deref().and_then(|t| t.parse::<IdSet>().ok()).unwrap_or_default()
        };
        prop_assert_eq!(view.completed_indexes, indexes(&completed));
        prop_assert_eq!(view.failed_indexes, indexes(&failed));
        if let Some(p) = parallelism.and_then(|p| u32::try_from(p).ok()) {
            prop_assert_eq!(view.parallelism, p);
        }
    }

    #[test]
    fn minicluster_sizes_are_read_from_any_spec(spec in any_json(), status in any_json()) {
        let mc: DynamicObject = serde_json::from_value(json!({
            "apiVersion": "flux-framework.org/v1alpha2",
            "kind": "MiniCluster",
            "metadata": {"name": "mc", "uid": "u"},
            "spec": spec,
            "status": status,
        }))
        .expect("any data is a DynamicObject");
        let view = minicluster_view(&mc);
        let read = |pointer: &str| {
            mc.data.pointer(pointer).and_then(Value::as_u64).and_then(|v| u32::try_from(v).ok())
        };
        prop_assert_eq!(view.size, read("/spec/size").unwrap_or(0));
        prop_assert!(view.max_size > 0 || view.size == 0);
    }

    #[test]
    fn forbidden_messages_of_any_wording_are_read_or_ignored(message in "\\PC{0,80}") {
        if let Some((verb, resource)) = forbidden_verb_resource(&message) {
            prop_assert!(!verb.is_empty() && !resource.is_empty());
            let quoted = format!("resource \"{resource}\"");
            prop_assert!(message.contains(&verb) && message.contains(&quoted));
        }
    }

    #[test]
    fn forbidden_messages_name_their_verb_and_resource(
        verb in "[a-z]{1,12}",
        resource in "[a-z]{1,12}(/[a-z]{1,8})?",
        user in "[a-z:.-]{0,30}",
    ) {
        let message = format!(
            "pods \"x\" is forbidden: User \"{user}\" cannot {verb} resource \"{resource}\" in API group \"\" in the namespace \"ns\""
        );
        prop_assert_eq!(forbidden_verb_resource(&message), Some((verb, resource)));
    }
}
