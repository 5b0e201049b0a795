//! Requests and the handlers that receive them.

use std::cell::RefCell;
use std::ffi::{CStr, CString, c_void};
use std::marker::PhantomData;
use std::ptr::{self, NonNull};
use std::rc::Rc;

use super::callback::{Slot, new_slot, slot_arg, with_slot};
use super::error::{FluxError, Result, check, check_ptr};
use super::guard::{CancelOff, ffi_guard};
use super::handle::{Handle, copy_c_string};
use crate::sys;

/// A message borrowed from the broker for the duration of a callback.
pub struct Message<'a> {
    raw: NonNull<sys::flux_msg_t>,
    _borrow: PhantomData<&'a sys::flux_msg_t>,
}

impl Message<'_> {
    pub(crate) fn as_ptr(&self) -> *const sys::flux_msg_t {
        self.raw.as_ptr()
    }

    /// The message topic, e.g. `fluxk8s.status`.
    pub fn topic(&self) -> Result<String> {
        let mut topic = ptr::null();
        // SAFETY: the message is live for 'a; `topic` is a valid out-pointer.
        let rc = unsafe { sys::flux_msg_get_topic(self.as_ptr(), &raw mut topic) };
        check(rc, "flux_msg_get_topic")?;
        // SAFETY: on success `topic` is a NUL-terminated string inside the message.
        Ok(unsafe { copy_c_string(topic) }.unwrap_or_default())
    }

    /// The request's JSON payload, or `None` if it has none. A payload that is not
    /// valid UTF-8 is an error (EPROTO), as flux treats a bad payload.
    pub fn payload(&self) -> Result<Option<String>> {
        let mut payload = ptr::null();
        // SAFETY: the message is live; the topic out-pointer may be NULL; `payload` is a
        // valid out-pointer.
        let rc =
            unsafe { sys::flux_request_decode(self.as_ptr(), ptr::null_mut(), &raw mut payload) };
        check(rc, "flux_request_decode")?;
        if payload.is_null() {
            return Ok(None);
        }
        // SAFETY: a non-NULL payload is a NUL-terminated string inside the message.
        let text = unsafe { CStr::from_ptr(payload) };
        text.to_str()
            .map(|s| Some(s.to_owned()))
            .map_err(|_| FluxError::new("flux_request_decode", libc::EPROTO))
    }

    /// The role mask of the sender (`FLUX_ROLE_OWNER`, `FLUX_ROLE_USER`).
    pub fn is_owner(&self) -> bool {
        let mut rolemask = 0;
        // SAFETY: the message is live; `rolemask` is a valid out-pointer.
        let rc = unsafe { sys::flux_msg_get_rolemask(self.as_ptr(), &raw mut rolemask) };
        rc == 0 && rolemask & sys::FLUX_ROLE_OWNER != 0
    }

    /// Whether the request was sent with `FLUX_RPC_STREAMING`: it takes any number of
    /// responses, ended by an error response.
    pub fn is_streaming(&self) -> bool {
        // SAFETY: the message is live for 'a.
        unsafe { sys::flux_msg_is_streaming(self.as_ptr()) }
    }

    /// Whether this `<service>.disconnect` request comes from the sender of `request`,
    /// with the credentials to speak for it (libflux's `flux_disconnect_match`).
    pub fn disconnects(&self, request: &Message<'_>) -> bool {
        // SAFETY: both messages are live for this call.
        unsafe { sys::flux_disconnect_match(self.as_ptr(), request.as_ptr()) }
    }

    /// Whether this cancel request (`{"matchtag": N}`) names `request`: same sender,
    /// credentials to speak for it, and its matchtag (libflux's `flux_cancel_match`).
    pub fn cancels(&self, request: &Message<'_>) -> bool {
        // SAFETY: both messages are live for this call.
        unsafe { sys::flux_cancel_match(self.as_ptr(), request.as_ptr()) }
    }

    /// Keeps the message past the callback: a streaming request is answered later.
    pub fn hold(&self) -> HeldMessage {
        // SAFETY: the message is live; the reference taken here is dropped exactly once,
        // by HeldMessage's Drop. incref returns its argument.
        unsafe { sys::flux_msg_incref(self.as_ptr()) };
        HeldMessage { raw: self.raw }
    }
}

/// A reference to a request kept after its handler returned (`flux_msg_incref`),
/// dropped with `flux_msg_decref`.
pub struct HeldMessage {
    raw: NonNull<sys::flux_msg_t>,
}

impl HeldMessage {
    /// The message, to respond to or compare with.
    pub fn message(&self) -> Message<'_> {
        Message {
            raw: self.raw,
            _borrow: PhantomData,
        }
    }
}

impl Drop for HeldMessage {
    fn drop(&mut self) {
        // SAFETY: `raw` holds the reference taken in Message::hold, dropped once here.
        unsafe { sys::flux_msg_decref(self.raw.as_ptr()) };
    }
}

/// Who may send a request to a handler. The instance owner always may.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// The instance owner only (the broker answers EPERM to anyone else).
    Owner,
    /// Any user the instance admits, guests included.
    AnyUser,
}

type HandlerFn = dyn FnMut(&Handle, &Message<'_>);

/// A request handler for one topic; destroyed (and unregistered) on drop.
pub struct MsgHandler {
    raw: NonNull<sys::flux_msg_handler_t>,
    _slot: Box<Slot<HandlerFn>>,
}

impl MsgHandler {
    /// Registers `callback` for requests whose topic is exactly `topic`, and starts it.
    /// A later handler for the same topic takes precedence over the broker's default.
    pub fn request(
        handle: &Handle,
        topic: &str,
        access: Access,
        callback: impl FnMut(&Handle, &Message<'_>) + 'static,
    ) -> Result<MsgHandler> {
        let topic_c = CString::new(topic)
            .map_err(|_| FluxError::new("flux_msg_handler_create", libc::EINVAL))?;
        let slot = new_slot(Rc::new(RefCell::new(callback)) as Slot<HandlerFn>);
        let matcher = sys::flux_match {
            typemask: sys::FLUX_MSGTYPE_REQUEST,
            matchtag: sys::FLUX_MATCHTAG_NONE,
            topic_glob: topic_c.as_ptr(),
        };
        // SAFETY: the handle is live; flux_msg_handler_create copies the match (topic
        // included); the slot box outlives the handler (it is dropped after it).
        let raw = unsafe {
            sys::flux_msg_handler_create(
                handle.as_ptr(),
                matcher,
                Some(handler_trampoline),
                slot_arg(&slot),
            )
        };
        let raw = check_ptr(raw, "flux_msg_handler_create")?;
        if access == Access::AnyUser {
            // SAFETY: `raw` is the live handler just created.
            unsafe { sys::flux_msg_handler_allow_rolemask(raw.as_ptr(), sys::FLUX_ROLE_USER) };
        }
        // SAFETY: `raw` is the live handler just created.
        unsafe { sys::flux_msg_handler_start(raw.as_ptr()) };
        Ok(MsgHandler { raw, _slot: slot })
    }
}

impl Drop for MsgHandler {
    fn drop(&mut self) {
        // SAFETY: `raw` is live until here and destroyed exactly once; the slot box is
        // freed after this, so C never sees a dangling `arg`.
        unsafe { sys::flux_msg_handler_destroy(self.raw.as_ptr()) };
    }
}

extern "C" fn handler_trampoline(
    h: *mut sys::flux_t,
    _mh: *mut sys::flux_msg_handler_t,
    msg: *const sys::flux_msg_t,
    arg: *mut c_void,
) {
    // Also over the error answer after a contained panic, which is outside ffi_guard.
    let _cancel_off = CancelOff::hold();
    // SAFETY: the broker calls this on the module thread with its live handle.
    let Some(handle) = (unsafe { Handle::from_raw(h) }) else {
        return;
    };
    let Some(raw) = NonNull::new(msg.cast_mut()) else {
        return;
    };
    let message = Message {
        raw,
        _borrow: PhantomData,
    };
    let answered = ffi_guard("request handler", false, || {
        // SAFETY: `arg` was made by slot_arg on the MsgHandler's box, alive while the
        // handler exists, and the handler exists while the broker calls it.
        unsafe { with_slot::<HandlerFn>(arg, "request handler", |cb| cb(&handle, &message)) };
        true
    });
    if !answered {
        // The handler panicked before answering: a requester must never hang.
        let _ = handle.respond_error(&message, libc::EIO, "fluxk8s internal error (contained)");
    }
}
