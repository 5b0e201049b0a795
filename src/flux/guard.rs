//! The panic barrier: no Rust panic may unwind into the broker (it would abort the
//! whole broker process), so every entry from C runs inside [`ffi_guard`]. Being the one
//! door every callback comes through, it also holds off thread cancellation
//! ([`CancelOff`]) and measures what each callback costs the reactor.

use std::any::Any;
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::ffi::c_int;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::sys;

static PANICS_CAUGHT: AtomicU64 = AtomicU64::new(0);

thread_local! {
    /// Per thread: the module's callbacks all run on its one thread, and a reload starts
    /// a new thread (and new figures).
    static COSTS: RefCell<BTreeMap<&'static str, CallbackCost>> = const {
        RefCell::new(BTreeMap::new())
    };
}

/// The CPU time the module's thread spent in one kind of callback: what fluxk8s cost
/// the broker's reactor, without the time other threads ran meanwhile.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct CallbackCost {
    /// Callbacks run.
    pub calls: u64,
    /// CPU time of all of them.
    pub total: Duration,
    /// CPU time of the longest one.
    pub longest: Duration,
    /// Callbacks that took over [`CALLBACK_BOUND`]: one long callback is told apart from
    /// many.
    pub over_bound: u64,
}

/// What a reactor callback should stay under: the broker's other work waits while it runs.
pub const CALLBACK_BOUND: Duration = Duration::from_millis(1);

impl CallbackCost {
    /// Counts one callback that took `took`.
    pub fn add(&mut self, took: Duration) {
        self.calls += 1;
        self.total += took;
        self.longest = self.longest.max(took);
        self.over_bound += u64::from(took > CALLBACK_BOUND);
    }
}

impl serde::Serialize for CallbackCost {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        let mut fields = s.serialize_struct("CallbackCost", 4)?;
        fields.serialize_field("calls", &self.calls)?;
        fields.serialize_field("calls_over_1ms", &self.over_bound)?;
        fields.serialize_field("cpu_ms_total", &ms(self.total))?;
        fields.serialize_field("cpu_ms_longest", &ms(self.longest))?;
        fields.end()
    }
}

/// The cost of the callbacks this thread ran through [`ffi_guard`], by kind.
pub fn callback_costs() -> BTreeMap<&'static str, CallbackCost> {
    COSTS.with_borrow(Clone::clone)
}

/// The CPU time this thread has used; `None` if the clock cannot be read.
pub fn thread_cpu_time() -> Option<Duration> {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec, and `now` is one.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &raw mut now) };
    let secs = u64::try_from(now.tv_sec).ok()?;
    let nanos = u32::try_from(now.tv_nsec).ok()?;
    (rc == 0).then(|| Duration::new(secs, nanos))
}

/// Runs `body`, and the CPU time this thread spent in it (`None` if the clock cannot be
/// read).
pub fn cpu_time_of<R>(body: impl FnOnce() -> R) -> (R, Option<Duration>) {
    let started = thread_cpu_time();
    let result = body();
    let took = started
        .zip(thread_cpu_time())
        .map(|(started, ended)| ended.saturating_sub(started));
    (result, took)
}

/// Holds off the cancellation of this thread while it lives.
///
/// The broker cancels a module's thread (`pthread_cancel`) on `flux module remove
/// --cancel` and when it exits with the module still loaded. The unwinding that starts
/// at the thread's next cancellation point is not a Rust panic: `catch_unwind` cannot
/// let it through (glibc then aborts the broker: "FATAL: exception not rethrown"), and
/// Rust defines it only across frames with nothing to drop. With one of these held by
/// every entry from C, the thread is cancelled only while it waits in the reactor.
pub(crate) struct CancelOff {
    previous: c_int,
}

impl CancelOff {
    pub(crate) fn hold() -> CancelOff {
        let mut previous = sys::PTHREAD_CANCEL_ENABLE;
        // SAFETY: sets this thread's cancel state; `previous` is a valid out-pointer.
        unsafe { sys::pthread_setcancelstate(sys::PTHREAD_CANCEL_DISABLE, &raw mut previous) };
        CancelOff { previous }
    }
}

impl Drop for CancelOff {
    fn drop(&mut self) {
        let mut replaced = sys::PTHREAD_CANCEL_DISABLE;
        // SAFETY: sets this thread's cancel state back; `replaced` is a valid out-pointer.
        unsafe { sys::pthread_setcancelstate(self.previous, &raw mut replaced) };
    }
}

/// Runs `body`; if it panics, logs the panic with `context`, counts it, and returns
/// `fallback` instead. Must be the outermost frame of every `extern "C"` callback; the
/// thread cannot be cancelled while it runs. The CPU time it took is counted under
/// `context`.
pub fn ffi_guard<R>(context: &'static str, fallback: R, body: impl FnOnce() -> R) -> R {
    let _cancel_off = CancelOff::hold();
    let (result, took) = cpu_time_of(|| contain(context, fallback, body));
    if let Some(took) = took {
        COSTS.with_borrow_mut(|costs| costs.entry(context).or_default().add(took));
    }
    result
}

fn contain<R>(context: &str, fallback: R, body: impl FnOnce() -> R) -> R {
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(value) => value,
        Err(payload) => {
            PANICS_CAUGHT.fetch_add(1, Ordering::Relaxed);
            // Logging may itself panic (e.g. a poisoned lock); that must not escape either.
            let message = panic_message(payload.as_ref());
            let _ = catch_unwind(|| tracing::error!("panic in {context} contained: {message}"));
            fallback
        }
    }
}

/// How many panics the barrier has contained since the module was loaded.
pub fn panics_caught() -> u64 {
    PANICS_CAUGHT.load(Ordering::Relaxed)
}

/// The text of a panic payload (`panic!` gives `&str` or `String`).
pub fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn returns_the_value_when_nothing_panics() {
        assert_eq!(ffi_guard("test", -1, || 7), 7);
    }

    #[test]
    fn contains_a_panic_and_counts_it() {
        let before = panics_caught();
        let rc = ffi_guard("test", -1, || -> i32 { panic!("boom {}", 42) });
        assert_eq!(rc, -1);
        assert!(panics_caught() > before);
    }

    #[test]
    fn counts_the_cpu_time_of_each_kind_of_callback() {
        // A fresh thread: the figures are per thread.
        let costs = std::thread::spawn(|| {
            ffi_guard("spin", (), || {
                let started = thread_cpu_time().unwrap();
                while thread_cpu_time().unwrap() - started < Duration::from_millis(3) {}
            });
            ffi_guard("spin", (), || {});
            ffi_guard("idle", (), || {});
            ffi_guard("idle", (), || {});
            // A kind of its own: the panic hook runs inside the callback, and with
            // RUST_BACKTRACE=1 its backtrace alone costs about 200 ms of CPU.
            ffi_guard("panicked", (), || -> () { panic!("counted too") });
            callback_costs()
        })
        .join()
        .unwrap();
        let (spin, idle, panicked) = (costs["spin"], costs["idle"], costs["panicked"]);
        assert_eq!((spin.calls, idle.calls, panicked.calls), (2, 2, 1));
        assert!(
            spin.over_bound >= 1,
            "the 3 ms one is over the bound: {spin:?}"
        );
        assert!(spin.longest >= Duration::from_millis(3), "{spin:?}");
        assert!(spin.total >= spin.longest, "{spin:?}");
        assert!(idle.longest < spin.longest, "{idle:?} {spin:?}");
        assert!(
            panicked.longest > Duration::ZERO,
            "its time is counted: {panicked:?}"
        );
        let json = serde_json::to_value(spin).unwrap();
        assert!(json["cpu_ms_longest"].as_f64().unwrap() >= 3.0, "{json}");
        assert_eq!(json["calls"], 2);
        assert_eq!(json["calls_over_1ms"], spin.over_bound);
    }

    #[test]
    fn extracts_both_payload_kinds() {
        let owned = catch_unwind(|| panic!("owned {}", 1)).unwrap_err();
        assert_eq!(panic_message(owned.as_ref()), "owned 1");
        let borrowed = catch_unwind(|| std::panic::panic_any("static")).unwrap_err();
        assert_eq!(panic_message(borrowed.as_ref()), "static");
    }
}
