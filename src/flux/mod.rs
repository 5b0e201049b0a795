//! The safe layer over the broker's C API, and the module's C entry point (`entry.rs`).
//! Every `unsafe` block of the crate is here.
//!
//! Everything in this module runs on the module thread (the handle is `!Send`), except
//! [`Waker`], which other threads use to wake the reactor.

#![deny(missing_docs)]

mod callback;
mod entry;
mod error;
mod guard;
mod handle;
mod log;
mod msg;
mod rpc;
mod wake;
mod watcher;

pub(crate) use entry::flux_module;
pub use entry::{BrokerModule, LoadError, ReactorEnd, module_main};
pub use error::{FluxError, Result};
pub use guard::{
    CALLBACK_BOUND, CallbackCost, callback_costs, cpu_time_of, ffi_guard, panic_message,
    panics_caught, thread_cpu_time,
};
pub use handle::{Handle, LogLevel};
pub use log::{ForwardedLogs, LogFilter, LogLine, dispatcher};
pub use msg::{Access, HeldMessage, Message, MsgHandler};
pub use rpc::{NODEID_ANY, Rpc, RpcError};
pub use wake::{Waker, Wakeup};
pub use watcher::Watcher;
