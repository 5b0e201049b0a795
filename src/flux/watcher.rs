//! Reactor watchers: file descriptors, timers, and the reactor's own turn.

use std::cell::RefCell;
use std::ffi::c_void;
use std::os::fd::RawFd;
use std::ptr::NonNull;
use std::rc::Rc;

use super::callback::{Slot, new_slot, slot_arg, with_slot};
use super::error::{Result, check_ptr};
use super::guard::ffi_guard;
use super::handle::Handle;
use crate::sys;

type WatchFn = dyn FnMut(&Handle);

/// A started watcher; stopped and destroyed on drop.
pub struct Watcher {
    raw: NonNull<sys::flux_watcher_t>,
    _slot: Box<Slot<WatchState>>,
}

struct WatchState {
    /// What the watcher is for: its callbacks' costs are counted under it.
    name: &'static str,
    handle: *mut sys::flux_t,
    callback: Slot<WatchFn>,
}

impl Watcher {
    /// Calls `callback` each time `fd` is readable; `name` says what for.
    pub fn readable(
        handle: &Handle,
        name: &'static str,
        fd: RawFd,
        callback: impl FnMut(&Handle) + 'static,
    ) -> Result<Watcher> {
        let slot = Self::slot(handle, name, callback);
        // SAFETY: the handle and its reactor are live; the fd stays open as long as the
        // caller keeps the watcher (the caller owns both); the slot outlives the watcher.
        let raw = unsafe {
            sys::flux_fd_watcher_create(
                sys::flux_get_reactor(handle.as_ptr()),
                fd,
                sys::FLUX_POLLIN,
                Some(watch_trampoline),
                slot_arg(&slot),
            )
        };
        Self::start(check_ptr(raw, "flux_fd_watcher_create")?, slot)
    }

    /// Calls `callback` once after `after` seconds, then every `repeat` seconds if
    /// `repeat` is positive; `name` says what for.
    pub fn timer(
        handle: &Handle,
        name: &'static str,
        after: f64,
        repeat: f64,
        callback: impl FnMut(&Handle) + 'static,
    ) -> Result<Watcher> {
        let slot = Self::slot(handle, name, callback);
        // SAFETY: the handle and its reactor are live; the slot outlives the watcher.
        let raw = unsafe {
            sys::flux_timer_watcher_create(
                sys::flux_get_reactor(handle.as_ptr()),
                after,
                repeat,
                Some(watch_trampoline),
                slot_arg(&slot),
            )
        };
        Self::start(check_ptr(raw, "flux_timer_watcher_create")?, slot)
    }

    /// Calls `callback` each time the reactor is about to wait for events (a libev
    /// prepare watcher): after the callbacks of one pass, before the next wait. `name`
    /// says what for.
    pub fn before_wait(
        handle: &Handle,
        name: &'static str,
        callback: impl FnMut(&Handle) + 'static,
    ) -> Result<Watcher> {
        let slot = Self::slot(handle, name, callback);
        // SAFETY: the handle and its reactor are live; the slot outlives the watcher.
        let raw = unsafe {
            sys::flux_prepare_watcher_create(
                sys::flux_get_reactor(handle.as_ptr()),
                Some(watch_trampoline),
                slot_arg(&slot),
            )
        };
        Self::start(check_ptr(raw, "flux_prepare_watcher_create")?, slot)
    }

    fn slot(
        handle: &Handle,
        name: &'static str,
        callback: impl FnMut(&Handle) + 'static,
    ) -> Box<Slot<WatchState>> {
        new_slot(Rc::new(RefCell::new(WatchState {
            name,
            handle: handle.as_ptr(),
            callback: Rc::new(RefCell::new(callback)) as Slot<WatchFn>,
        })))
    }

    fn start(raw: NonNull<sys::flux_watcher_t>, slot: Box<Slot<WatchState>>) -> Result<Watcher> {
        // SAFETY: `raw` is the live watcher just created.
        unsafe { sys::flux_watcher_start(raw.as_ptr()) };
        Ok(Watcher { raw, _slot: slot })
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        // SAFETY: `raw` is live until here and destroyed exactly once, before the slot box
        // is freed.
        unsafe {
            sys::flux_watcher_stop(self.raw.as_ptr());
            sys::flux_watcher_destroy(self.raw.as_ptr());
        }
    }
}

extern "C" fn watch_trampoline(
    _r: *mut sys::flux_reactor_t,
    _w: *mut sys::flux_watcher_t,
    _revents: i32,
    arg: *mut c_void,
) {
    // SAFETY: `arg` comes from slot_arg on the Watcher's box, alive while the watcher is.
    let slot = unsafe { &*(arg as *const Slot<WatchState>) };
    let name = slot.try_borrow().map_or("watcher", |state| state.name);
    ffi_guard(name, (), || {
        // SAFETY: `arg` comes from slot_arg on the Watcher's box, alive while the watcher is.
        unsafe {
            with_slot::<WatchState>(arg, "watcher", |state| {
                // SAFETY: the handle that owns the reactor is live while its watchers are.
                let Some(handle) = Handle::from_raw(state.handle) else {
                    return;
                };
                // Cloned so the owner may drop the Watcher inside the callback.
                let callback = state.callback.clone();
                let mut callback = callback.borrow_mut();
                callback(&handle);
            })
        }
    });
}
