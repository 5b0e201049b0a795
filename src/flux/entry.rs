//! The module's C entry point, written once. `flux_module!` defines `mod_main` for a
//! [`BrokerModule`]; [`module_main`] does what the broker asks of every module
//! (docs/flux-core.md §1): read the arguments, keep panics out of C, fail a bad load with
//! -1 and errno, run the reactor, and after that only return 0.
//!
//! The module is stopped exactly once, by whichever comes first: the reactor returning
//! (`flux module remove`), or the thread exiting after the broker cancelled it (`flux
//! module remove --cancel`, or a broker exiting with the module still loaded).
//! Cancellation unwinds the thread from where the reactor waits; that unwinding is not a
//! Rust panic, and Rust only lets it cross frames with nothing to drop. So the running
//! module lives in a thread-local rather than on this stack, whose destructor stops it as
//! the cancelled thread exits, and cancellation is held off while our code runs
//! ([`super::guard::CancelOff`]).

use std::cell::RefCell;
use std::ffi::{CStr, c_char, c_int};
use std::panic::{AssertUnwindSafe, catch_unwind};

use super::error::FluxError;
use super::guard::{CancelOff, panic_message};
use super::handle::{Handle, LogLevel};
use crate::sys;

/// A broker module: set up before the reactor runs, torn down after.
pub trait BrokerModule: Sized + 'static {
    /// Sets the module up on its thread, with the module arguments (`key=value` words).
    /// An error fails the load: the broker gets -1 and the error's errno, and the log
    /// says why.
    fn start(handle: &Handle, args: Vec<String>) -> Result<Self, LoadError>;

    /// Tears the module down once the reactor no longer runs it: release what it holds
    /// in the handle, join its threads (the library is unloaded next).
    fn stop(self, handle: &Handle, end: ReactorEnd);
}

/// Why the reactor no longer runs the module.
#[derive(Debug)]
pub enum ReactorEnd {
    /// It was stopped (`<name>.shutdown`, sent by `flux module remove`).
    Stopped,
    /// `flux_reactor_run` failed.
    Failed(FluxError),
    /// The broker cancelled the module's thread.
    Cancelled,
}

/// Why the module refused to load; logged, then the load fails with the errno.
#[derive(Debug)]
pub struct LoadError {
    /// Handed to the broker, which reports it to `flux module load`.
    pub errno: i32,
    /// Logged (`flux dmesg`).
    pub message: String,
}

impl LoadError {
    /// A bad configuration or environment: EINVAL.
    pub fn invalid(message: String) -> Self {
        LoadError {
            errno: libc::EINVAL,
            message,
        }
    }
}

impl From<FluxError> for LoadError {
    fn from(err: FluxError) -> Self {
        LoadError {
            errno: err.errno(),
            message: err.to_string(),
        }
    }
}

/// Defines `mod_main`, the symbol the broker looks up in the module, for `$module`, a
/// [`BrokerModule`].
macro_rules! flux_module {
    ($module:ty) => {
        /// The entry point the broker calls on the module's own thread (see
        /// `src/flux/entry.rs`).
        ///
        /// # Safety
        /// Called by the broker with its live module handle and an `argc`/`argv` pair of
        /// NUL-terminated strings.
        #[unsafe(no_mangle)]
        pub unsafe extern "C" fn mod_main(
            h: *mut $crate::sys::flux_t,
            argc: ::std::ffi::c_int,
            argv: *mut *mut ::std::ffi::c_char,
        ) -> ::std::ffi::c_int {
            // SAFETY: the broker's own arguments, passed on as they came.
            unsafe { $crate::flux::module_main::<$module>(h, argc, argv) }
        }
    };
}
pub(crate) use flux_module;

thread_local! {
    /// The module running on this thread, if any.
    static RUNNING: RefCell<Option<Running>> = const { RefCell::new(None) };
}

/// What stops a started module.
type StopModule = Box<dyn FnOnce(&Handle, ReactorEnd)>;

/// A started module, with what stops it. Dropped unstopped, which only happens when the
/// thread exits from inside the reactor (it was cancelled), it stops the module then.
struct Running {
    stop: Option<StopModule>,
    /// Dropped after the module has stopped.
    handle: HandleRef,
}

impl Running {
    fn new<M: BrokerModule>(module: M, handle: &Handle) -> Running {
        Running {
            stop: Some(Box::new(move |handle, end| module.stop(handle, end))),
            handle: HandleRef::take(handle),
        }
    }

    fn stop(mut self, end: ReactorEnd) {
        self.stop_once(end);
    }

    fn stop_once(&mut self, end: ReactorEnd) {
        let Some(stop) = self.stop.take() else {
            return;
        };
        let _cancel_off = CancelOff::hold();
        let handle = &self.handle.0;
        // Logged through the handle: the module's own logging may be what failed.
        if let Err(payload) = catch_unwind(AssertUnwindSafe(|| stop(handle, end))) {
            let text = panic_message(payload.as_ref());
            handle.log(
                LogLevel::Err,
                &format!("panic contained in the module's teardown: {text}"),
            );
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop_once(ReactorEnd::Cancelled);
    }
}

/// A reference on the handle: a cancelled thread's handle is closed by the broker before
/// the thread exits, and must outlive the module stopping then.
struct HandleRef(Handle);

impl HandleRef {
    fn take(handle: &Handle) -> HandleRef {
        // SAFETY: the handle is live; the reference is dropped exactly once, below.
        unsafe { sys::flux_incref(handle.as_ptr()) };
        HandleRef(handle.clone())
    }
}

impl Drop for HandleRef {
    fn drop(&mut self) {
        // SAFETY: gives back the reference taken in HandleRef::take; the last one
        // destroys the handle, and nothing uses this copy afterwards.
        unsafe { sys::flux_decref(self.0.as_ptr()) };
    }
}

/// The body of `mod_main`: see the module documentation.
///
/// # Safety
/// `raw` must be the broker's live module handle, on the thread the broker runs the
/// module on; `argv` must hold `argc` NUL-terminated strings (or be NULL with `argc` 0).
pub unsafe fn module_main<M: BrokerModule>(
    raw: *mut sys::flux_t,
    argc: c_int,
    argv: *mut *mut c_char,
) -> c_int {
    let starting = CancelOff::hold();
    // SAFETY: a live handle on this thread (caller).
    let Some(handle) = (unsafe { Handle::from_raw(raw) }) else {
        set_errno(libc::EINVAL);
        return -1;
    };
    // SAFETY: argv holds argc NUL-terminated strings (caller).
    let args = unsafe { collect_args(argc, argv) };
    let started = match catch_unwind(AssertUnwindSafe(|| M::start(&handle, args))) {
        Ok(started) => started,
        Err(payload) => {
            let text = panic_message(payload.as_ref());
            Err(LoadError::invalid(format!(
                "panic contained in mod_main: {text}"
            )))
        }
    };
    match started {
        Ok(module) => {
            let running = Running::new(module, &handle);
            RUNNING.with_borrow_mut(|slot| *slot = Some(running));
        }
        Err(err) => {
            handle.log(LogLevel::Err, &err.message);
            set_errno(err.errno);
            return -1;
        }
    }
    drop(starting);
    // Nothing in this frame needs dropping while the reactor runs, so cancellation may
    // unwind through it; RUNNING's destructor then stops the module as the thread exits.
    let ran = handle.run();
    let _stopping = CancelOff::hold();
    let end = match ran {
        Ok(()) => ReactorEnd::Stopped,
        Err(err) => ReactorEnd::Failed(err),
    };
    if let Some(running) = RUNNING.with_borrow_mut(Option::take) {
        running.stop(end);
    }
    0
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
