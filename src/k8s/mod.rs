//! The Kubernetes driver: a kube client on its own thread, so the Flux reactor never waits
//! on the API server.
//!
//! The worker is a named `std::thread` running a current-thread tokio runtime. The module
//! sends [`Command`]s (never blocking), and drains [`Report`]s with [`Driver::try_recv`]
//! after the `wake` callback fires (the module makes it write an eventfd its reactor
//! watches). The worker finds the Job (and MiniCluster) of this broker, watches them and the
//! Job's pods, sends a full [`KubeView`](crate::model::KubeView) whenever what it sees
//! changes, and carries out [`KubeAction`]s with retries, reporting exactly one [`Outcome`]
//! per command. [`Report`], [`Outcome`] and [`Problem`] are the model's, so the engine
//! reads them without depending on the driver.

mod actions;
pub mod backoff;
pub mod failure;
pub mod state;
pub mod target;
mod worker;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::mpsc as std_mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use kube::config::{InferConfigError, KubeConfigOptions, Kubeconfig, KubeconfigError};
use tokio::sync::{mpsc, oneshot};
use tracing::{error, info};

use crate::model::{KubeAction, KubeView};
pub use crate::model::{Outcome, Problem, Report};
use target::{Lookup, LookupError};

/// Name of the worker thread (shows in `ps -T` and in panics).
const THREAD_NAME: &str = "fluxk8s-kube";

/// How the driver finds its cluster and target, from the module's settings.
#[derive(Debug, Clone, Default)]
pub struct DriverConfig {
    /// `kubeconfig=PATH`; else `KUBECONFIG` or `~/.kube/config`, else in-cluster.
    pub kubeconfig: Option<PathBuf>,
    /// `namespace=`; else the kubeconfig context's or the in-cluster namespace, else
    /// `default`.
    pub namespace: Option<String>,
    /// `job=`: the Indexed Job running the brokers.
    pub job: Option<String>,
    /// `minicluster=`: the MiniCluster (its Job has the same name); wins over `job=`.
    pub minicluster: Option<String>,
    /// The broker's hostname, `<job>-<index>`, used when neither name is set.
    pub hostname: Option<String>,
    /// `evict=true`: remove pods through the Eviction API instead of DELETE, so
    /// PodDisruptionBudgets are honoured and the pod gets a `DisruptionTarget` condition
    /// (which `podFailurePolicy` rules can match).
    pub evict: bool,
    /// Timeouts and retry pacing.
    pub tuning: Tuning,
}

/// Timeouts and retry pacing; the defaults suit a real cluster, tests shorten them.
#[derive(Debug, Clone)]
pub struct Tuning {
    /// Longest wait for one (non-watch) request before it counts as failed and is retried.
    pub request_timeout: Duration,
    /// First retry delay after a transient failure; doubles up to `retry_cap`, with jitter.
    pub retry_base: Duration,
    /// Longest delay between retries of a transient failure.
    pub retry_cap: Duration,
    /// First retry of a 403, doubling up to `forbidden_retry`: a Role fixed soon after
    /// takes effect within seconds, one never fixed costs a request a minute.
    pub forbidden_first: Duration,
    /// Longest delay between retries of a 403.
    pub forbidden_retry: Duration,
    /// Server-side watch timeout; a watch silent for this long (plus a margin) is restarted.
    pub watch_timeout: Duration,
}

impl Default for Tuning {
    fn default() -> Self {
        Self {
            request_timeout: Duration::from_secs(15),
            retry_base: Duration::from_millis(500),
            retry_cap: Duration::from_secs(30),
            forbidden_first: Duration::from_secs(2),
            forbidden_retry: Duration::from_secs(60),
            watch_timeout: Duration::from_secs(290),
        }
    }
}

/// A request from the module.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// Carry out `action`; answered by exactly one [`Report::Finished`] with the same `id`.
    Apply { id: u64, action: KubeAction },
    /// A view the module is done with, for the worker to free: its pods are shared with
    /// the worker's records, so their reference counts live in the worker's cache.
    Release(Box<KubeView>),
    /// Makes the worker panic, to prove such a panic is contained and reported. Only the
    /// module's `test-panic` request sends it, and that exists only under
    /// `FLUXK8S_TEST_PANIC`.
    Panic,
}

/// Why the driver could not start or take a command.
#[derive(Debug, thiserror::Error)]
pub enum K8sError {
    /// The kube client could not be built from its configuration.
    #[error("kube client: {0}")]
    Kube(#[from] kube::Error),
    /// The `kubeconfig=` file is missing or unusable.
    #[error("kubeconfig {path}: {source}")]
    Kubeconfig {
        path: PathBuf,
        #[source]
        source: KubeconfigError,
    },
    /// Neither a kubeconfig nor an in-cluster service account was found.
    #[error("no Kubernetes configuration found: {0}")]
    Infer(#[from] InferConfigError),
    /// The settings name no Job or MiniCluster.
    #[error(transparent)]
    Target(#[from] LookupError),
    /// The worker thread or its runtime could not be created.
    #[error("cannot start the Kubernetes driver thread: {0}")]
    Thread(#[source] std::io::Error),
    /// The worker is gone (it stopped or panicked).
    #[error("the Kubernetes driver has stopped")]
    Stopped,
}

/// Where the worker gets its kube client configuration.
#[derive(Clone)]
enum ClientSource {
    /// Resolve it from `DriverConfig::kubeconfig`, the environment or the pod.
    Resolve(Option<PathBuf>),
    /// Given by the caller (tests).
    Given(Box<kube::Config>),
}

/// Handle on the worker thread; dropping it stops and joins the worker.
pub struct Driver {
    commands: mpsc::UnboundedSender<Command>,
    reports: std_mpsc::Receiver<Report>,
    views: Arc<worker::ViewSlot>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
    namespace: String,
}

impl Driver {
    /// Starts the worker. The client configuration is resolved first (local files only,
    /// no network), so a bad kubeconfig is an error here; finding the Job happens on the
    /// worker, whose troubles arrive as [`Report::Problem`].
    pub fn spawn(
        config: DriverConfig,
        wake: Arc<dyn Fn() + Send + Sync>,
    ) -> Result<Self, K8sError> {
        let source = ClientSource::Resolve(config.kubeconfig.clone());
        Self::start(source, config, wake)
    }

    /// Starts the worker with a ready client configuration; `config.kubeconfig` is unused.
    pub fn spawn_with_config(
        kube_config: kube::Config,
        config: DriverConfig,
        wake: Arc<dyn Fn() + Send + Sync>,
    ) -> Result<Self, K8sError> {
        Self::start(ClientSource::Given(Box::new(kube_config)), config, wake)
    }

    fn start(
        source: ClientSource,
        config: DriverConfig,
        wake: Arc<dyn Fn() + Send + Sync>,
    ) -> Result<Self, K8sError> {
        let lookup = Lookup::from_settings(
            config.minicluster.as_deref(),
            config.job.as_deref(),
            config.hostname.as_deref(),
        )?;
        let (command_tx, command_rx) = mpsc::unbounded_channel();
        let (report_tx, report_rx) = std_mpsc::channel();
        let (stop_tx, stop_rx) = oneshot::channel();
        let (ready_tx, ready_rx) = std_mpsc::sync_channel(1);
        let views = Arc::new(worker::ViewSlot::default());
        let reporter = worker::Reporter::new(report_tx, Arc::clone(&views), wake);
        // The caller's tracing dispatcher goes with the worker: inside the broker it is the
        // one that forwards to flux_log (the module installs it per thread, not globally).
        let dispatch = tracing::dispatcher::get_default(|current| current.clone());
        let thread = std::thread::Builder::new()
            .name(THREAD_NAME.to_owned())
            .spawn(move || {
                let _log = tracing::dispatcher::set_default(&dispatch);
                worker_thread(
                    source, config, lookup, reporter, command_rx, stop_rx, ready_tx,
                )
            })
            .map_err(K8sError::Thread)?;
        let started = ready_rx.recv();
        match started {
            Ok(Ok(namespace)) => Ok(Self {
                commands: command_tx,
                reports: report_rx,
                views,
                stop: Some(stop_tx),
                thread: Some(thread),
                namespace,
            }),
            Ok(Err(err)) => {
                join(thread);
                Err(err)
            }
            Err(_) => {
                join(thread);
                Err(K8sError::Stopped)
            }
        }
    }

    /// The namespace the driver works in.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// Queues a command; never blocks.
    pub fn send(&self, command: Command) -> Result<(), K8sError> {
        self.commands.send(command).map_err(|_| K8sError::Stopped)
    }

    /// Hands a replaced view to the worker to free. Freeing it here would write the
    /// reference count of each of its pods (10,000 at 10,000 ranks), each a cache line the
    /// worker last wrote: a miss per pod on the module's thread.
    pub fn release(&self, view: KubeView) {
        // A stopped worker returns the command, and the view is freed here after all.
        let _ = self.commands.send(Command::Release(Box::new(view)));
    }

    /// The next report, if one is waiting; never blocks. The latest view comes first:
    /// any report after it is about the same or an older picture.
    pub fn try_recv(&self) -> Option<Report> {
        match self.views.take() {
            Some(view) => Some(Report::View(Box::new(view))),
            None => self.try_recv_queued(),
        }
    }

    /// The next report other than a view, if one is waiting; never blocks. A caller that
    /// has taken a view stops taking views with this: the driver makes a new one while
    /// the last is applied, and a loop that takes each would chase it.
    pub fn try_recv_queued(&self) -> Option<Report> {
        self.reports.try_recv().ok()
    }

    /// Stops the worker and waits for its thread to end.
    pub fn shutdown(self) {
        drop(self);
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            // An error only means the worker has already ended.
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            join(thread);
        }
    }
}

fn join(thread: JoinHandle<()>) {
    if thread.join().is_err() {
        error!("the Kubernetes driver thread panicked");
    }
}

/// How long the runtime may wait, at shutdown, for blocking work such as a DNS lookup.
const RUNTIME_SHUTDOWN_GRACE: Duration = Duration::from_secs(1);
/// The first restart after a panic waits this long, doubling per panic up to
/// [`RESTART_MAX`]; a run that lasted [`RESTART_MAX`] starts the doubling over.
const RESTART_FIRST: Duration = Duration::from_secs(1);
const RESTART_MAX: Duration = Duration::from_secs(60);

/// How one run of the worker ended.
enum Ended {
    /// Told to stop, or the module is gone.
    Stopped,
    /// It panicked with this message.
    Panicked(String),
}

/// Body of the worker thread: build the runtime and client, say whether that worked, then
/// run until told to stop. A panic ends only that run: after a pause the worker starts
/// again with a new runtime, client and watches, so its view is rebuilt from fresh lists.
fn worker_thread(
    source: ClientSource,
    config: DriverConfig,
    lookup: Lookup,
    reporter: worker::Reporter,
    mut commands: mpsc::UnboundedReceiver<Command>,
    mut stop: oneshot::Receiver<()>,
    ready: std_mpsc::SyncSender<Result<String, K8sError>>,
) {
    let mut ready = Some(ready);
    let mut restarts = 0u32;
    let mut pause = RESTART_FIRST;
    loop {
        let runtime = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(runtime) => runtime,
            Err(err) => {
                match ready.take() {
                    Some(ready) => drop(ready.send(Err(K8sError::Thread(err)))),
                    None => error!("the Kubernetes driver cannot restart: {err}"),
                }
                return;
            }
        };
        let started = std::time::Instant::now();
        let ended = run_once(
            &runtime,
            source.clone(),
            &config,
            &lookup,
            &reporter,
            &mut commands,
            &mut stop,
            &mut ready,
        );
        let Ended::Panicked(what) = ended else {
            runtime.shutdown_timeout(RUNTIME_SHUTDOWN_GRACE);
            return;
        };
        if started.elapsed() >= RESTART_MAX {
            pause = RESTART_FIRST;
        }
        error!(
            "the Kubernetes driver stopped after a panic: {what}; restarting in {}s",
            pause.as_secs()
        );
        reporter.send(Report::Problem(Problem {
            area: "driver".to_owned(),
            what: format!("the Kubernetes driver stopped after a panic: {what}"),
            forbidden: false,
            retrying_in: Some(pause),
        }));
        let stopped = runtime.block_on(async {
            tokio::select! {
                _ = &mut stop => true,
                _ = tokio::time::sleep(pause) => false,
            }
        });
        runtime.shutdown_timeout(RUNTIME_SHUTDOWN_GRACE);
        if stopped {
            return;
        }
        restarts += 1;
        pause = (pause * 2).min(RESTART_MAX);
        info!("the Kubernetes driver restarts (restart {restarts})");
        reporter.send(Report::Restarted { restarts });
        reporter.cleared("driver");
    }
}

/// One run of the worker on `runtime`, with panics caught.
#[allow(clippy::too_many_arguments)]
fn run_once(
    runtime: &tokio::runtime::Runtime,
    source: ClientSource,
    config: &DriverConfig,
    lookup: &Lookup,
    reporter: &worker::Reporter,
    commands: &mut mpsc::UnboundedReceiver<Command>,
    stop: &mut oneshot::Receiver<()>,
    ready: &mut Option<std_mpsc::SyncSender<Result<String, K8sError>>>,
) -> Ended {
    let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        runtime.block_on(async {
            let (client, namespace) = match connect(source, config.namespace.clone()).await {
                Ok(connected) => connected,
                Err(err) => {
                    match ready.take() {
                        Some(ready) => drop(ready.send(Err(err))),
                        None => error!("the Kubernetes driver cannot reconnect: {err}"),
                    }
                    return;
                }
            };
            if let Some(ready) = ready.take()
                && ready.send(Ok(namespace.clone())).is_err()
            {
                return;
            }
            let ctx = worker::Ctx::new(client, namespace, config.clone(), reporter.clone());
            worker::run(ctx, lookup, commands, stop).await;
        })
    }));
    match run {
        Ok(()) => Ended::Stopped,
        Err(panic) => Ended::Panicked(
            panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".to_owned()),
        ),
    }
}

/// Builds the client and picks the namespace.
///
/// In-cluster, kube 5 reads the service-account token through a token *file* that it
/// re-reads at least once a minute (`kube-client` `TokenFile`, like client-go), and the CA
/// file likewise, so rotated bound tokens are picked up without help from us.
async fn connect(
    source: ClientSource,
    namespace: Option<String>,
) -> Result<(kube::Client, String), K8sError> {
    let mut kube_config = match source {
        ClientSource::Given(config) => *config,
        ClientSource::Resolve(Some(path)) => {
            let kubeconfig =
                Kubeconfig::read_from(&path).map_err(|source| K8sError::Kubeconfig {
                    path: path.clone(),
                    source,
                })?;
            kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
                .await
                .map_err(|source| K8sError::Kubeconfig { path, source })?
        }
        ClientSource::Resolve(None) => kube::Config::infer().await?,
    };
    // The driver retries (and reports) every failure itself; kube's own retry layer would
    // hide 503s from the status.
    kube_config.default_retry = false;
    let namespace = namespace.unwrap_or_else(|| kube_config.default_namespace.clone());
    let client = kube::Client::try_from(kube_config)?;
    Ok((client, namespace))
}
