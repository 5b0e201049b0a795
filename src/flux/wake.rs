//! Cross-thread wake-ups for the module's reactor: an eventfd that worker threads write
//! and a reactor fd watcher reads.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Arc;

/// The reading end, kept by the module thread.
pub struct Wakeup {
    fd: Arc<OwnedFd>,
}

/// The writing end; cheap to clone, usable from any thread.
#[derive(Clone)]
pub struct Waker {
    fd: Arc<OwnedFd>,
}

impl Wakeup {
    /// A fresh eventfd, non-blocking and close-on-exec.
    pub fn new() -> io::Result<Wakeup> {
        // SAFETY: eventfd has no pointer arguments; the result is checked below.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a fresh descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Wakeup { fd: Arc::new(fd) })
    }

    /// A writing end for another thread.
    pub fn waker(&self) -> Waker {
        Waker {
            fd: Arc::clone(&self.fd),
        }
    }

    /// The descriptor to watch for readability.
    pub fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// Clears pending wake-ups; returns how many were coalesced since the last call.
    pub fn clear(&self) -> u64 {
        let mut count = 0u64;
        // SAFETY: reads 8 bytes into a u64 from an eventfd we own; EAGAIN (nothing
        // pending) leaves `count` at 0.
        let n = unsafe { libc::read(self.fd(), (&raw mut count).cast(), 8) };
        if n == 8 { count } else { 0 }
    }
}

impl Waker {
    /// Wakes the reactor. Never blocks: the eventfd counter saturates rather than blocking
    /// only after 2^64-2 unread wake-ups.
    pub fn wake(&self) {
        let one = 1u64;
        // SAFETY: writes 8 bytes from a live u64 to an eventfd kept open by the Arc.
        unsafe { libc::write(self.fd.as_raw_fd(), (&raw const one).cast(), 8) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wakes_from_another_thread_and_coalesces() {
        let wakeup = Wakeup::new().unwrap();
        assert_eq!(wakeup.clear(), 0);
        let waker = wakeup.waker();
        std::thread::spawn(move || {
            waker.wake();
            waker.wake();
        })
        .join()
        .unwrap();
        assert_eq!(wakeup.clear(), 2);
        assert_eq!(wakeup.clear(), 0);
    }
}
