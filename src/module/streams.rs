//! The Flux-side streams: `resource.journal` (online/offline, drains, torpid),
//! `overlay.monitor` (the only one that tells a crash, `lost`, from a clean exit), and
//! `job-manager.events-journal` (the job queue and who holds which ranks, see
//! [`super::queue`]).
//! Each is resubscribed with backoff when it ends: ENODATA when its module unloads,
//! ENOSYS before it is loaded, anything else on error.

use std::cell::RefCell;
use std::rc::Rc;

use super::Module;
use crate::flux::{Handle, Rpc, RpcError, Watcher};

/// First retry after a stream ends, doubled per failure up to [`RETRY_MAX`].
const RETRY_FIRST: f64 = 0.5;
const RETRY_MAX: f64 = 30.0;

/// Which stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stream {
    Journal,
    Overlay,
    Jobs,
}

impl Stream {
    fn topic(self) -> &'static str {
        match self {
            Stream::Journal => "resource.journal",
            Stream::Overlay => "overlay.monitor",
            Stream::Jobs => "job-manager.events-journal",
        }
    }
}

/// One subscription and its retry state.
#[derive(Default)]
pub(crate) struct Subscription {
    rpc: Option<Rpc>,
    retry: Option<Watcher>,
    failures: u32,
    pub(crate) replies: u64,
    pub(crate) resubscribes: u64,
}

impl Subscription {
    pub(crate) fn is_open(&self) -> bool {
        self.rpc.is_some()
    }
}

/// The subscriptions.
#[derive(Default)]
pub(crate) struct Streams {
    pub(crate) journal: Subscription,
    pub(crate) overlay: Subscription,
    pub(crate) jobs: Subscription,
}

impl Streams {
    fn get(&mut self, stream: Stream) -> &mut Subscription {
        match stream {
            Stream::Journal => &mut self.journal,
            Stream::Overlay => &mut self.overlay,
            Stream::Jobs => &mut self.jobs,
        }
    }
}

/// Opens `stream` (rank 0's services, we are on rank 0).
pub(crate) fn subscribe(shared: &Rc<RefCell<Module>>, handle: &Handle, stream: Stream) {
    let weak = Rc::downgrade(shared);
    let payload = match stream {
        Stream::Journal => Some("{}".to_owned()),
        Stream::Overlay => None,
        Stream::Jobs => Some(super::queue::request_payload()),
    };
    let opened = Rpc::call(
        handle,
        stream.topic(),
        payload.as_deref(),
        0,
        true,
        move |handle, reply| {
            if let Some(shared) = weak.upgrade() {
                on_reply(&shared, handle, stream, reply);
            }
        },
    );
    let mut module = shared.borrow_mut();
    // The backlog replays everything: the view is rebuilt from it.
    match stream {
        Stream::Journal => module.engine.journal_restarted(),
        Stream::Jobs => module.engine.job_journal_restarted(),
        Stream::Overlay => {}
    }
    match opened {
        Ok(rpc) => module.streams.get(stream).rpc = Some(rpc),
        Err(err) => {
            tracing::error!("cannot send {}: {err}", stream.topic());
            drop(module);
            retry_later(shared, handle, stream);
        }
    }
}

fn on_reply(
    shared: &Rc<RefCell<Module>>,
    handle: &Handle,
    stream: Stream,
    reply: Result<String, RpcError>,
) {
    let payload = match reply {
        Ok(payload) => payload,
        Err(err) => {
            if err.is_end_of_stream() {
                tracing::info!(
                    "{} ended (its module unloaded); resubscribing",
                    stream.topic()
                );
            } else {
                tracing::warn!("{} failed: {err}; resubscribing", stream.topic());
            }
            let mut module = shared.borrow_mut();
            module.streams.get(stream).rpc = None;
            if stream == Stream::Jobs && err.errno == libc::ENOSYS {
                // No job-manager loaded: no job can hold a rank until it is.
                module.engine.no_job_manager();
            }
            drop(module);
            retry_later(shared, handle, stream);
            return;
        }
    };
    let mut module = shared.borrow_mut();
    let subscription = module.streams.get(stream);
    subscription.replies += 1;
    subscription.failures = 0;
    module.now = handle.now();
    let now = module.now;
    match stream {
        Stream::Journal => module.engine.journal(&payload, now),
        Stream::Overlay => module.engine.overlay(&payload, now),
        Stream::Jobs => module.engine.job_journal(&payload, now),
    }
    drop(module);
    super::state_changed(shared, handle);
}

fn retry_later(shared: &Rc<RefCell<Module>>, handle: &Handle, stream: Stream) {
    let delay = {
        let mut module = shared.borrow_mut();
        let subscription = module.streams.get(stream);
        let delay = (RETRY_FIRST * 2f64.powi(subscription.failures.min(16) as i32)).min(RETRY_MAX);
        subscription.failures += 1;
        delay
    };
    let weak = Rc::downgrade(shared);
    let timer = Watcher::timer(handle, "stream resubscribe", delay, 0.0, move |handle| {
        if let Some(shared) = weak.upgrade() {
            let mut module = shared.borrow_mut();
            module.streams.get(stream).resubscribes += 1;
            // Dropping the timer that is running this callback is safe (see flux::callback).
            module.streams.get(stream).retry = None;
            drop(module);
            subscribe(&shared, handle, stream);
        }
    });
    match timer {
        Ok(timer) => shared.borrow_mut().streams.get(stream).retry = Some(timer),
        Err(err) => tracing::error!("cannot arm the {} retry timer: {err}", stream.topic()),
    }
}
