//! The module's broker handle, confined to the module thread.

use std::ffi::{CStr, CString, c_char};
use std::marker::PhantomData;
use std::ptr::{self, NonNull};

use super::error::{FluxError, Result, check};
use super::msg::Message;
use crate::sys;

/// Syslog priorities accepted by `flux_log`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogLevel {
    /// `LOG_ERR`: something failed.
    Err,
    /// `LOG_WARNING`: something is wrong and being handled.
    Warning,
    /// `LOG_INFO`: what the module did.
    Info,
    /// `LOG_DEBUG`: detail, shown only when the broker's log level asks for it.
    Debug,
}

impl LogLevel {
    fn priority(self) -> i32 {
        match self {
            LogLevel::Err => sys::LOG_ERR,
            LogLevel::Warning => sys::LOG_WARNING,
            LogLevel::Info => sys::LOG_INFO,
            LogLevel::Debug => sys::LOG_DEBUG,
        }
    }
}

/// The `flux_t` the broker passes to `mod_main`.
///
/// The broker owns it; it stays valid until `mod_main` returns. No man page promises
/// that a handle is thread safe, so this type is neither `Send` nor `Sync`: other
/// threads reach the module through channels and a [`super::Wakeup`].
#[derive(Clone)]
pub struct Handle {
    raw: NonNull<sys::flux_t>,
    _thread_bound: PhantomData<*mut ()>,
}

impl Handle {
    /// Wraps the handle given to `mod_main` or to a callback.
    ///
    /// # Safety
    /// `raw` must be a live broker handle, and the returned value must only be used on
    /// the thread the broker runs the module on, while the handle is live.
    pub unsafe fn from_raw(raw: *mut sys::flux_t) -> Option<Handle> {
        NonNull::new(raw).map(|raw| Handle {
            raw,
            _thread_bound: PhantomData,
        })
    }

    pub(crate) fn as_ptr(&self) -> *mut sys::flux_t {
        self.raw.as_ptr()
    }

    /// This broker's rank.
    pub fn rank(&self) -> Result<u32> {
        let mut rank = 0;
        // SAFETY: the handle is live (type invariant); `rank` is a valid out-pointer.
        let rc = unsafe { sys::flux_get_rank(self.as_ptr(), &raw mut rank) };
        check(rc, "flux_get_rank")?;
        Ok(rank)
    }

    /// The instance size: every configured rank, running or not.
    pub fn size(&self) -> Result<u32> {
        let mut size = 0;
        // SAFETY: the handle is live (type invariant); `size` is a valid out-pointer.
        let rc = unsafe { sys::flux_get_size(self.as_ptr(), &raw mut size) };
        check(rc, "flux_get_size")?;
        Ok(size)
    }

    /// A broker attribute (`hostname`, `hostlist`, ...), if set.
    pub fn attr(&self, name: &str) -> Option<String> {
        let name = CString::new(name).ok()?;
        // SAFETY: the handle is live; `name` is NUL-terminated and outlives the call.
        let value = unsafe { sys::flux_attr_get(self.as_ptr(), name.as_ptr()) };
        // SAFETY: NULL or a NUL-terminated string owned by the handle's attribute cache,
        // copied before any other call can change the cache.
        unsafe { copy_c_string(value) }
    }

    /// The name the broker loaded this module under (`flux::name`): it is the service
    /// name and the log prefix.
    pub fn module_name(&self) -> Option<String> {
        // SAFETY: the handle is live; the key is a static NUL-terminated string.
        let value = unsafe { sys::flux_aux_get(self.as_ptr(), c"flux::name".as_ptr()) };
        // SAFETY: NULL or the module name, a NUL-terminated string that lives as long as
        // the handle.
        unsafe { copy_c_string(value as *const c_char) }
    }

    /// The broker config's `[table]`, as JSON text, if the table exists.
    pub fn conf_table(&self, table: &str) -> Result<Option<String>> {
        // SAFETY: the handle is live; the result is owned by the handle (may be NULL).
        let conf = unsafe { sys::flux_get_conf(self.as_ptr()) };
        conf_table(conf, table)
    }

    /// The reactor's cached clock, in seconds.
    pub fn now(&self) -> f64 {
        // SAFETY: the handle is live, so is its reactor.
        unsafe {
            let reactor = sys::flux_get_reactor(self.as_ptr());
            sys::flux_reactor_now_update(reactor);
            sys::flux_reactor_now(reactor)
        }
    }

    /// Runs the reactor until [`Handle::stop`] (or `<name>.shutdown`). Entering it marks
    /// the module running, which lets `flux module load` return.
    pub fn run(&self) -> Result<()> {
        // SAFETY: the handle is live; the reactor belongs to it.
        let rc = unsafe { sys::flux_reactor_run(sys::flux_get_reactor(self.as_ptr()), 0) };
        check(rc, "flux_reactor_run")
    }

    /// Makes [`Handle::run`] return.
    pub fn stop(&self) {
        // SAFETY: the handle is live; the reactor belongs to it.
        unsafe { sys::flux_reactor_stop(sys::flux_get_reactor(self.as_ptr())) }
    }

    /// Writes one line to the broker log (`flux dmesg`). The text is passed as the
    /// argument of a `"%s"` format, never as the format itself.
    pub fn log(&self, level: LogLevel, text: &str) {
        let text = to_cstring_lossy(text);
        // SAFETY: the handle is live; format and argument are NUL-terminated and the
        // format consumes exactly one string argument.
        unsafe {
            sys::flux_log(
                self.as_ptr(),
                level.priority(),
                c"%s".as_ptr(),
                text.as_ptr(),
            );
        }
    }

    /// Answers a request with a JSON payload.
    pub fn respond(&self, request: &Message<'_>, payload: &str) -> Result<()> {
        let payload =
            CString::new(payload).map_err(|_| FluxError::new("flux_respond", libc::EINVAL))?;
        // SAFETY: the handle and request are live; payload is NUL-terminated.
        let rc = unsafe { sys::flux_respond(self.as_ptr(), request.as_ptr(), payload.as_ptr()) };
        check(rc, "flux_respond")
    }

    /// Answers a request with an error number and message.
    pub fn respond_error(&self, request: &Message<'_>, errnum: i32, text: &str) -> Result<()> {
        let text = to_cstring_lossy(text);
        // SAFETY: the handle and request are live; text is NUL-terminated.
        let rc = unsafe {
            sys::flux_respond_error(self.as_ptr(), request.as_ptr(), errnum, text.as_ptr())
        };
        check(rc, "flux_respond_error")
    }

    /// Takes a config sent with `<name>.config-reload`, makes it the handle's config
    /// (what the default handler would have done) and returns its `[table]` as JSON.
    pub fn accept_config_reload(
        &self,
        request: &Message<'_>,
        table: &str,
    ) -> Result<Option<String>> {
        let mut conf = ptr::null_mut();
        // SAFETY: the request is live; `conf` is a valid out-pointer.
        let rc = unsafe { sys::flux_module_config_request_decode(request.as_ptr(), &raw mut conf) };
        check(rc, "flux_module_config_request_decode")?;
        let json = conf_table(conf, table);
        // SAFETY: the handle is live; on success it takes our reference to `conf`.
        let rc = unsafe { sys::flux_set_conf_new(self.as_ptr(), conf) };
        if rc < 0 {
            let err = FluxError::last("flux_set_conf_new");
            // SAFETY: the handle did not take `conf`, so our reference is dropped here.
            unsafe { sys::flux_conf_decref(conf) };
            return Err(err);
        }
        json
    }
}

fn conf_table(conf: *const sys::flux_conf_t, table: &str) -> Result<Option<String>> {
    if conf.is_null() {
        return Ok(None);
    }
    let key = CString::new(table).map_err(|_| FluxError::new("flux_conf_unpack", libc::EINVAL))?;
    let mut object: *mut sys::json_t = ptr::null_mut();
    let mut error = sys::flux_error_t { text: [0; 160] };
    // SAFETY: `conf` is a live config; the format "{s?o}" takes one key string and one
    // `json_t **` out-pointer, which is what follows it. The object is borrowed from conf.
    let rc = unsafe {
        sys::flux_conf_unpack(
            conf,
            &raw mut error,
            c"{s?o}".as_ptr(),
            key.as_ptr(),
            &raw mut object,
        )
    };
    check(rc, "flux_conf_unpack")?;
    if object.is_null() {
        return Ok(None);
    }
    // SAFETY: `object` is a live json_t borrowed from conf; json_dumps returns a malloc'd
    // string or NULL.
    let text = unsafe { sys::json_dumps(object, sys::JSON_COMPACT | sys::JSON_ENCODE_ANY) };
    if text.is_null() {
        return Err(FluxError::new("json_dumps", libc::ENOMEM));
    }
    // SAFETY: `text` is a NUL-terminated malloc'd string; it is copied, then freed once.
    let json = unsafe {
        let json = CStr::from_ptr(text).to_string_lossy().into_owned();
        libc::free(text.cast());
        json
    };
    Ok(Some(json))
}

/// Copies a C string the library owns; `None` for NULL.
///
/// # Safety
/// `text` must be NULL or point to a NUL-terminated string valid for this call.
pub(crate) unsafe fn copy_c_string(text: *const c_char) -> Option<String> {
    if text.is_null() {
        return None;
    }
    // SAFETY: non-NULL `text` is a valid NUL-terminated string (caller).
    let text = unsafe { CStr::from_ptr(text) };
    Some(text.to_string_lossy().into_owned())
}

/// C strings cannot hold NUL: a stray one is shown as U+FFFD rather than cutting the text.
pub(crate) fn to_cstring_lossy(text: &str) -> CString {
    CString::new(text.replace('\0', "\u{fffd}")).expect("NULs were replaced")
}
