//! The module wiring: `mod_main`, the RPC handlers and the reactor's life.

pub mod config;
mod effects;
mod queue;
pub mod rpc;
mod streams;
mod wake_timer;
mod watch;

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::ffi::{CStr, c_char, c_int};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::rc::Rc;
use std::sync::Arc;

use crate::engine::Engine;
use crate::flux::{
    self, Access, ForwardedLogs, Handle, LogFilter, MsgHandler, Rpc, Wakeup, Watcher, panic_message,
};
use crate::k8s::{Driver, DriverConfig};
use crate::planner::{AutoscaleConfig, PlannerConfig};
use crate::sys;
use config::Config;

/// The module's state, shared by its callbacks on the module thread: the engine that
/// decides, and the I/O around it.
pub(crate) struct Module {
    pub(crate) name: String,
    pub(crate) args: Vec<String>,
    pub(crate) config: Config,
    pub(crate) loaded_at: f64,
    pub(crate) counters: Counters,
    pub(crate) engine: Engine,
    /// `None` when no Kubernetes configuration could be found (see the problems).
    pub(crate) driver: Option<Driver>,
    pub(crate) streams: streams::Streams,
    /// Flux-side actions sent and not yet answered, by effect id.
    pub(crate) flux_rpcs: BTreeMap<u64, Rpc>,
    /// The timer for autoscaling's next look without an event.
    pub(crate) wake_timer: wake_timer::WakeTimer,
    pub(crate) watches: watch::Watches,
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

/// Something changed (a stream event, a Kubernetes report, a request, a reload): plan,
/// and carry out what the plan says.
pub(crate) fn state_changed(shared: &Rc<RefCell<Module>>, handle: &Handle) {
    let effects = {
        let mut module = shared.borrow_mut();
        module.now = handle.now();
        let now = module.now;
        module.engine.step(now)
    };
    wake_timer::arm(shared, handle);
    effects::run(shared, handle, effects);
    watch::publish(&mut shared.borrow_mut(), handle);
}

/// Applies the `log-filter` directives (already checked by [`Config::load`]).
pub(crate) fn set_log_filter(filter: &LogFilter, directives: &str) -> Result<(), String> {
    let parsed = config::log_filter(directives).map_err(|e| format!("log-filter: {e}"))?;
    filter.set(parsed).map_err(|e| format!("log-filter: {e}"))
}

/// Why the module refused to load; logged, then the load fails with the errno.
struct LoadError {
    errno: i32,
    message: String,
}

impl LoadError {
    fn invalid(message: String) -> Self {
        LoadError {
            errno: libc::EINVAL,
            message,
        }
    }
}

impl From<flux::FluxError> for LoadError {
    fn from(err: flux::FluxError) -> Self {
        LoadError {
            errno: err.errno(),
            message: err.to_string(),
        }
    }
}

/// The entry point the broker calls on the module's own thread.
///
/// Before the reactor runs, a bad configuration fails the load (-1 with errno, and a
/// log line saying why). Once it runs, the module only ever returns 0: the broker treats
/// a -1 from a running module as fatal and exits. No panic crosses into C.
///
/// # Safety
/// Called by the broker with its live module handle and an `argc`/`argv` pair of
/// NUL-terminated strings.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mod_main(
    h: *mut sys::flux_t,
    argc: c_int,
    argv: *mut *mut c_char,
) -> c_int {
    // SAFETY: the broker passes its live handle; we use it only on this thread.
    let Some(handle) = (unsafe { Handle::from_raw(h) }) else {
        set_errno(libc::EINVAL);
        return -1;
    };
    // SAFETY: argv holds argc NUL-terminated strings (broker contract).
    let args = unsafe { collect_args(argc, argv) };
    let running = std::cell::Cell::new(false);
    let outcome = catch_unwind(AssertUnwindSafe(|| run(&handle, args, &running)));
    match outcome {
        Ok(Ok(())) => 0,
        Ok(Err(err)) => {
            handle.log(flux::LogLevel::Err, &err.message);
            set_errno(err.errno);
            -1
        }
        Err(payload) => {
            let text = panic_message(payload.as_ref());
            handle.log(
                flux::LogLevel::Err,
                &format!("panic contained in mod_main: {text}"),
            );
            if running.get() {
                0
            } else {
                set_errno(libc::EINVAL);
                -1
            }
        }
    }
}

/// # Safety
/// `argv` must hold `argc` NUL-terminated strings (or be NULL with `argc` 0).
unsafe fn collect_args(argc: c_int, argv: *mut *mut c_char) -> Vec<String> {
    if argv.is_null() {
        return Vec::new();
    }
    (0..usize::try_from(argc).unwrap_or(0))
        .map(|i| {
            // SAFETY: i < argc, and each entry is a NUL-terminated string (caller).
            unsafe { CStr::from_ptr(*argv.add(i)) }
                .to_string_lossy()
                .into_owned()
        })
        .collect()
}

fn set_errno(errno: i32) {
    // SAFETY: __errno_location returns this thread's errno slot.
    unsafe { *libc::__errno_location() = errno };
}

fn run(
    handle: &Handle,
    args: Vec<String>,
    running: &std::cell::Cell<bool>,
) -> Result<(), LoadError> {
    let wakeup = Wakeup::new().map_err(|e| LoadError::invalid(format!("eventfd: {e}")))?;
    let default_filter = config::log_filter(config::DEFAULT_LOG_FILTER)
        .map_err(|e| LoadError::invalid(format!("default log filter: {e}")))?;
    let (dispatch, forwarded_logs, log_filter) =
        flux::dispatcher(handle, wakeup.waker(), default_filter);
    let _log_guard = tracing::dispatcher::set_default(&dispatch);

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
        driver: None,
        streams: streams::Streams::default(),
        flux_rpcs: BTreeMap::new(),
        wake_timer: wake_timer::WakeTimer::default(),
        watches: watch::Watches::default(),
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

    running.set(true);
    let result = handle.run();
    // Teardown: stop taking requests and wake-ups, stop and join the Kubernetes worker,
    // write what it logged last, then drop streams and timers while the handle is live.
    drop(handlers);
    drop(wake_watcher);
    watch::end_all(&mut module.borrow_mut(), handle);
    let driver = module.borrow_mut().driver.take();
    if let Some(driver) = driver {
        driver.shutdown();
    }
    module.borrow().logs.flush_all(handle);
    match result {
        Ok(()) => tracing::info!("{name} unloading"),
        // Never -1 now: the broker would take it as a runtime failure and exit.
        Err(err) => tracing::error!("{name}: reactor failed: {err}; unloading"),
    }
    drop(module);
    Ok(())
}

/// Handlers that must stay registered while the reactor runs.
pub(crate) type Handlers = Vec<MsgHandler>;

/// Owner-only unless said otherwise.
pub(crate) const OWNER: Access = Access::Owner;
