//! The panic barrier: no Rust panic may unwind into the broker (it would abort the
//! whole broker process), so every entry from C runs inside [`ffi_guard`].

use std::any::Any;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicU64, Ordering};

static PANICS_CAUGHT: AtomicU64 = AtomicU64::new(0);

/// Runs `body`; if it panics, logs the panic with `context`, counts it, and returns
/// `fallback` instead. Must be the outermost frame of every `extern "C"` callback.
pub fn ffi_guard<R>(context: &str, fallback: R, body: impl FnOnce() -> R) -> R {
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
    fn extracts_both_payload_kinds() {
        let owned = catch_unwind(|| panic!("owned {}", 1)).unwrap_err();
        assert_eq!(panic_message(owned.as_ref()), "owned 1");
        let borrowed = catch_unwind(|| std::panic::panic_any("static")).unwrap_err();
        assert_eq!(panic_message(borrowed.as_ref()), "static");
    }
}
