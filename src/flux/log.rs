//! `tracing` to `flux_log`: events on the module thread go straight to the broker log;
//! events on any other thread (the Kubernetes worker) are queued and written by the
//! module thread, since only it may use the handle.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread::{self, ThreadId};

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};
use tracing_subscriber::{EnvFilter, Registry, reload};

use super::handle::{Handle, LogLevel};
use super::wake::Waker;

/// A log line from another thread, waiting for the module thread.
#[derive(Debug)]
pub struct LogLine {
    /// Its priority in the broker log.
    pub level: LogLevel,
    /// The message and its fields, formatted.
    pub text: String,
}

/// Lines the module thread writes to the broker log per wake-up at most: each costs it
/// a message to the broker, and a burst of hundreds (the HTTP stack at `debug`) held a
/// reactor callback for milliseconds. The rest wait for the next pass.
const LINES_PER_PASS: usize = 32;

/// Lines from other threads waiting at most; beyond, lines are counted and dropped, so a
/// flood cannot grow the module's memory without bound.
const QUEUED_LINES: usize = 1024;

/// The queue of [`LogLine`]s that the module thread writes out after each wake-up.
pub struct ForwardedLogs {
    rx: mpsc::Receiver<LogLine>,
    dropped: Arc<AtomicU64>,
    waker: Waker,
}

impl ForwardedLogs {
    /// Writes up to [`LINES_PER_PASS`] queued lines to the broker log, and wakes the
    /// reactor again when that many were written (more may wait).
    pub fn flush(&self, handle: &Handle) {
        if self.write(handle, LINES_PER_PASS) == LINES_PER_PASS {
            self.waker.wake();
        }
    }

    /// Writes every queued line: at unload, once the other threads have stopped.
    pub fn flush_all(&self, handle: &Handle) {
        self.write(handle, usize::MAX);
    }

    /// Writes up to `most` lines, then says how many were dropped since; returns the
    /// number written.
    fn write(&self, handle: &Handle, most: usize) -> usize {
        let mut written = 0;
        while written < most {
            let Ok(line) = self.rx.try_recv() else { break };
            handle.log(line.level, &line.text);
            written += 1;
        }
        let dropped = self.dropped.swap(0, Ordering::Relaxed);
        if dropped > 0 {
            handle.log(
                LogLevel::Warning,
                &format!(
                    "{dropped} log lines of other threads dropped: {QUEUED_LINES} were waiting"
                ),
            );
        }
        written
    }
}

struct FluxLogLayer {
    /// The module's `flux_t`, only ever dereferenced on `owner`.
    handle: usize,
    owner: ThreadId,
    forward: Mutex<mpsc::SyncSender<LogLine>>,
    dropped: Arc<AtomicU64>,
    waker: Waker,
}

/// Which events reach the broker log; changed by a configuration reload. Events it
/// leaves out are never formatted or queued.
pub struct LogFilter(reload::Handle<EnvFilter, Registry>);

impl LogFilter {
    /// Replaces the filter; events already queued from other threads are kept.
    pub fn set(&self, filter: EnvFilter) -> Result<(), String> {
        self.0.reload(filter).map_err(|e| e.to_string())
    }
}

/// Builds the dispatcher that sends `tracing` events that `filter` lets through to the
/// broker log. Install it with `tracing::dispatcher::set_default` on the module thread
/// and on each worker thread (never as the process-wide default: the broker may load the
/// module more than once).
pub fn dispatcher(
    handle: &Handle,
    waker: Waker,
    filter: EnvFilter,
) -> (tracing::Dispatch, ForwardedLogs, LogFilter) {
    let (tx, rx) = mpsc::sync_channel(QUEUED_LINES);
    let dropped = Arc::new(AtomicU64::new(0));
    let layer = FluxLogLayer {
        handle: handle.as_ptr() as usize,
        owner: thread::current().id(),
        forward: Mutex::new(tx),
        dropped: Arc::clone(&dropped),
        waker: waker.clone(),
    };
    let (filter, reload) = reload::Layer::new(filter);
    let subscriber = Registry::default().with(filter).with(layer);
    (
        tracing::Dispatch::new(subscriber),
        ForwardedLogs { rx, dropped, waker },
        LogFilter(reload),
    )
}

fn level_of(level: &Level) -> LogLevel {
    match *level {
        Level::ERROR => LogLevel::Err,
        Level::WARN => LogLevel::Warning,
        Level::INFO => LogLevel::Info,
        _ => LogLevel::Debug,
    }
}

impl<S: Subscriber> Layer<S> for FluxLogLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let mut text = MessageText::default();
        event.record(&mut text);
        let level = level_of(event.metadata().level());
        if thread::current().id() == self.owner {
            // SAFETY: we are on the module thread, where the handle lives until mod_main
            // returns; the dispatcher is uninstalled before that.
            if let Some(handle) = unsafe { Handle::from_raw(self.handle as *mut _) } {
                handle.log(level, &text.0);
            }
        } else if let Ok(tx) = self.forward.lock() {
            // The module thread may already be gone at shutdown; then there is no log.
            match tx.try_send(LogLine {
                level,
                text: text.0,
            }) {
                Ok(()) => self.waker.wake(),
                Err(mpsc::TrySendError::Full(_)) => {
                    self.dropped.fetch_add(1, Ordering::Relaxed);
                }
                Err(mpsc::TrySendError::Disconnected(_)) => {}
            }
        }
    }
}

/// `message` first, then `key=value` for the other fields.
#[derive(Default)]
struct MessageText(String);

impl Visit for MessageText {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let rest = std::mem::take(&mut self.0);
            let _ = write!(self.0, "{value:?}{rest}");
        } else {
            let _ = write!(self.0, " {}={value:?}", field.name());
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.0.insert_str(0, value);
        } else {
            let _ = write!(self.0, " {}={value}", field.name());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_levels_to_syslog_priorities() {
        assert_eq!(level_of(&Level::ERROR), LogLevel::Err);
        assert_eq!(level_of(&Level::WARN), LogLevel::Warning);
        assert_eq!(level_of(&Level::INFO), LogLevel::Info);
        assert_eq!(level_of(&Level::DEBUG), LogLevel::Debug);
        assert_eq!(level_of(&Level::TRACE), LogLevel::Debug);
    }
}
