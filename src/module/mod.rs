//! The module wiring: `mod_main`, the RPC handlers and the reactor's life.

pub mod config;
mod effects;
mod history;
mod queue;
pub mod rpc;
mod streams;
mod wake_timer;
mod watch;

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::Arc;

use crate::engine::Engine;
use crate::flux::{
    self, Access, BrokerModule, ForwardedLogs, Handle, LoadError, LogFilter, MsgHandler,
    ReactorEnd, Rpc, Wakeup, Watcher,
};
use crate::k8s::{Driver, DriverConfig};
use crate::planner::{AutoscaleConfig, PlannerConfig};
use config::Config;

/// The module's state, shared by its callbacks on the module thread: the engine that
/// decides, and the I/O around it.
pub(crate) struct Module {
    pub(crate) name: String,
    pub(crate) args: Vec<String>,
    pub(crate) config: Config,
    pub(crate) loaded_at: f64,
    pub(crate) counters: Counters,
    /// What each request method's handlers cost (the plan after it is the `plan` kind's).
    pub(crate) request_costs: BTreeMap<&'static str, crate::flux::CallbackCost>,
    pub(crate) engine: Engine,
    /// `None` when no Kubernetes configuration could be found (see the problems).
    pub(crate) driver: Option<Driver>,
    pub(crate) streams: streams::Streams,
    /// Flux-side actions sent and not yet answered, by effect id.
    pub(crate) flux_rpcs: BTreeMap<u64, Rpc>,
    /// The timer for autoscaling's next look without an event.
    pub(crate) wake_timer: wake_timer::WakeTimer,
    /// Set while a plan waits for the end of this reactor pass (see [`state_changed`]).
    plan_pending: Option<Watcher>,
    pub(crate) watches: watch::Watches,
    pub(crate) history_followers: history::Followers,
    logs: ForwardedLogs,
    pub(crate) log_filter: LogFilter,
    /// The reactor clock at the current callback.
    pub(crate) now: f64,
}

impl Module {
    pub(crate) fn note_problem(&mut self, text: String) {
        let now = self.now;
        self.engine.note_problem(now, text);
    }
}

#[derive(Debug, Default, serde::Serialize)]
pub(crate) struct Counters {
    pub(crate) requests: u64,
    pub(crate) request_errors: u64,
    pub(crate) config_reloads: u64,
    pub(crate) wakeups: u64,
}

/// The planner's knobs, from the module configuration.
fn planner_config(config: &Config) -> PlannerConfig {
    PlannerConfig {
        min_size: config.min_size,
        protect: config.protect.clone(),
        drain_grace: config.drain_grace,
        startup_timeout: config.startup_timeout,
        max_lost_fraction: config.max_lost_fraction,
        cooldown: config.cooldown,
        max_actions_per_minute: config.max_actions_per_minute,
        ..PlannerConfig::default()
    }
}

/// Autoscaling's knobs, when it is on.
fn autoscale_config(config: &Config) -> Option<AutoscaleConfig> {
    config.autoscale.then_some(AutoscaleConfig {
        idle_timeout: config.idle_timeout,
        max_grow_per_minute: config.max_grow_per_minute,
    })
}

/// Something changed (a stream event, a Kubernetes report, a request, a reload): plan
/// once this pass of the reactor has run its callbacks, before it waits again. Events that
/// come together (a driver report, a burst of journal events, the answers to a storm of
/// requests) share one plan, and each callback only takes in its event.
pub(crate) fn state_changed(shared: &Rc<RefCell<Module>>, handle: &Handle) {
    let mut module = shared.borrow_mut();
    if module.plan_pending.is_some() {
        return;
    }
    let weak = Rc::downgrade(shared);
    let watcher = Watcher::before_wait(handle, "plan", move |handle| {
        if let Some(shared) = weak.upgrade() {
            // Dropped here, inside its own callback (see flux::callback): a plan runs once.
            let pending = shared.borrow_mut().plan_pending.take();
            plan(&shared, handle);
            drop(pending);
        }
    });
    match watcher {
        Ok(watcher) => module.plan_pending = Some(watcher),
        Err(err) => {
            // Planning is never skipped: without the watcher, plan in this callback.
            module.note_problem(format!("plan watcher: {err}"));
            drop(module);
            plan(shared, handle);
        }
    }
}

/// Plans, and carries out what the plan says.
fn plan(shared: &Rc<RefCell<Module>>, handle: &Handle) {
    let effects = {
        let mut module = shared.borrow_mut();
        module.now = handle.now();
        let now = module.now;
        module.engine.step(now)
    };
    wake_timer::arm(shared, handle);
    effects::run(shared, handle, effects);
    let mut module = shared.borrow_mut();
    watch::publish(&mut module, handle);
    history::publish(&mut module, handle);
}

/// Applies the `log-filter` directives (already checked by [`Config::load`]).
pub(crate) fn set_log_filter(filter: &LogFilter, directives: &str) -> Result<(), String> {
    let parsed = config::log_filter(directives).map_err(|e| format!("log-filter: {e}"))?;
    filter.set(parsed).map_err(|e| format!("log-filter: {e}"))
}

flux::flux_module!(Fluxk8s);

/// fluxk8s as the broker runs it: the module state and what must stay alive with it
/// while the reactor runs.
struct Fluxk8s {
    module: Rc<RefCell<Module>>,
    handlers: Handlers,
    wake_watcher: Watcher,
    /// Routes this thread's log lines to the broker; dropped last.
    _log_guard: tracing::dispatcher::DefaultGuard,
}

impl BrokerModule for Fluxk8s {
    /// A bad configuration fails the load (EINVAL and a log line saying why).
    fn start(handle: &Handle, args: Vec<String>) -> Result<Self, LoadError> {
        let wakeup = Wakeup::new().map_err(|e| LoadError::invalid(format!("eventfd: {e}")))?;
        let default_filter = config::log_filter(config::DEFAULT_LOG_FILTER)
            .map_err(|e| LoadError::invalid(format!("default log filter: {e}")))?;
        let (dispatch, forwarded_logs, log_filter) =
            flux::dispatcher(handle, wakeup.waker(), default_filter);
        let log_guard = tracing::dispatcher::set_default(&dispatch);

        let name = handle.module_name().unwrap_or_else(|| "fluxk8s".to_owned());
        let rank = handle.rank()?;
        if rank != 0 {
            return Err(LoadError::invalid(format!(
                "{name} runs on rank 0 only (this is rank {rank}): load it with ranks = \"0\""
            )));
        }
        let table = handle.conf_table("fluxk8s")?;
        let config =
            Config::load(table.as_deref(), &args).map_err(|e| LoadError::invalid(e.to_string()))?;
        set_log_filter(&log_filter, &config.log_filter).map_err(LoadError::invalid)?;

        let waker = wakeup.waker();
        let driver = Driver::spawn(
            DriverConfig {
                kubeconfig: config.kubeconfig.clone(),
                namespace: config.namespace.clone(),
                job: config.job.clone(),
                minicluster: config.minicluster.clone(),
                hostname: handle.attr("hostname"),
                evict: config.evict,
                tuning: Default::default(),
            },
            Arc::new(move || waker.wake()),
        );
        let now = handle.now();
        let mut engine = Engine::new(planner_config(&config), config.dry_run);
        engine.set_autoscale(autoscale_config(&config));
        let mut module = Module {
            name: name.clone(),
            args,
            engine,
            config,
            loaded_at: now,
            counters: Counters::default(),
            request_costs: BTreeMap::new(),
            driver: None,
            streams: streams::Streams::default(),
            flux_rpcs: BTreeMap::new(),
            wake_timer: wake_timer::WakeTimer::default(),
            plan_pending: None,
            watches: watch::Watches::default(),
            history_followers: history::Followers::default(),
            logs: forwarded_logs,
            log_filter,
            now,
        };
        match driver {
            Ok(driver) => module.driver = Some(driver),
            // Flux-side work goes on; the status says why nothing happens on Kubernetes.
            Err(err) => module.note_problem(format!("kubernetes unavailable: {err}")),
        }
        let module = Rc::new(RefCell::new(module));
        let handlers = rpc::register(handle, &module)?;
        let wake_watcher = {
            let module = Rc::clone(&module);
            Watcher::readable(handle, "driver reports", wakeup.fd(), move |handle| {
                if wakeup.clear() > 0 {
                    module.borrow_mut().counters.wakeups += 1;
                }
                module.borrow().logs.flush(handle);
                effects::drain_reports(&module, handle);
            })?
        };
        streams::subscribe(&module, handle, streams::Stream::Journal);
        streams::subscribe(&module, handle, streams::Stream::Overlay);
        streams::subscribe(&module, handle, streams::Stream::Jobs);
        tracing::info!("{name} {} loaded on rank 0", env!("CARGO_PKG_VERSION"));
        Ok(Fluxk8s {
            module,
            handlers,
            wake_watcher,
            _log_guard: log_guard,
        })
    }

    /// Stops taking requests and wake-ups, stops and joins the Kubernetes worker, writes
    /// what it logged last, then drops streams and timers while the handle is live.
    fn stop(self, handle: &Handle, end: ReactorEnd) {
        let Fluxk8s {
            module,
            handlers,
            wake_watcher,
            _log_guard,
        } = self;
        drop(handlers);
        drop(wake_watcher);
        watch::end_all(&mut module.borrow_mut(), handle);
        let driver = module.borrow_mut().driver.take();
        if let Some(driver) = driver {
            driver.shutdown();
        }
        module.borrow().logs.flush_all(handle);
        let name = module.borrow().name.clone();
        match end {
            ReactorEnd::Stopped => tracing::info!("{name} unloading"),
            // The module still returns 0: the broker would take -1 as a runtime failure.
            ReactorEnd::Failed(err) => {
                tracing::error!("{name}: reactor failed: {err}; unloading")
            }
            ReactorEnd::Cancelled => tracing::warn!("{name}: thread cancelled; unloading"),
        }
        drop(module);
    }
}

/// Handlers that must stay registered while the reactor runs.
pub(crate) type Handlers = Vec<MsgHandler>;

/// Owner-only unless said otherwise.
pub(crate) const OWNER: Access = Access::Owner;
