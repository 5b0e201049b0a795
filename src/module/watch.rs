//! `<name>.watch`: a stream of the module's progress (the engine's [`Progress`]), one
//! response at once and one after each change; `<name>.watch-cancel` ends a stream with
//! ENODATA and `<name>.disconnect` drops those of a client that went away, as flux-core
//! services do.
//!
//! [`Progress`]: crate::engine::Progress

use super::Module;
use crate::flux::{Handle, HeldMessage, Message};

/// The open watch streams.
#[derive(Default)]
pub(crate) struct Watches {
    streams: Vec<HeldMessage>,
    /// What every open stream was sent last: whether there is news for all of them is
    /// one comparison, and a change is serialized once, not once per stream.
    last: Option<String>,
}

impl Watches {
    pub(crate) fn len(&self) -> usize {
        self.streams.len()
    }

    /// Sends `text` to every stream unless it is what they were sent last. A stream that
    /// cannot be answered is dropped.
    fn send_if_new(&mut self, handle: &Handle, name: &str, text: String) {
        if self.last.as_deref() == Some(text.as_str()) {
            return;
        }
        self.streams.retain(|stream| {
            let sent = handle.respond(&stream.message(), &text);
            if let Err(err) = &sent {
                tracing::warn!("{name}: watch stream dropped: {err}");
            }
            sent.is_ok()
        });
        self.last = Some(text);
    }

    /// Removes the streams `matches` picks and returns them.
    fn take(&mut self, matches: impl Fn(&Message<'_>) -> bool) -> Vec<HeldMessage> {
        let (taken, kept) = std::mem::take(&mut self.streams)
            .into_iter()
            .partition(|stream| matches(&stream.message()));
        self.streams = kept;
        if self.streams.is_empty() {
            self.last = None;
        }
        taken
    }
}

fn progress_text(module: &Module) -> String {
    serde_json::to_string(&module.engine.progress(module.now))
        .expect("the progress has string keys only")
}

/// After a change: the progress to every stream, if it changed. Nothing is computed
/// while no one watches.
pub(crate) fn publish(module: &mut Module, handle: &Handle) {
    if module.watches.streams.is_empty() {
        return;
    }
    let text = progress_text(module);
    module.watches.send_if_new(handle, &module.name, text);
}

/// Opens a stream for `request` (checked streaming) and answers it with the progress
/// now, which the other streams get too if it is news to them.
pub(crate) fn open(module: &mut Module, handle: &Handle, request: &Message<'_>) {
    let text = progress_text(module);
    module
        .watches
        .send_if_new(handle, &module.name, text.clone());
    match handle.respond(request, &text) {
        Ok(()) => module.watches.streams.push(request.hold()),
        Err(err) => tracing::warn!("{}: cannot answer a watch: {err}", module.name),
    }
}

/// `<name>.watch-cancel`: ends the sender's stream of that matchtag with ENODATA.
pub(crate) fn cancel(module: &mut Module, handle: &Handle, request: &Message<'_>) {
    let streams = module.watches.take(|stream| request.cancels(stream));
    end(
        handle,
        &module.name,
        streams,
        libc::ENODATA,
        "watch cancelled",
    );
}

/// `<name>.disconnect`: the sender is gone; its streams (watches and history streams)
/// are dropped without a word.
pub(crate) fn disconnect(module: &mut Module, request: &Message<'_>) {
    module.watches.take(|stream| request.disconnects(stream));
    module
        .history_followers
        .take(|stream| request.disconnects(stream));
}

/// At unload: every stream (watches and history streams) ends with ENOSYS, so a
/// waiting client learns why.
pub(crate) fn end_all(module: &mut Module, handle: &Handle) {
    let text = format!("{} is unloading", module.name);
    let streams = module.history_followers.take(|_| true);
    end(handle, &module.name, streams, libc::ENOSYS, &text);
    end(
        handle,
        &module.name,
        module.watches.take(|_| true),
        libc::ENOSYS,
        &text,
    );
}

/// Ends each of `streams` with `errno` and `text`.
pub(crate) fn end(handle: &Handle, name: &str, streams: Vec<HeldMessage>, errno: i32, text: &str) {
    for stream in streams {
        if let Err(err) = handle.respond_error(&stream.message(), errno, text) {
            tracing::warn!("{name}: cannot end a stream: {err}");
        }
    }
}
