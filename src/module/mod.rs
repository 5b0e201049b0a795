//! The module wiring: `mod_main`, the RPC handlers and the reactor's life.

mod busy;
pub mod config;
mod execute;
mod rpc;
mod streams;

use std::cell::RefCell;
use std::collections::{BTreeMap, VecDeque};
use std::ffi::{CStr, c_char, c_int};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::rc::Rc;
use std::sync::Arc;

use crate::flux::{
    self, Access, ForwardedLogs, Handle, MsgHandler, Wakeup, Watcher, panic_message,
};
use crate::k8s::{Driver, DriverConfig, Problem};
use crate::model::KubeView;
use crate::model::flux::FluxView;
use crate::planner::{PlannerConfig, Reconciler};
use crate::sys;
use config::Config;

/// How many recent errors the status keeps.
const PROBLEMS_KEPT: usize = 20;

/// What the module knows and counts; shared by its callbacks on the module thread.
pub(crate) struct Module {
    pub(crate) name: String,
    pub(crate) args: Vec<String>,
    pub(crate) config: Config,
    pub(crate) loaded_at: f64,
    pub(crate) counters: Counters,
    pub(crate) flux: FluxView,
    pub(crate) kube: KubeSide,
    pub(crate) reconciler: Reconciler,
    /// `None` when no Kubernetes configuration could be found (see `problems`).
    pub(crate) driver: Option<Driver>,
    pub(crate) kube_problems: BTreeMap<String, Problem>,
    pub(crate) problems: VecDeque<(f64, String)>,
    pub(crate) streams: streams::Streams,
    pub(crate) in_flight: execute::InFlight,
    pub(crate) busy: busy::BusyProbe,
    logs: ForwardedLogs,
    now: f64,
}

impl Module {
    /// Logs an error and keeps it for the status.
    pub(crate) fn note_problem(&mut self, text: String) {
        tracing::error!("{text}");
        if self.problems.len() == PROBLEMS_KEPT {
            self.problems.pop_front();
        }
        self.problems.push_back((self.now, text));
    }
}

/// The latest Kubernetes view from the driver.
#[derive(Default)]
pub(crate) struct KubeSide {
    pub(crate) view: Option<KubeView>,
    /// Every watch has listed once: decisions may use the view.
    pub(crate) synced: bool,
}

impl KubeSide {
    /// The view, once the driver has listed everything.
    pub(crate) fn synced(&self) -> Option<&KubeView> {
        self.view.as_ref().filter(|_| self.synced)
    }
}

#[derive(Debug, Default, serde::Serialize)]
pub(crate) struct Counters {
    pub(crate) requests: u64,
    pub(crate) request_errors: u64,
    pub(crate) config_reloads: u64,
    pub(crate) wakeups: u64,
    pub(crate) plans: u64,
    pub(crate) actions: u64,
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
        ..PlannerConfig::default()
    }
}

/// Something changed (a stream event, a Kubernetes report, a request): plan, and carry
/// out what the plan says.
pub(crate) fn state_changed(shared: &Rc<RefCell<Module>>, handle: &Handle) {
    if busy::refresh_if_needed(shared, handle) {
        // Which drained ranks still run jobs is being asked; plan with the answer.
        return;
    }
    let actions = {
        let mut guard = shared.borrow_mut();
        let module = &mut *guard;
        module.now = handle.now();
        module.counters.plans += 1;
        module
            .reconciler
            .plan(&module.flux, module.kube.synced(), module.now)
    };
    for action in actions {
        execute::execute(shared, handle, action);
    }
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
    let (dispatch, forwarded_logs) = flux::dispatcher(handle, wakeup.waker());
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

    let waker = wakeup.waker();
    let driver = Driver::spawn(
        DriverConfig {
            kubeconfig: config.kubeconfig.clone(),
            namespace: config.namespace.clone(),
            job: config.job.clone(),
            minicluster: config.minicluster.clone(),
            hostname: handle.attr("hostname"),
            tuning: Default::default(),
        },
        Arc::new(move || waker.wake()),
    );
    let now = handle.now();
    let mut module = Module {
        name: name.clone(),
        args,
        reconciler: Reconciler::new(planner_config(&config)),
        config,
        loaded_at: now,
        counters: Counters::default(),
        flux: FluxView::new(),
        kube: KubeSide::default(),
        driver: None,
        kube_problems: BTreeMap::new(),
        problems: VecDeque::new(),
        streams: streams::Streams::default(),
        in_flight: execute::InFlight::default(),
        busy: busy::BusyProbe::default(),
        logs: forwarded_logs,
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
        Watcher::readable(handle, wakeup.fd(), move |handle| {
            if wakeup.clear() > 0 {
                module.borrow_mut().counters.wakeups += 1;
            }
            module.borrow().logs.flush(handle);
            execute::drain_reports(&module, handle);
        })?
    };
    streams::subscribe(&module, handle, streams::Stream::Journal);
    streams::subscribe(&module, handle, streams::Stream::Overlay);
    tracing::info!("{name} {} loaded on rank 0", env!("CARGO_PKG_VERSION"));

    running.set(true);
    let result = handle.run();
    // Teardown: stop taking requests and wake-ups, stop and join the Kubernetes worker,
    // write what it logged last, then drop streams and timers while the handle is live.
    drop(handlers);
    drop(wake_watcher);
    let driver = module.borrow_mut().driver.take();
    if let Some(driver) = driver {
        driver.shutdown();
    }
    module.borrow().logs.flush(handle);
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
