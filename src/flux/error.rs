//! Errors from the broker's C API, with errno captured right at the failing call.

use std::io;

/// A libflux call failed: which call, and the errno it left.
#[derive(Debug, thiserror::Error)]
#[error("{call}: {source}")]
pub struct FluxError {
    /// The C function that failed.
    pub call: &'static str,
    /// The errno it left.
    #[source]
    pub source: io::Error,
}

impl FluxError {
    /// Captures errno for a call that just failed. Call it before anything else can
    /// overwrite errno.
    pub(crate) fn last(call: &'static str) -> Self {
        Self {
            call,
            source: io::Error::last_os_error(),
        }
    }

    pub(crate) fn new(call: &'static str, errno: i32) -> Self {
        Self {
            call,
            source: io::Error::from_raw_os_error(errno),
        }
    }

    /// The errno to hand back to C (EIO if the error carried none).
    pub fn errno(&self) -> i32 {
        self.source.raw_os_error().unwrap_or(libc::EIO)
    }
}

/// The result of a call into libflux.
pub type Result<T> = std::result::Result<T, FluxError>;

/// Maps a C status return (`-1` = failure, errno set) to a `Result`.
pub(crate) fn check(rc: i32, call: &'static str) -> Result<()> {
    if rc < 0 {
        Err(FluxError::last(call))
    } else {
        Ok(())
    }
}

/// Maps a C pointer return (NULL = failure, errno set) to a `Result`.
pub(crate) fn check_ptr<T>(ptr: *mut T, call: &'static str) -> Result<std::ptr::NonNull<T>> {
    std::ptr::NonNull::new(ptr).ok_or_else(|| FluxError::last(call))
}
