//! Carrying out [`KubeAction`]s: pod deletes with a uid precondition, size patches on the
//! right object, and a Kubernetes Event for each.

use std::cell::Cell;
use std::collections::{BTreeSet, VecDeque};

use futures::future::{FutureExt, LocalBoxFuture, TryFutureExt};
use futures::stream::{FuturesUnordered, StreamExt};
use k8s_openapi::api::core::v1::{Event as CoreEvent, EventSource, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::ResourceExt;
use kube::api::{DeleteParams, EvictParams, Patch, PatchParams, PostParams, Preconditions};
use serde_json::json;
use tracing::{debug, info, warn};

use super::failure::{Failure, Request};
use super::state::{ClusterState, PodRecord};
use super::target::{MINICLUSTER_GROUP, MINICLUSTER_KIND, MINICLUSTER_VERSION, Target};
use super::worker::Ctx;
use crate::model::{DESIRED_SIZE_ANNOTATION, KubeAction, MiniClusterView, Outcome, Refusal, Retry};

/// Name under which fluxk8s records Events and patches objects.
pub const COMPONENT: &str = crate::model::FIELD_MANAGER;

/// Event reason for a pod removed so its rank retires.
pub const REASON_RETIRED: &str = "RetiredRank";
/// Event reason for a size change.
pub const REASON_RESIZED: &str = "Resized";

const GET_POD: Request = Request {
    verb: "get",
    resource: "pods",
};
const DELETE_POD: Request = Request {
    verb: "delete",
    resource: "pods",
};
const EVICT_POD: Request = Request {
    verb: "create",
    resource: "pods/eviction",
};
const PATCH_MINICLUSTER: Request = Request {
    verb: "patch",
    resource: "miniclusters",
};
const PATCH_JOB: Request = Request {
    verb: "patch",
    resource: "jobs",
};

/// Runs on the worker's current-thread runtime, so it need not be `Send`.
type Running = LocalBoxFuture<'static, (u64, Outcome)>;

/// Commands in hand: waiting to start, or running.
pub struct Actions {
    /// Not started yet: nothing starts before the first sync, and a resize waits for the
    /// one before it so sizes land in the order they were asked for.
    waiting: VecDeque<(u64, KubeAction)>,
    running: FuturesUnordered<Running>,
    running_ids: BTreeSet<u64>,
    resize_running: Option<u64>,
}

impl Actions {
    pub fn new() -> Self {
        Self {
            waiting: VecDeque::new(),
            running: FuturesUnordered::new(),
            running_ids: BTreeSet::new(),
            resize_running: None,
        }
    }

    /// Takes a command; it starts at the next [`Actions::start_ready`].
    pub fn submit(&mut self, id: u64, action: KubeAction) {
        debug!("command {id}: {action:?}");
        self.waiting.push_back((id, action));
    }

    /// Starts what may start, against what the watches show now.
    pub fn start_ready(&mut self, ctx: &Ctx, target: &Target, state: &ClusterState) {
        if !state.synced() {
            return;
        }
        let mut held = VecDeque::new();
        while let Some((id, action)) = self.waiting.pop_front() {
            let is_resize = matches!(action, KubeAction::SetSize { .. });
            if is_resize && self.resize_running.is_some() {
                held.push_back((id, action));
                continue;
            }
            if is_resize {
                self.resize_running = Some(id);
            }
            self.running_ids.insert(id);
            let scene = Scene::new(target, state, &action);
            self.running.push(start(ctx.clone(), scene, id, action));
        }
        self.waiting = held;
    }

    /// The next command to finish; `None` at once when nothing is running.
    pub async fn next_finished(&mut self) -> Option<(u64, Outcome)> {
        let (id, outcome) = self.running.next().await?;
        self.running_ids.remove(&id);
        if self.resize_running == Some(id) {
            self.resize_running = None;
        }
        Some((id, outcome))
    }

    /// Answers every command still in hand as abandoned (at shutdown).
    pub fn abandon_all(&mut self, reporter: &super::worker::Reporter) {
        let ids = self
            .waiting
            .drain(..)
            .map(|(id, _)| id)
            .chain(std::mem::take(&mut self.running_ids));
        for id in ids {
            reporter.send(super::Report::Finished {
                id,
                outcome: Retry::Abandoned("the driver shut down first".to_owned()).into(),
            });
        }
        self.running = FuturesUnordered::new();
        self.resize_running = None;
    }
}

/// What an action needs to know of the cluster when it starts.
#[derive(Debug, Clone)]
struct Scene {
    job: String,
    /// uid of the Job now; `None` while the Job does not exist.
    job_uid: Option<String>,
    /// The Job's completions now (its size when no MiniCluster manages it).
    job_completions: u32,
    /// Whether an operator's MiniCluster owns the Job (sizes then go there).
    has_minicluster: bool,
    minicluster: Option<MiniClusterView>,
    namespace: String,
    /// For a pod delete: the pod of that name as the watch shows it, if any.
    pod: Option<PodRecord>,
}

impl Scene {
    fn new(target: &Target, state: &ClusterState, action: &KubeAction) -> Self {
        let pod = match action {
            KubeAction::DeletePod { pod, .. } => state.pod(pod).cloned(),
            KubeAction::SetSize { .. }
            | KubeAction::RecordEvent { .. }
            | KubeAction::RecordDesiredSize { .. } => None,
        };
        Self {
            job: target.job.clone(),
            job_uid: state.job().map(|j| j.uid.clone()),
            job_completions: state.job().map_or(0, |j| j.completions),
            has_minicluster: target.minicluster.is_some(),
            minicluster: state.minicluster().cloned(),
            namespace: target.namespace.clone(),
            pod,
        }
    }

    /// The object Events are recorded on: the MiniCluster if there is one, else the Job.
    fn event_object(&self) -> ObjectReference {
        match &self.minicluster {
            Some(mc) => ObjectReference {
                api_version: Some(format!("{MINICLUSTER_GROUP}/{MINICLUSTER_VERSION}")),
                kind: Some(MINICLUSTER_KIND.to_owned()),
                name: Some(mc.name.clone()),
                namespace: Some(self.namespace.clone()),
                uid: Some(mc.uid.clone()),
                ..ObjectReference::default()
            },
            None => ObjectReference {
                api_version: Some("batch/v1".to_owned()),
                kind: Some("Job".to_owned()),
                name: Some(self.job.clone()),
                namespace: Some(self.namespace.clone()),
                uid: self.job_uid.clone(),
                ..ObjectReference::default()
            },
        }
    }
}

fn start(ctx: Ctx, scene: Scene, id: u64, action: KubeAction) -> Running {
    async move {
        let area = format!("command {id}");
        let outcome = match action {
            KubeAction::DeletePod {
                index,
                pod,
                uid,
                reason,
            } => delete_pod(&ctx, &scene, &area, index, &pod, &uid, &reason).await,
            KubeAction::SetSize {
                size,
                reason,
                desired,
            } => set_size(&ctx, &scene, &area, size, &reason, desired).await,
            KubeAction::RecordEvent {
                reason,
                message,
                warning,
            } => {
                record_event(&ctx, &scene, &reason, message, warning).await;
                Outcome::Done
            }
            KubeAction::RecordDesiredSize { size } => {
                record_desired_size(&ctx, &scene, &area, size).await
            }
        };
        (id, outcome)
    }
    .boxed_local()
}

/// Why a pod may not be deleted, judged on the watched object; `None` when it may.
fn refusal(pod: &PodRecord, index: u32, scene: &Scene) -> Option<String> {
    let name = &pod.view.name;
    let Some(job_uid) = scene.job_uid.as_deref() else {
        return Some(format!("Job {:?} does not exist", scene.job));
    };
    if pod.controller_uid.as_deref() != Some(job_uid) {
        return Some(format!(
            "pod {name} is not controlled by Job {:?}",
            scene.job
        ));
    }
    match pod.view.index {
        0 => Some(format!(
            "pod {name} is index 0 (rank 0); it is never removed"
        )),
        actual if actual != index => Some(format!("pod {name} has index {actual}, not {index}")),
        _ => None,
    }
}

async fn delete_pod(
    ctx: &Ctx,
    scene: &Scene,
    area: &str,
    index: u32,
    name: &str,
    uid: &str,
    reason: &str,
) -> Outcome {
    if index == 0 {
        return invalid("index 0 runs rank 0; it is never removed".to_owned());
    }
    // Judged on the watch (no GET per delete): the pod the planner chose must be the one
    // the watch shows by that name, controlled by our Job, at that index.
    let watched = match &scene.pod {
        Some(pod) if pod.view.uid == uid => pod,
        other => {
            return replaced(other.as_ref().map(|pod| pod.view.uid.clone()));
        }
    };
    if let Some(why) = refusal(watched, index, scene) {
        return invalid(why);
    }
    let pods = ctx.pods();
    // The uid precondition makes the API server refuse (409) if the name now belongs to
    // another pod than the one the planner chose, one the watch has not shown yet
    // (docs/kubernetes.md 3.1).
    let params = DeleteParams {
        preconditions: Some(Preconditions {
            uid: Some(uid.to_owned()),
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    let sent = Cell::new(0u32);
    let answered = Cell::new(0u32);
    // An eviction is a delete the API server may refuse for a PodDisruptionBudget (429,
    // retried like any throttling) and that marks the pod with DisruptionTarget first.
    let (how, evict) = if ctx.evict {
        let evict = EvictParams {
            delete_options: Some(params.clone()),
            post_options: PostParams::default(),
        };
        (EVICT_POD, Some(evict))
    } else {
        (DELETE_POD, None)
    };
    let deleted = ctx
        .retrying(area, how, || {
            sent.set(sent.get() + 1);
            let request = match &evict {
                Some(evict) => pods.evict(name, evict).map_ok(drop).boxed_local(),
                None => pods.delete(name, &params).map_ok(drop).boxed_local(),
            };
            async {
                let result = request.await;
                if matches!(result, Ok(_) | Err(kube::Error::Api(_))) {
                    answered.set(answered.get() + 1);
                }
                result
            }
        })
        .await;
    match deleted {
        Ok(_) => {}
        // An earlier attempt got no answer, so it may have landed: "gone" is our delete.
        Err(failure) if failure.is_not_found() && sent.get() > answered.get() => {}
        Err(failure) if failure.is_not_found() => return replaced(None),
        Err(Failure::Retryable(Retry::Conflict(why))) => {
            debug!("{area}: delete of {name} refused ({why}); re-reading");
            let current_uid = match ctx.retrying(area, GET_POD, || pods.get_opt(name)).await {
                Ok(pod) => pod.and_then(|p| p.uid()),
                Err(failure) => {
                    warn!("{area}: re-reading {name} failed: {}", failure.describe());
                    None
                }
            };
            if current_uid.as_deref() == Some(uid) {
                // Same pod, so the conflict was about something else: worth another try.
                return Retry::Conflict(why).into();
            }
            return replaced(current_uid);
        }
        Err(failure) => return failure.into(),
    }
    let removed = if ctx.evict { "evicted" } else { "deleted" };
    info!("{area}: {removed} pod {name} (rank {index}): {reason}");
    record_event(
        ctx,
        scene,
        REASON_RETIRED,
        format!("rank {index} (pod {name}) removed: {reason}"),
        false,
    )
    .await;
    Outcome::Done
}

async fn set_size(
    ctx: &Ctx,
    scene: &Scene,
    area: &str,
    size: u32,
    reason: &str,
    desired: Option<u32>,
) -> Outcome {
    if size == 0 {
        return invalid("size 0 would remove index 0 (rank 0)".to_owned());
    }
    let (spec, old) = match &scene.minicluster {
        Some(mc) if size > mc.max_size => {
            return invalid(format!(
                "size {size} is above the MiniCluster's maxSize {}",
                mc.max_size
            ));
        }
        Some(mc) => (json!({"spec": {"size": size}}), mc.size),
        // An Indexed Job scales only with parallelism and completions moving together.
        None => (
            json!({"spec": {"parallelism": size, "completions": size}}),
            scene.job_completions,
        ),
    };
    let (patched, object) =
        match patch_sized_object(ctx, scene, area, with_desired(spec, desired)).await {
            Ok(done) => done,
            Err(outcome) => return outcome,
        };
    match patched {
        Ok(()) => {
            info!("{area}: {object} size {old} -> {size}: {reason}");
            record_event(
                ctx,
                scene,
                REASON_RESIZED,
                format!("size {old} -> {size}: {reason}"),
                false,
            )
            .await;
            Outcome::Done
        }
        Err(failure) => patch_failed(failure, object),
    }
}

/// `patch` with the desired-size annotation added, if there is one to record.
fn with_desired(mut patch: serde_json::Value, desired: Option<u32>) -> serde_json::Value {
    if let Some(desired) = desired {
        patch["metadata"] = json!({"annotations": {DESIRED_SIZE_ANNOTATION: desired.to_string()}});
    }
    patch
}

/// Writes the desired-size annotation on the MiniCluster (else the Job), as fluxk8s's
/// field manager so that a reader can tell it from a user's request.
async fn record_desired_size(ctx: &Ctx, scene: &Scene, area: &str, size: u32) -> Outcome {
    let patch = with_desired(json!({}), Some(size));
    match patch_sized_object(ctx, scene, area, patch).await {
        Ok((Ok(()), object)) => {
            // The module logged the decision as it issued it; its bookkeeping landing is
            // a detail, not a second line for the administrator.
            debug!("{area}: {object} annotated {DESIRED_SIZE_ANNOTATION}={size}");
            Outcome::Done
        }
        Ok((Err(failure), object)) => patch_failed(failure, object),
        Err(outcome) => outcome,
    }
}

/// A failed patch of `object`; a 404 names the object.
fn patch_failed(failure: Failure, object: String) -> Outcome {
    if failure.is_not_found() {
        return Refusal::NotFound(object).into();
    }
    failure.into()
}

fn invalid(why: String) -> Outcome {
    Refusal::Invalid(why).into()
}

fn replaced(current_uid: Option<String>) -> Outcome {
    Refusal::Replaced { current_uid }.into()
}

/// Merge-patches the object that holds the size (the MiniCluster, else the Job) as
/// fluxk8s's field manager; CRDs take only JSON merge patches. Gives the result and the
/// object's name, or why there is nothing to patch.
async fn patch_sized_object(
    ctx: &Ctx,
    scene: &Scene,
    area: &str,
    patch: serde_json::Value,
) -> Result<(Result<(), Failure>, String), Outcome> {
    let params = PatchParams {
        field_manager: Some(COMPONENT.to_owned()),
        ..PatchParams::default()
    };
    let patch = Patch::Merge(patch);
    if scene.has_minicluster {
        let Some(mc) = &scene.minicluster else {
            return Err(Refusal::NotFound(format!("MiniCluster of Job {:?}", scene.job)).into());
        };
        let api = ctx.miniclusters();
        let result = ctx
            .retrying(area, PATCH_MINICLUSTER, || {
                api.patch(&mc.name, &params, &patch)
            })
            .await
            .map(drop);
        Ok((result, format!("MiniCluster {}", mc.name)))
    } else {
        if scene.job_uid.is_none() {
            return Err(Refusal::NotFound(format!("Job {:?}", scene.job)).into());
        }
        let api = ctx.jobs();
        let result = ctx
            .retrying(area, PATCH_JOB, || api.patch(&scene.job, &params, &patch))
            .await
            .map(drop);
        Ok((result, format!("Job {}", scene.job)))
    }
}

/// Records a core/v1 Event on the MiniCluster (else the Job). Best effort: a failure is
/// logged and otherwise ignored, since the action itself is done.
async fn record_event(ctx: &Ctx, scene: &Scene, reason: &str, message: String, warning: bool) {
    let involved = scene.event_object();
    let now = k8s_openapi::jiff::Timestamp::now();
    let object_name = involved.name.clone().unwrap_or_default();
    let event = CoreEvent {
        metadata: ObjectMeta {
            // client-go's naming: the object's name and a nanosecond timestamp.
            name: Some(format!("{object_name}.{:x}", now.as_nanosecond())),
            namespace: Some(ctx.namespace.clone()),
            ..ObjectMeta::default()
        },
        involved_object: involved,
        reason: Some(reason.to_owned()),
        message: Some(message),
        type_: Some(if warning { "Warning" } else { "Normal" }.to_owned()),
        source: Some(EventSource {
            component: Some(COMPONENT.to_owned()),
            host: None,
        }),
        reporting_component: Some(COMPONENT.to_owned()),
        reporting_instance: ctx.instance.clone(),
        first_timestamp: Some(Time(now)),
        last_timestamp: Some(Time(now)),
        count: Some(1),
        ..CoreEvent::default()
    };
    let events = ctx.events();
    let sent = tokio::time::timeout(
        ctx.tuning.request_timeout,
        events.create(&PostParams::default(), &event),
    )
    .await;
    let request = Request {
        verb: "create",
        resource: "events",
    };
    match sent {
        Ok(Ok(_)) => debug!("recorded Event {reason} on {object_name}"),
        Ok(Err(err)) => warn!(
            "could not record Event {reason} on {object_name}: {}",
            Failure::classify(&err, request).describe()
        ),
        Err(_) => warn!("could not record Event {reason} on {object_name}: no answer"),
    }
}
