//! A simulated Kubernetes API server for tests and the demo: real Kubernetes JSON over
//! HTTP/1.1 on loopback, so the real kube client runs end to end against it.
//!
//! It serves pods, Indexed Jobs, Flux Operator MiniClusters (with the scale subresource)
//! and events, with one global resourceVersion, watches that resume from a version (410
//! once it is compacted), and `Status` errors. Inside run the controllers that matter for
//! fluxk8s, following docs/kubernetes.md: the Flux Operator's size reconcile, the
//! Indexed Job controller, and a kubelet that runs pods and stops deleted ones. Faults
//! (5xx, 403, 409, latency, held requests, dropped watches) can be injected, and every
//! request is logged.
//!
//! Layout: `state` (the state machine: store + controllers, no HTTP), `store` (objects,
//! versions, watches), `api` (the API operations), `job_controller` (with `job_pods`, its
//! index of what it reads of each pod), `operator`, `kubelet`, `faults`, `http` (routing
//! and watch streaming), `requests` (the log), `pod_views` (what [`SimCluster::pod_views`]
//! returns, kept per pod change).
//!
//! Not simulated (requests for these get a clear 4xx, or the rule is simply absent):
//! server-side apply, strategic merge patches containing lists, the `/status` endpoints,
//! `dryRun`, deletecollection, list pagination (every list is one page), PodDisruption-
//! Budgets (eviction is never 429), `podFailurePolicy` rules, non-Indexed Jobs (stored, not
//! run), in-place container restarts under `restartPolicy: OnFailure` (a non-zero exit
//! fails the pod), and the Job controller's own Events. Watch bookmarks are sent only when
//! a watch times out. Note that kube's default client retries 429/503/504 by itself.

mod api;
#[cfg(test)]
mod controller_tests;
mod faults;
pub mod flux;
mod http;
mod job_controller;
mod job_pods;
pub mod jobs;
mod kinds;
mod kubelet;
mod managed;
mod operator;
mod patch;
mod pod_views;
mod requests;
mod select;
mod state;
mod status;
mod store;

use std::io;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard, mpsc as std_mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::sync::{Notify, oneshot};

pub use faults::{Faults, RequestTarget, Verb};
pub use job_controller::{COMPLETION_INDEX, INDEX_FAILURE_COUNT, JOB_NAME_LABEL};
pub use kinds::Kind;
pub use requests::{RequestLog, RequestRecord};
pub use state::{PodEvent, PodEventKind, SimOptions};
pub use status::ApiError;

use crate::model::PodView;
use faults::FaultRules;
use state::SimState;
use store::ObjectKey;

/// What the server thread and the [`SimCluster`] handle share.
pub(crate) struct Shared {
    state: Mutex<SimState>,
    rules: Mutex<FaultRules>,
    log: Mutex<Vec<RequestRecord>>,
    /// Wakes the kubelet timer task after a change that may have scheduled work.
    wakeup: Notify,
    /// Wakes the requests held by a fault rule when a hold ends.
    released: Notify,
    /// `host:port` the server listens on.
    address: String,
    /// The user 403 messages name.
    user: String,
}

/// Locks a mutex, recovering it if a panicking thread poisoned it: the sim keeps serving
/// so a test sees the original failure rather than a cascade.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, SimState> {
        lock(&self.state)
    }

    /// Runs a change on the state, then wakes the kubelet for any work it scheduled.
    fn with_state<R>(&self, change: impl FnOnce(&mut SimState) -> R) -> R {
        let result = change(&mut self.state());
        self.wakeup.notify_one();
        result
    }

    fn faults(&self) -> MutexGuard<'_, FaultRules> {
        lock(&self.rules)
    }

    fn record(&self, record: RequestRecord) {
        lock(&self.log).push(record);
    }
}

/// A MiniCluster to create (the fields the operator's scaling reads).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MiniClusterSpec {
    pub name: String,
    pub size: u32,
    /// `spec.maxSize`; 0 means "same as size", as the CRD defaults it.
    pub max_size: u32,
    /// `spec.flux.completeWorkers`.
    pub complete_workers: bool,
    /// `spec.backoffLimit`; `None` lets the operator use 100.
    pub backoff_limit: Option<u32>,
}

impl MiniClusterSpec {
    pub fn new(name: &str, size: u32, max_size: u32) -> Self {
        Self {
            name: name.to_owned(),
            size,
            max_size,
            complete_workers: true,
            backoff_limit: None,
        }
    }
}

/// A bare Indexed Job to create (no operator), with `completions = parallelism` and
/// `restartPolicy: Never`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexedJobSpec {
    pub name: String,
    pub completions: u32,
    /// `None` keeps the API default (6).
    pub backoff_limit: Option<u32>,
    pub backoff_limit_per_index: Option<u32>,
}

impl IndexedJobSpec {
    pub fn new(name: &str, completions: u32) -> Self {
        Self {
            name: name.to_owned(),
            completions,
            backoff_limit: None,
            backoff_limit_per_index: None,
        }
    }
}

/// A running simulated cluster: an HTTP server on `127.0.0.1` with its own thread and
/// tokio runtime. Dropping it stops the server and joins the thread.
pub struct SimCluster {
    shared: Arc<Shared>,
    faults: Faults,
    url: String,
    shutdown: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl SimCluster {
    /// Starts the server on an ephemeral loopback port.
    pub fn start(options: SimOptions) -> io::Result<SimCluster> {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let address = listener.local_addr()?.to_string();
        let shared = Arc::new(Shared {
            user: options.user.clone(),
            state: Mutex::new(SimState::new(options)),
            rules: Mutex::new(FaultRules::default()),
            log: Mutex::new(Vec::new()),
            wakeup: Notify::new(),
            released: Notify::new(),
            address: address.clone(),
        });
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let (shutdown, shutdown_signal) = oneshot::channel();
        let server_shared = shared.clone();
        let thread = std::thread::Builder::new()
            .name("fluxk8s-sim".into())
            .spawn(move || runtime.block_on(serve(server_shared, listener, shutdown_signal)))?;
        Ok(SimCluster {
            faults: Faults {
                shared: shared.clone(),
            },
            shared,
            url: format!("http://{address}"),
            shutdown: Some(shutdown),
            thread: Some(thread),
        })
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        self.url.clone()
    }

    /// A kube client configuration for this server, defaulting to `namespace`.
    pub fn kube_config(&self, namespace: &str) -> kube::Config {
        let uri = self
            .url
            .parse()
            .expect("a loopback http URL is a valid URI");
        let mut config = kube::Config::new(uri);
        config.default_namespace = namespace.to_owned();
        config
    }

    /// Writes a kubeconfig file whose current context points at this server (plain http,
    /// a static token the sim ignores), so kubeconfig loading is exercised for real.
    pub fn write_kubeconfig(&self, path: &Path, namespace: &str) -> io::Result<()> {
        let yaml = format!(
            "apiVersion: v1\n\
             kind: Config\n\
             clusters:\n\
             - name: fluxk8s-sim\n  cluster:\n    server: {url}\n\
             users:\n\
             - name: flux-k8s\n  user:\n    token: fluxk8s-sim-token\n\
             contexts:\n\
             - name: fluxk8s-sim\n  context:\n    cluster: fluxk8s-sim\n    user: flux-k8s\n    namespace: {namespace}\n\
             current-context: fluxk8s-sim\n\
             preferences: {{}}\n",
            url = self.url,
        );
        std::fs::write(path, yaml)
    }

    /// Creates a MiniCluster (as `kubectl apply` would); the operator creates its Job.
    pub fn create_minicluster(
        &self,
        namespace: &str,
        spec: &MiniClusterSpec,
    ) -> Result<Value, ApiError> {
        let mut body = json!({
            "apiVersion": Kind::MiniCluster.api_version(),
            "kind": "MiniCluster",
            "metadata": {"name": spec.name, "namespace": namespace},
            "spec": {
                "size": spec.size,
                "maxSize": spec.max_size,
                "flux": {"completeWorkers": spec.complete_workers},
            },
        });
        if let Some(limit) = spec.backoff_limit {
            body["spec"]["backoffLimit"] = json!(limit);
        }
        self.create(Kind::MiniCluster, namespace, body)
    }

    /// Creates a bare Indexed Job, not managed by any operator.
    pub fn create_job(&self, namespace: &str, spec: &IndexedJobSpec) -> Result<Value, ApiError> {
        let mut body = json!({
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {"name": spec.name, "namespace": namespace},
            "spec": {
                "completionMode": "Indexed",
                "completions": spec.completions,
                "parallelism": spec.completions,
                "template": {"spec": {
                    "restartPolicy": "Never",
                    "subdomain": spec.name,
                    "containers": [{"name": "broker", "image": "ghcr.io/rse-ops/flux-sample:latest"}],
                }},
            },
        });
        if let Some(limit) = spec.backoff_limit {
            body["spec"]["backoffLimit"] = json!(limit);
        }
        if let Some(limit) = spec.backoff_limit_per_index {
            body["spec"]["backoffLimitPerIndex"] = json!(limit);
        }
        self.create(Kind::Job, namespace, body)
    }

    fn create(&self, kind: Kind, namespace: &str, body: Value) -> Result<Value, ApiError> {
        self.shared.with_state(|state| {
            let created = state.create_object(kind, namespace, body)?;
            state.settle();
            Ok(created)
        })
    }

    /// Another actor sets `MiniCluster.spec.size` through its scale subresource, as
    /// `kubectl scale` or an HPA does; `manager` is the field manager it writes as.
    pub fn set_minicluster_size(
        &self,
        namespace: &str,
        name: &str,
        size: i64,
        manager: &str,
    ) -> Result<Value, ApiError> {
        let key = ObjectKey::new(Kind::MiniCluster, namespace, name);
        let patch = json!({"spec": {"replicas": size}}).to_string();
        self.shared.with_state(|state| {
            state.api_patch_scale(&key, api::PatchFormat::Merge, patch.as_bytes(), manager)
        })
    }

    /// Another actor sets an annotation of the MiniCluster (`kubectl annotate`), as the
    /// field manager `manager`.
    pub fn annotate_minicluster(
        &self,
        namespace: &str,
        name: &str,
        key: &str,
        value: &str,
        manager: &str,
    ) -> Result<Value, ApiError> {
        let object = ObjectKey::new(Kind::MiniCluster, namespace, name);
        let patch = json!({"metadata": {"annotations": {key: value}}}).to_string();
        self.shared.with_state(|state| {
            state.api_patch(&object, api::PatchFormat::Merge, patch.as_bytes(), manager)
        })
    }

    /// Another actor deletes a pod (`kubectl delete pod`), with the pod's grace period.
    pub fn delete_pod(&self, namespace: &str, name: &str) -> Result<Value, ApiError> {
        let key = ObjectKey::new(Kind::Pod, namespace, name);
        self.shared.with_state(|state| state.api_delete(&key, b""))
    }

    /// Kubelet: the pod's container exits with `exit_code` (0 → Succeeded, else Failed).
    pub fn end_pod(&self, namespace: &str, pod: &str, exit_code: i32) -> Result<(), ApiError> {
        let key = ObjectKey::new(Kind::Pod, namespace, pod);
        self.shared
            .with_state(|state| kubelet::end_pod(state, &key, exit_code))
    }

    /// Kubelet: the container of the live pod at `index` of `job` exits with `exit_code`.
    pub fn end_index(
        &self,
        namespace: &str,
        job: &str,
        index: u32,
        exit_code: i32,
    ) -> Result<(), ApiError> {
        let pod = self
            .pod_views(namespace, job)
            .into_iter()
            .find(|pod| pod.index == index && pod.is_live())
            .ok_or_else(|| ApiError::not_found("pods", &format!("{job}-{index}-*")))?;
        self.end_pod(namespace, &pod.name, exit_code)
    }

    /// All pods of a namespace, as stored.
    pub fn pods(&self, namespace: &str) -> Vec<Value> {
        self.objects(Kind::Pod, namespace)
    }

    /// The pods labelled with `job` (that have a completion index) as the shared model sees
    /// them, sorted by index.
    pub fn pod_views(&self, namespace: &str, job: &str) -> Vec<PodView> {
        let mut views: Vec<PodView> = {
            let mut state = self.shared.state();
            state.absorb_changes();
            state.pod_views.of(namespace, job).cloned().collect()
        };
        views.sort_by_key(|pod| pod.index);
        views
    }

    pub fn job(&self, namespace: &str, name: &str) -> Option<Value> {
        self.object(Kind::Job, namespace, name)
    }

    pub fn minicluster(&self, namespace: &str, name: &str) -> Option<Value> {
        self.object(Kind::MiniCluster, namespace, name)
    }

    /// Events of both APIs (`core/v1` and `events.k8s.io/v1`) in a namespace.
    pub fn events(&self, namespace: &str) -> Vec<Value> {
        let mut events = self.objects(Kind::Event, namespace);
        events.extend(self.objects(Kind::EventV1, namespace));
        events
    }

    fn object(&self, kind: Kind, namespace: &str, name: &str) -> Option<Value> {
        self.shared
            .state()
            .store
            .get(&ObjectKey::new(kind, namespace, name))
            .cloned()
    }

    fn objects(&self, kind: Kind, namespace: &str) -> Vec<Value> {
        self.shared
            .state()
            .store
            .objects(kind, Some(namespace))
            .map(|(_, object)| object.clone())
            .collect()
    }

    /// The current global resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.shared.state().store.resource_version()
    }

    /// Watch streams currently open.
    pub fn open_watches(&self) -> usize {
        self.shared.state().store.open_watches()
    }

    /// A snapshot of every request answered so far.
    pub fn requests(&self) -> RequestLog {
        RequestLog {
            records: lock(&self.shared.log).clone(),
        }
    }

    pub fn clear_requests(&self) {
        lock(&self.shared.log).clear();
    }

    /// Pod lifecycle notifications (started, terminating, ended, deleted), from now on.
    pub fn subscribe_pods(&self) -> std_mpsc::Receiver<PodEvent> {
        self.shared.state().subscribe_pods()
    }

    pub fn faults(&self) -> &Faults {
        &self.faults
    }

    /// Polls `condition` every millisecond until it holds or `timeout` passes; returns
    /// whether it held.
    pub fn wait_for(
        &self,
        timeout: Duration,
        mut condition: impl FnMut(&SimCluster) -> bool,
    ) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if condition(self) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

impl Drop for SimCluster {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            // The server may already be gone; then there is nothing to stop.
            let _ = shutdown.send(());
        }
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            tracing::error!("sim: the server thread panicked");
        }
    }
}

/// The server: accepts connections until shutdown, with the kubelet timer task beside it.
async fn serve(
    shared: Arc<Shared>,
    listener: std::net::TcpListener,
    mut shutdown: oneshot::Receiver<()>,
) {
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(listener) => listener,
        Err(err) => {
            tracing::error!("sim: cannot listen: {err}");
            return;
        }
    };
    let timers = tokio::spawn(run_timers(shared.clone()));
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let shared = shared.clone();
                    tokio::spawn(async move {
                        let service = hyper::service::service_fn(move |request| {
                            http::handle(shared.clone(), request)
                        });
                        let connection = hyper::server::conn::http1::Builder::new()
                            .serve_connection(TokioIo::new(stream), service);
                        if let Err(err) = connection.await {
                            tracing::debug!("sim: connection ended: {err}");
                        }
                    });
                }
                Err(err) => tracing::warn!("sim: accept failed: {err}"),
            },
        }
    }
    timers.abort();
}

/// Fires kubelet work when due; sleeps until the next due time or a wakeup.
async fn run_timers(shared: Arc<Shared>) {
    loop {
        let next = {
            let mut state = shared.state();
            state.fire_timers(Instant::now());
            state.next_timer()
        };
        let woken = shared.wakeup.notified();
        match next {
            Some(due) => {
                tokio::select! {
                    () = tokio::time::sleep_until(due.into()) => {}
                    () = woken => {}
                }
            }
            None => woken.await,
        }
    }
}
