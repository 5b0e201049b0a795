//! RPCs with continuations on the module's reactor, plain or streaming.

use std::cell::RefCell;
use std::ffi::{CString, c_void};
use std::ptr::{self, NonNull};
use std::rc::Rc;

use super::callback::{Slot, new_slot, slot_arg, with_slot};
use super::error::{FluxError, Result, check, check_ptr};
use super::guard::ffi_guard;
use super::handle::{Handle, copy_c_string};
use crate::sys;

/// Send to any broker that provides the service (flux routes it), normally the local one.
pub const NODEID_ANY: u32 = sys::FLUX_NODEID_ANY;

/// An error response: errno and the server's message (or strerror if it sent none).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message} (errno {errno})")]
pub struct RpcError {
    /// The errno of the error response.
    pub errno: i32,
    /// The server's message, or strerror of `errno` if it sent none.
    pub message: String,
}

impl RpcError {
    /// ENODATA ends a stream normally (e.g. the resource module unloading).
    pub fn is_end_of_stream(&self) -> bool {
        self.errno == libc::ENODATA
    }
}

type ReplyFn = dyn FnMut(&Handle, std::result::Result<String, RpcError>);

struct Pending {
    handle: *mut sys::flux_t,
    streaming: bool,
    callback: Slot<ReplyFn>,
}

/// An RPC in flight. Dropping it destroys the future: no more replies are delivered.
/// A stream stays open until an error reply (ENODATA at a normal end) or the drop.
pub struct Rpc {
    raw: NonNull<sys::flux_future_t>,
    _pending: Box<Slot<Pending>>,
}

impl Rpc {
    /// Sends `payload` (JSON, or no payload at all) to `topic` and calls `on_reply` for
    /// each reply on the module's reactor. With `streaming`, replies keep coming until an
    /// error reply.
    pub fn call(
        handle: &Handle,
        topic: &str,
        payload: Option<&str>,
        nodeid: u32,
        streaming: bool,
        on_reply: impl FnMut(&Handle, std::result::Result<String, RpcError>) + 'static,
    ) -> Result<Rpc> {
        Self::send(handle, topic, payload, nodeid, streaming, -1.0, on_reply)
    }

    /// Like [`Rpc::call`] for one reply, which must come within `timeout` seconds: past
    /// that `on_reply` gets ETIMEDOUT, so a stalled service cannot stall the caller.
    pub fn call_within(
        handle: &Handle,
        topic: &str,
        payload: Option<&str>,
        nodeid: u32,
        timeout: f64,
        on_reply: impl FnMut(&Handle, std::result::Result<String, RpcError>) + 'static,
    ) -> Result<Rpc> {
        Self::send(handle, topic, payload, nodeid, false, timeout, on_reply)
    }

    /// Sends a one-way request (`FLUX_RPC_NORESPONSE`): the service sends no response,
    /// so success means it was sent.
    pub fn send_one_way(handle: &Handle, topic: &str, payload: &str, nodeid: u32) -> Result<()> {
        let topic_c = CString::new(topic).map_err(|_| FluxError::new("flux_rpc", libc::EINVAL))?;
        let payload_c =
            CString::new(payload).map_err(|_| FluxError::new("flux_rpc", libc::EINVAL))?;
        // SAFETY: the handle is live; topic and payload are NUL-terminated and copied into
        // the request before flux_rpc returns.
        let raw = unsafe {
            sys::flux_rpc(
                handle.as_ptr(),
                topic_c.as_ptr(),
                payload_c.as_ptr(),
                nodeid,
                sys::FLUX_RPC_NORESPONSE,
            )
        };
        let raw = check_ptr(raw, "flux_rpc")?;
        // SAFETY: the future of a one-way request is fulfilled at once and owned by us;
        // it is destroyed exactly once, here.
        unsafe { sys::flux_future_destroy(raw.as_ptr()) };
        Ok(())
    }

    fn send(
        handle: &Handle,
        topic: &str,
        payload: Option<&str>,
        nodeid: u32,
        streaming: bool,
        timeout: f64,
        on_reply: impl FnMut(&Handle, std::result::Result<String, RpcError>) + 'static,
    ) -> Result<Rpc> {
        let topic_c = CString::new(topic).map_err(|_| FluxError::new("flux_rpc", libc::EINVAL))?;
        let payload_c = payload
            .map(CString::new)
            .transpose()
            .map_err(|_| FluxError::new("flux_rpc", libc::EINVAL))?;
        let flags = if streaming {
            sys::FLUX_RPC_STREAMING
        } else {
            0
        };
        // SAFETY: the handle is live; topic and payload are NUL-terminated and copied
        // into the request message before flux_rpc returns.
        let raw = unsafe {
            sys::flux_rpc(
                handle.as_ptr(),
                topic_c.as_ptr(),
                payload_c.as_ref().map_or(ptr::null(), |p| p.as_ptr()),
                nodeid,
                flags,
            )
        };
        let raw = check_ptr(raw, "flux_rpc")?;
        let pending = new_slot(Rc::new(RefCell::new(Pending {
            handle: handle.as_ptr(),
            streaming,
            callback: Rc::new(RefCell::new(on_reply)) as Slot<ReplyFn>,
        })));
        let rpc = Rpc {
            raw,
            _pending: pending,
        };
        // SAFETY: the future is live; the slot box lives as long as `rpc`, which destroys
        // the future before freeing it. A negative timeout means none.
        let rc = unsafe {
            sys::flux_future_then(
                rpc.raw.as_ptr(),
                timeout,
                Some(reply_trampoline),
                slot_arg(&rpc._pending),
            )
        };
        check(rc, "flux_future_then")?;
        Ok(rpc)
    }
}

impl Drop for Rpc {
    fn drop(&mut self) {
        // SAFETY: the future is live until here and destroyed exactly once, before its
        // slot box is freed.
        unsafe { sys::flux_future_destroy(self.raw.as_ptr()) };
    }
}

extern "C" fn reply_trampoline(f: *mut sys::flux_future_t, arg: *mut c_void) {
    ffi_guard("rpc continuation", (), || {
        // SAFETY: `arg` comes from slot_arg on the Rpc's box, which outlives the future.
        unsafe {
            with_slot::<Pending>(arg, "rpc continuation", |pending| {
                let reply = take_reply(f, pending.streaming);
                // SAFETY: the handle the RPC was sent on is live while its future is.
                let Some(handle) = Handle::from_raw(pending.handle) else {
                    return;
                };
                // Cloned so the owner may drop the Rpc (and this slot) inside the callback.
                let callback = pending.callback.clone();
                let mut callback = callback.borrow_mut();
                callback(&handle, reply);
            })
        }
    });
}

/// Reads the reply out of `f`; for a stream, re-arms the future first so the callback
/// is free to destroy it.
///
/// # Safety
/// `f` must be a live future with a fulfilled reply.
unsafe fn take_reply(
    f: *mut sys::flux_future_t,
    streaming: bool,
) -> std::result::Result<String, RpcError> {
    let mut payload = ptr::null();
    // SAFETY: `f` is live and fulfilled (caller); `payload` is a valid out-pointer.
    if unsafe { sys::flux_rpc_get(f, &raw mut payload) } < 0 {
        let errno = std::io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EIO);
        // SAFETY: `f` is live; the result is NULL or a NUL-terminated string owned by
        // the future, copied at once.
        let message = unsafe { copy_c_string(sys::flux_future_error_string(f)) }
            .unwrap_or_else(|| std::io::Error::from_raw_os_error(errno).to_string());
        return Err(RpcError { errno, message });
    }
    // SAFETY: NULL or a NUL-terminated string owned by the future until it is reset.
    let text = unsafe { copy_c_string(payload) }.unwrap_or_default();
    if streaming {
        // SAFETY: `f` is live; resetting lets the next stream reply fulfil it.
        unsafe { sys::flux_future_reset(f) };
    }
    Ok(text)
}
