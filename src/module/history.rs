//! `<name>.history`: what the engine's history holds, as entries (cut to the ranks
//! asked about, if any) or drawn as one SVG picture. Sent with `FLUX_RPC_STREAMING`,
//! the entries kept now come first, then each new one as it is recorded, until
//! `<name>.history-cancel` ends the stream with ENODATA or the client goes away.

use serde_json::{Value, json};

use super::Module;
use super::rpc::{HistoryRequest, Refusal};
use crate::flux::{Handle, HeldMessage, Message};
use crate::model::IdSet;
use crate::model::history::{Panel, svg};

/// A client following the history.
struct Follower {
    request: HeldMessage,
    ranks: Option<IdSet>,
    /// The sequence number of the first entry it has not been sent.
    next: u64,
}

/// The open history streams.
#[derive(Default)]
pub(crate) struct Followers(Vec<Follower>);

impl Followers {
    pub(crate) fn len(&self) -> usize {
        self.0.len()
    }

    /// Removes the streams `matches` picks and returns their requests.
    pub(crate) fn take(&mut self, matches: impl Fn(&Message<'_>) -> bool) -> Vec<HeldMessage> {
        let (taken, kept) = std::mem::take(&mut self.0)
            .into_iter()
            .partition(|f| matches(&f.request.message()));
        self.0 = kept;
        taken.into_iter().map(|f| f.request).collect()
    }
}

/// Answers a history request: the picture, the entries, or the entries so far and a
/// stream of those to come.
pub(crate) fn serve(
    module: &mut Module,
    handle: &Handle,
    msg: &Message<'_>,
    request: HistoryRequest,
) -> Result<Value, Refusal> {
    let history = module.engine.history();
    if request.svg {
        let which = request
            .ranks
            .as_ref()
            .map_or_else(String::new, |ranks| format!(", ranks {ranks}"));
        let panel = Panel {
            heading: format!(
                "{} on rank 0: its last {} records{which} (times UTC)",
                module.name,
                history.len()
            ),
            history,
            ranks: request.ranks.as_ref(),
            clock: true,
        };
        let title = format!("{}: what it saw and did", module.name);
        return Ok(json!({"svg": svg(&title, &[panel])}));
    }
    let answer = json!({
        "entries": history.entries(0, request.ranks.as_ref()),
        "dropped": history.dropped(),
    });
    if !request.follow {
        return Ok(answer);
    }
    let next = history.next_seq();
    match handle.respond(msg, &answer.to_string()) {
        Ok(()) => module.history_followers.0.push(Follower {
            request: msg.hold(),
            ranks: request.ranks,
            next,
        }),
        Err(err) => tracing::warn!("{}: cannot answer a history request: {err}", module.name),
    }
    Ok(Value::Null)
}

/// After a change: each stream gets the entries recorded since it was last sent some
/// (those about its ranks). A stream that cannot be answered is dropped.
pub(crate) fn publish(module: &mut Module, handle: &Handle) {
    let Module {
        engine,
        history_followers,
        name,
        ..
    } = module;
    let history = engine.history();
    let next = history.next_seq();
    history_followers.0.retain_mut(|follower| {
        if follower.next == next {
            return true;
        }
        let entries = history.entries(follower.next, follower.ranks.as_ref());
        follower.next = next;
        if entries.is_empty() {
            return true;
        }
        let sent = handle.respond(
            &follower.request.message(),
            &json!({ "entries": entries }).to_string(),
        );
        if let Err(err) = &sent {
            tracing::warn!("{name}: history stream dropped: {err}");
        }
        sent.is_ok()
    });
}

/// `<name>.history-cancel`: ends the sender's stream of that matchtag with ENODATA.
pub(crate) fn cancel(module: &mut Module, handle: &Handle, request: &Message<'_>) {
    let streams = module.history_followers.take(|s| request.cancels(s));
    super::watch::end(
        handle,
        &module.name,
        streams,
        libc::ENODATA,
        "history cancelled",
    );
}
