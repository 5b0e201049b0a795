//! The worker's event loop: discovery, the three watches, snapshots, and dispatch of
//! commands to [`actions`](super::actions).

use std::future::Future;
use std::sync::mpsc as std_mpsc;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use futures::future::FutureExt;
use futures::stream::{BoxStream, StreamExt};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Event as CoreEvent, Pod};
use kube::api::{Api, DynamicObject};
use kube::runtime::watcher::{self, Event};
use kube::{Client, Resource};
use serde::de::DeserializeOwned;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::actions::Actions;
use super::backoff::Backoff;
use super::failure::{Failure, Request};
use super::state::ClusterState;
use super::target::{self, Lookup, Target};
use super::{Command, DriverConfig, Outcome, Problem, Report, Tuning};
use crate::model::{KubeView, Retry};

/// Sends reports to the module and rings its doorbell.
#[derive(Clone)]
pub struct Reporter {
    reports: std_mpsc::Sender<Report>,
    views: Arc<ViewSlot>,
    wake: Arc<dyn Fn() + Send + Sync>,
}

/// The latest snapshot not yet taken by the module. A newer one replaces it here, on the
/// driver's thread: a burst of watch events (a grow to 1,000 pods makes hundreds) costs
/// the module one view, and the views it never saw are freed where they were made.
#[derive(Default)]
pub struct ViewSlot(Mutex<Option<KubeView>>);

impl ViewSlot {
    fn lock(&self) -> MutexGuard<'_, Option<KubeView>> {
        // A panic elsewhere cannot leave a half-written Option behind.
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The latest snapshot, if one came since the last take.
    pub fn take(&self) -> Option<KubeView> {
        self.lock().take()
    }
}

impl Reporter {
    pub fn new(
        reports: std_mpsc::Sender<Report>,
        views: Arc<ViewSlot>,
        wake: Arc<dyn Fn() + Send + Sync>,
    ) -> Self {
        Self {
            reports,
            views,
            wake,
        }
    }

    /// Leaves `view` for the module, replacing one it has not taken yet. Its pod index is
    /// made here, so that the module's thread reads it and does not make it.
    pub fn view(&self, view: KubeView) {
        view.pod_index();
        let unseen = self.views.lock().replace(view);
        drop(unseen);
        (self.wake)();
    }

    /// Queues a report and wakes the module; if the module is gone, the report is moot.
    pub fn send(&self, report: Report) {
        if self.reports.send(report).is_ok() {
            (self.wake)();
        }
    }

    fn problem(&self, area: &str, failure: &Failure, retrying_in: Option<Duration>) {
        self.send(Report::Problem(Problem {
            area: area.to_owned(),
            what: failure.describe(),
            forbidden: failure.is_forbidden(),
            retrying_in,
        }));
    }

    pub(crate) fn cleared(&self, area: &str) {
        self.send(Report::Cleared {
            area: area.to_owned(),
        });
    }
}

/// What every request needs: the client, where to act, pacing, and the report channel.
#[derive(Clone)]
pub struct Ctx {
    pub client: Client,
    pub namespace: String,
    pub tuning: Tuning,
    pub reporter: Reporter,
    /// Who we are in recorded Events (`reportingInstance`): the broker's hostname.
    pub instance: Option<String>,
    /// Remove pods by eviction rather than DELETE.
    pub evict: bool,
}

impl Ctx {
    pub fn new(
        client: Client,
        namespace: String,
        config: DriverConfig,
        reporter: Reporter,
    ) -> Self {
        Self {
            client,
            namespace,
            tuning: config.tuning,
            reporter,
            instance: config.hostname,
            evict: config.evict,
        }
    }

    pub fn pods(&self) -> Api<Pod> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    pub fn jobs(&self) -> Api<Job> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    pub fn miniclusters(&self) -> Api<DynamicObject> {
        Api::namespaced_with(
            self.client.clone(),
            &self.namespace,
            &target::minicluster_resource(),
        )
    }

    pub fn events(&self) -> Api<CoreEvent> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    fn backoff(&self) -> Backoff {
        Backoff::new(self.tuning.retry_base, self.tuning.retry_cap)
    }

    fn forbidden_backoff(&self) -> Backoff {
        Backoff::new(self.tuning.forbidden_first, self.tuning.forbidden_retry)
    }

    /// Runs `op` until it succeeds or fails in a way retrying here cannot fix (a refusal,
    /// a conflict). Timeouts and transient failures are retried with backoff, 403s
    /// slowly; each failed attempt is reported as a problem in `area`, cleared when the
    /// operation ends.
    pub async fn retrying<T, F, Fut>(
        &self,
        area: &str,
        request: Request,
        mut op: F,
    ) -> Result<T, Failure>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, kube::Error>>,
    {
        let mut backoff = self.backoff();
        let mut forbidden = self.forbidden_backoff();
        let mut reported = false;
        loop {
            let failure = match tokio::time::timeout(self.tuning.request_timeout, op()).await {
                Ok(Ok(value)) => {
                    if reported {
                        self.reporter.cleared(area);
                    }
                    return Ok(value);
                }
                Ok(Err(err)) => Failure::classify(&err, request),
                Err(_) => Failure::Retryable(Retry::Timeout(format!(
                    "no answer within {:?}",
                    self.tuning.request_timeout
                ))),
            };
            let delay = if failure.is_transient() {
                backoff.next_delay()
            } else if failure.is_forbidden() {
                forbidden.next_delay()
            } else {
                if reported {
                    self.reporter.cleared(area);
                }
                return Err(failure);
            };
            warn!(
                "{area}: {} {}: {}; retrying in {delay:?}",
                request.verb,
                request.resource,
                failure.describe()
            );
            self.reporter.problem(area, &failure, Some(delay));
            reported = true;
            tokio::time::sleep(delay).await;
        }
    }
}

/// One watch: a kube watcher stream plus our own pacing after errors, so failures can be
/// reported (a 403 names its verb) and paced by kind.
struct Watched<K> {
    area: &'static str,
    resource: &'static str,
    stream: BoxStream<'static, watcher::Result<Event<K>>>,
    backoff: Backoff,
    forbidden: Backoff,
    resume_at: Option<Instant>,
    reported: bool,
}

impl<K> Watched<K>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug + Send + 'static,
{
    fn new(
        ctx: &Ctx,
        api: Api<K>,
        config: watcher::Config,
        area: &'static str,
        resource: &'static str,
    ) -> Self {
        let timeout = u32::try_from(ctx.tuning.watch_timeout.as_secs()).unwrap_or(u32::MAX);
        Self {
            area,
            resource,
            stream: watcher::watcher(api, config.timeout(timeout)).boxed(),
            backoff: ctx.backoff(),
            forbidden: ctx.forbidden_backoff(),
            resume_at: None,
            reported: false,
        }
    }

    /// The next event; `None` when an error was handled instead. Cancel-safe: the pause
    /// after an error survives a cancelled call, and the stream keeps its own progress.
    async fn next(&mut self, reporter: &Reporter) -> Option<Event<K>> {
        if let Some(at) = self.resume_at {
            tokio::time::sleep_until(at).await;
            self.resume_at = None;
        }
        // A kube watcher stream never ends; if one did, there would be nothing more to wait for.
        let Some(item) = self.stream.next().await else {
            return std::future::pending().await;
        };
        match item {
            Ok(event) => {
                self.backoff.reset();
                self.forbidden.reset();
                if self.reported {
                    self.reported = false;
                    reporter.cleared(self.area);
                }
                Some(event)
            }
            Err(err) => {
                self.handle_error(&err, reporter);
                None
            }
        }
    }

    fn handle_error(&mut self, err: &watcher::Error, reporter: &Reporter) {
        let failure = Failure::classify_watch(err, self.resource);
        let broken_stream = matches!(
            err,
            watcher::Error::WatchFailed(_) | watcher::Error::WatchError(_)
        );
        if broken_stream && !failure.is_forbidden() {
            // A stream the server ended or broke (incl. 410 Gone) is routine: the watcher
            // resumes or relists at once, and a failing restart is reported then.
            info!(
                "{}: stream broke ({}); resuming",
                self.area,
                failure.describe()
            );
            return;
        }
        let delay = if failure.is_forbidden() {
            self.forbidden.next_delay()
        } else {
            self.backoff.next_delay()
        };
        warn!(
            "{}: {}; retrying in {delay:?}",
            self.area,
            failure.describe()
        );
        reporter.problem(self.area, &failure, Some(delay));
        self.reported = true;
        self.resume_at = Some(Instant::now() + delay);
    }
}

/// The next event of an optional watch; pending forever when there is none.
async fn next_optional<K>(watch: &mut Option<Watched<K>>, reporter: &Reporter) -> Option<Event<K>>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug + Send + 'static,
{
    match watch {
        Some(watch) => watch.next(reporter).await,
        None => std::future::pending().await,
    }
}

/// Finds the target, retrying until it exists and is readable.
async fn discover(ctx: &Ctx, lookup: &Lookup) -> Target {
    let area = "discovery";
    let mut slow = Backoff::new(ctx.tuning.retry_base, ctx.tuning.forbidden_retry);
    let mut reported = false;
    loop {
        let result = match lookup {
            Lookup::MiniCluster(name) => {
                let api = ctx.miniclusters();
                let request = Request {
                    verb: "get",
                    resource: "miniclusters",
                };
                ctx.retrying(area, request, || api.get(name))
                    .await
                    .map(|_| Target {
                        namespace: ctx.namespace.clone(),
                        // The operator names the Job after its MiniCluster.
                        job: name.clone(),
                        minicluster: Some(name.clone()),
                    })
                    .map_err(|f| (f, format!("MiniCluster {name:?}")))
            }
            Lookup::Job(name) => {
                let api = ctx.jobs();
                let request = Request {
                    verb: "get",
                    resource: "jobs",
                };
                ctx.retrying(area, request, || api.get(name))
                    .await
                    .map(|job| Target {
                        namespace: ctx.namespace.clone(),
                        job: name.clone(),
                        minicluster: target::owning_minicluster(&job),
                    })
                    .map_err(|f| (f, format!("Job {name:?}")))
            }
        };
        match result {
            Ok(found) => {
                if reported {
                    ctx.reporter.cleared(area);
                }
                info!(
                    "target: Job {:?}{} in namespace {:?}",
                    found.job,
                    found
                        .minicluster
                        .as_ref()
                        .map_or(String::new(), |mc| format!(" of MiniCluster {mc:?}")),
                    found.namespace
                );
                return found;
            }
            Err((failure, object)) => {
                // Not there (yet), or unreadable for good: say so and look again later;
                // the operator may still be creating it.
                let what = if failure.is_not_found() {
                    format!("{object} not found in namespace {:?}", ctx.namespace)
                } else {
                    format!("{object}: {}", failure.describe())
                };
                let delay = slow.next_delay();
                warn!("{area}: {what}; looking again in {delay:?}");
                ctx.reporter.send(Report::Problem(Problem {
                    area: area.to_owned(),
                    what,
                    forbidden: false,
                    retrying_in: Some(delay),
                }));
                reported = true;
                tokio::time::sleep(delay).await;
            }
        }
    }
}

/// Sends snapshots when they change, `Synced` once, and a problem while the Job is gone.
struct Publisher {
    job: String,
    namespace: String,
    last: Option<KubeView>,
    synced_sent: bool,
    job_missing: bool,
    /// The state revision last looked at: a snapshot of 1,000 pods is not free, and
    /// most loop turns (a command, a finished action) change nothing.
    revision: Option<u64>,
}

const JOB_AREA: &str = "job";

impl Publisher {
    fn publish(&mut self, state: &ClusterState, reporter: &Reporter) {
        if self.revision.replace(state.revision()) == Some(state.revision()) {
            return;
        }
        if !state.synced() {
            return;
        }
        let Some(view) = state.view() else {
            if !self.job_missing {
                self.job_missing = true;
                warn!("Job {:?} is gone", self.job);
                reporter.send(Report::Problem(Problem {
                    area: JOB_AREA.to_owned(),
                    what: format!(
                        "Job {:?} not found in namespace {:?}",
                        self.job, self.namespace
                    ),
                    forbidden: false,
                    retrying_in: None,
                }));
            }
            return;
        };
        if self.job_missing {
            self.job_missing = false;
            reporter.cleared(JOB_AREA);
        }
        if self.last.as_ref() != Some(&view) {
            self.last = Some(view.clone());
            reporter.view(view);
        }
        if !self.synced_sent {
            self.synced_sent = true;
            debug!("watches synced");
            reporter.send(Report::Synced);
        }
    }
}

fn panic_on_request() -> ! {
    panic!("panic requested through FLUXK8S_TEST_PANIC")
}

/// Runs the driver until `stop` fires (or the module's command sender is dropped). The
/// channels are borrowed so that, after a panic, a fresh run can take them over.
pub async fn run(
    ctx: Ctx,
    lookup: &Lookup,
    commands: &mut mpsc::UnboundedReceiver<Command>,
    stop: &mut oneshot::Receiver<()>,
) {
    let mut actions = Actions::new();
    let discovery = discover(&ctx, lookup);
    tokio::pin!(discovery);
    let target = loop {
        tokio::select! {
            biased;
            _ = &mut *stop => {
                actions.abandon_all(&ctx.reporter);
                return;
            }
            command = commands.recv() => match command {
                Some(Command::Apply { id, action }) => actions.submit(id, action),
                Some(Command::Release(view)) => drop(view),
                Some(Command::Panic) => panic_on_request(),
                None => {
                    actions.abandon_all(&ctx.reporter);
                    return;
                }
            },
            target = &mut discovery => break target,
        }
    };

    let mut state = ClusterState::new(target.minicluster.is_some());
    let mut pods = Watched::new(
        &ctx,
        ctx.pods(),
        watcher::Config::default().labels(&format!("batch.kubernetes.io/job-name={}", target.job)),
        "watch pods",
        "pods",
    );
    let mut jobs = Watched::new(
        &ctx,
        ctx.jobs(),
        watcher::Config::default().fields(&format!("metadata.name={}", target.job)),
        "watch jobs",
        "jobs",
    );
    let mut miniclusters = target.minicluster.as_ref().map(|name| {
        Watched::new(
            &ctx,
            ctx.miniclusters(),
            watcher::Config::default().fields(&format!("metadata.name={name}")),
            "watch miniclusters",
            "miniclusters",
        )
    });
    let mut publisher = Publisher {
        job: target.job.clone(),
        namespace: target.namespace.clone(),
        last: None,
        synced_sent: false,
        job_missing: false,
        revision: None,
    };
    let reporter = ctx.reporter.clone();

    loop {
        tokio::select! {
            biased;
            _ = &mut *stop => break,
            command = commands.recv() => match command {
                Some(Command::Apply { id, action }) => actions.submit(id, action),
                Some(Command::Release(view)) => drop(view),
                Some(Command::Panic) => panic_on_request(),
                None => break,
            },
            Some((id, outcome)) = actions.next_finished() => {
                report_outcome(&reporter, id, outcome);
            }
            event = pods.next(&reporter) => if let Some(event) = event {
                state.apply_pod(event);
            },
            event = jobs.next(&reporter) => if let Some(event) = event {
                state.apply_job(event);
            },
            event = next_optional(&mut miniclusters, &reporter) => if let Some(event) = event {
                state.apply_minicluster(event);
            },
        }
        // Coalesce: take every event that is already waiting before snapshotting.
        drain(&mut pods, &reporter, |event| state.apply_pod(event));
        drain(&mut jobs, &reporter, |event| state.apply_job(event));
        if let Some(watch) = miniclusters.as_mut() {
            drain(watch, &reporter, |event| state.apply_minicluster(event));
        }
        // Commands first: a delete should not wait for a snapshot.
        actions.start_ready(&ctx, &target, &state);
        publisher.publish(&state, &reporter);
    }
    actions.abandon_all(&reporter);
}

/// Most events taken in one coalescing pass per watch, so a flood cannot starve commands.
const MAX_BATCH: usize = 512;

/// Applies the events `watch` has ready right now, without waiting.
fn drain<K>(watch: &mut Watched<K>, reporter: &Reporter, mut apply: impl FnMut(Event<K>))
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug + Send + 'static,
{
    for _ in 0..MAX_BATCH {
        match watch.next(reporter).now_or_never() {
            Some(Some(event)) => apply(event),
            // An error was handled; the watch now pauses.
            Some(None) => {}
            None => break,
        }
    }
}

fn report_outcome(reporter: &Reporter, id: u64, outcome: Outcome) {
    match &outcome {
        Outcome::Done => debug!("command {id}: done"),
        other => warn!("command {id}: {other}"),
    }
    reporter.send(Report::Finished { id, outcome });
}
