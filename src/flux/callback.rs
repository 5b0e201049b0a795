//! Shared plumbing for C callbacks: each watcher, handler or future owns a boxed
//! [`Slot`] whose address is the C `arg`. The trampoline clones the `Rc` before calling,
//! so a callback may drop its own owner (destroying the C object, as flux C code does
//! in continuations) without freeing the closure it is running.

use std::cell::RefCell;
use std::ffi::c_void;
use std::rc::Rc;

pub(crate) type Slot<F> = Rc<RefCell<F>>;

/// Allocates the slot C will see as `arg`. The box must outlive the C object.
pub(crate) fn new_slot<F: ?Sized>(callback: Slot<F>) -> Box<Slot<F>> {
    Box::new(callback)
}

pub(crate) fn slot_arg<F: ?Sized>(slot: &Slot<F>) -> *mut c_void {
    (&raw const *slot).cast_mut().cast()
}

/// Runs the callback behind `arg`.
///
/// # Safety
/// `arg` must come from [`slot_arg`] on a box that is still alive at entry.
pub(crate) unsafe fn with_slot<F: ?Sized>(
    arg: *mut c_void,
    context: &str,
    call: impl FnOnce(&mut F),
) {
    // SAFETY: the caller guarantees `arg` points at a live `Slot<F>`; it is cloned at
    // once so the closure survives its owner being dropped during the call.
    let slot: Slot<F> = unsafe { (*(arg as *const Slot<F>)).clone() };
    match slot.try_borrow_mut() {
        Ok(mut callback) => call(&mut callback),
        // The reactor does not nest callbacks; reaching this would be a re-entrancy bug.
        Err(_) => tracing::error!("{context}: callback re-entered, event dropped"),
    };
}
