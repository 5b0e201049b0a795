//! The module's services: `<name>.status` (and `stats-get`), `watch` (with
//! `watch-cancel`), `history` (with `history-cancel`), `disconnect`, `resize`,
//! `retire`, `config-reload`, `shutdown`.
//!
//! What a request carries is read and checked by pure functions ([`status_request`],
//! [`history_request`], [`resize_request`], [`retire_request`], [`reloaded_config`])
//! before a handler acts on
//! it; they are public so that tests and fuzzers reach them without a broker. The
//! handlers around them stay private.

use std::cell::RefCell;
use std::rc::Rc;

use serde_json::{Map, Value, json};

use super::config::Config;
use super::{Handlers, Module, OWNER};
use crate::flux::{self, Access, Handle, Message, MsgHandler};
use crate::k8s::Command;
use crate::model::IdSet;
use crate::planner::RequestError;

/// A request that cannot be served: the errno and message its handler answers with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// `EPROTO` for a malformed payload, `EINVAL` for a well-formed one asking for
    /// something invalid, `EAGAIN` when the module cannot decide yet.
    pub errno: i32,
    /// What the caller is told.
    pub message: String,
}

impl Refusal {
    fn proto(message: impl Into<String>) -> Self {
        Refusal {
            errno: libc::EPROTO,
            message: message.into(),
        }
    }

    fn invalid(message: impl Into<String>) -> Self {
        Refusal {
            errno: libc::EINVAL,
            message: message.into(),
        }
    }
}

type Reply = Result<Value, Refusal>;

/// Registers every service under the module's real name.
pub(crate) fn register(handle: &Handle, module: &Rc<RefCell<Module>>) -> flux::Result<Handlers> {
    let name = module.borrow().name.clone();
    let mut handlers = Vec::new();
    let mut add = |method: &'static str,
                   access: Access,
                   serve: fn(&Handle, &Message<'_>, &mut Module) -> Reply| {
        let shared = Rc::clone(module);
        let topic = format!("{name}.{method}");
        MsgHandler::request(handle, &topic, access, move |handle, msg| {
            // The request handlers' callback cost, by method: which request is heavy.
            let ((), took) = flux::cpu_time_of(|| {
                let mut module = shared.borrow_mut();
                module.counters.requests += 1;
                module.now = handle.now();
                let reply = serve(handle, msg, &mut module);
                let acted = reply.is_ok() && access == OWNER;
                answer(handle, msg, &mut module, reply);
                drop(module);
                if acted {
                    // A resize, retire or reload may call for actions now.
                    super::state_changed(&shared, handle);
                }
            });
            if let Some(took) = took {
                let mut module = shared.borrow_mut();
                module.request_costs.entry(method).or_default().add(took);
            }
        })
        .map(|h| handlers.push(h))
    };
    add("status", Access::AnyUser, status)?;
    add("stats-get", Access::AnyUser, status)?;
    add("watch", Access::AnyUser, watch)?;
    add("watch-cancel", Access::AnyUser, |handle, msg, module| {
        super::watch::cancel(module, handle, msg);
        // Like flux-core's cancel requests: the answer is the stream's end.
        Ok(Value::Null)
    })?;
    add("history", Access::AnyUser, history)?;
    add("history-cancel", Access::AnyUser, |handle, msg, module| {
        super::history::cancel(module, handle, msg);
        Ok(Value::Null)
    })?;
    add("disconnect", Access::AnyUser, |_, msg, module| {
        super::watch::disconnect(module, msg);
        // The broker sends it when a client goes away; nobody waits for an answer.
        Ok(Value::Null)
    })?;
    add("resize", OWNER, resize)?;
    add("retire", OWNER, retire)?;
    add("config-reload", OWNER, config_reload)?;
    add("shutdown", OWNER, shutdown)?;
    if std::env::var_os("FLUXK8S_TEST_PANIC").is_some() {
        // Test-only: proves a panic in a callback (or, with {"in": "worker"}, in the
        // Kubernetes worker) is contained, answered and reported.
        add("test-panic", OWNER, |_, msg, module| {
            let object = request_object(payload(msg)?.as_deref())?;
            if object.get("in").and_then(Value::as_str) != Some("worker") {
                panic!("panic requested through FLUXK8S_TEST_PANIC")
            }
            let driver = module.driver.as_ref();
            let sent = driver.map(|d| d.send(Command::Panic));
            match sent {
                Some(Ok(())) => Ok(json!({})),
                Some(Err(err)) => Err(Refusal::invalid(format!("driver: {err}"))),
                None => Err(Refusal::invalid("no Kubernetes driver runs")),
            }
        })?;
    }
    Ok(handlers)
}

fn answer(handle: &Handle, msg: &Message<'_>, module: &mut Module, reply: Reply) {
    let sent = match reply {
        Ok(Value::Null) => return, // answered already, or no response by design
        Ok(value) => handle.respond(msg, &value.to_string()),
        Err(refusal) => {
            module.counters.request_errors += 1;
            handle.respond_error(msg, refusal.errno, &refusal.message)
        }
    };
    if let Err(err) = sent {
        tracing::error!("{}: cannot respond: {err}", module.name);
    }
}

/// The request payload as a JSON object; an absent payload is an empty object.
fn request_object(payload: Option<&str>) -> Result<Map<String, Value>, Refusal> {
    match payload.map(serde_json::from_str::<Value>) {
        None => Ok(Map::new()),
        Some(Ok(Value::Object(map))) => Ok(map),
        Some(Ok(_)) => Err(Refusal::proto("payload must be a JSON object")),
        Some(Err(e)) => Err(Refusal::proto(format!("payload is not JSON: {e}"))),
    }
}

/// Rejects fields a method does not take: a typo must not pass silently.
fn only_fields(object: &Map<String, Value>, allowed: &[&str]) -> Result<(), Refusal> {
    match object.keys().find(|k| !allowed.contains(&k.as_str())) {
        Some(key) => Err(Refusal::proto(format!(
            "unknown field '{key}' (accepted: {})",
            allowed.join(", ")
        ))),
        None => Ok(()),
    }
}

/// `<name>.status` and `<name>.stats-get`: no payload or an empty object, or
/// `{"ranks": "IDSET"}` to have those ranks in the status one by one, with their pods.
pub fn status_request(payload: Option<&str>) -> Result<Option<IdSet>, Refusal> {
    let object = request_object(payload)?;
    only_fields(&object, &["ranks"])?;
    ranks_field(&object)
}

/// The `"ranks": "IDSET"` of a request, if it has one.
fn ranks_field(object: &Map<String, Value>) -> Result<Option<IdSet>, Refusal> {
    let Some(value) = object.get("ranks") else {
        return Ok(None);
    };
    let text = value
        .as_str()
        .ok_or_else(|| Refusal::proto("ranks must be an idset string such as \"2,5-7\""))?;
    text.parse()
        .map(Some)
        .map_err(|e: crate::model::idset::IdSetError| Refusal::invalid(e.to_string()))
}

/// `<name>.resize`: `{"size": N}`, N a whole number that fits in 32 bits (whether the
/// size is possible is the engine's to say).
pub fn resize_request(payload: Option<&str>) -> Result<u32, Refusal> {
    let object = request_object(payload)?;
    only_fields(&object, &["size"])?;
    object
        .get("size")
        .ok_or_else(|| Refusal::proto("resize needs {\"size\": N}"))?
        .as_u64()
        .and_then(|n| u32::try_from(n).ok())
        .ok_or_else(|| Refusal::proto("size must be a whole number, at most 4294967295"))
}

/// `<name>.retire`: `{"ranks": "IDSET"}` naming at least one rank.
pub fn retire_request(payload: Option<&str>) -> Result<IdSet, Refusal> {
    let object = request_object(payload)?;
    only_fields(&object, &["ranks"])?;
    let ranks = ranks_field(&object)?
        .ok_or_else(|| Refusal::proto("retire needs {\"ranks\": \"IDSET\"}"))?;
    if ranks.is_empty() {
        return Err(Refusal::invalid("no ranks given"));
    }
    Ok(ranks)
}

/// `<name>.config-reload`: the configuration from the new `[fluxk8s]` table (JSON text,
/// as the broker hands it over) and the module arguments, refused if it is invalid or
/// changes a setting that only applies when the module loads.
pub fn reloaded_config(
    table: Option<&str>,
    args: &[String],
    current: &Config,
) -> Result<Config, Refusal> {
    let config = Config::load(table, args).map_err(|e| Refusal::invalid(e.to_string()))?;
    if config.connection_differs(current) {
        return Err(Refusal::invalid(
            "namespace, kubeconfig, job, minicluster and evict apply only at load: reload the module",
        ));
    }
    Ok(config)
}

/// The payload of a request as the broker delivered it.
fn payload(msg: &Message<'_>) -> Result<Option<String>, Refusal> {
    msg.payload()
        .map_err(|e| Refusal::proto(format!("cannot decode request: {e}")))
}

fn status(handle: &Handle, msg: &Message<'_>, module: &mut Module) -> Reply {
    let asked = status_request(payload(msg)?.as_deref())?;
    let (detail, detail_rest) = match asked {
        Some(ranks) => {
            let (page, rest) = detail_page(&ranks, module.engine.flux().size());
            (Some(page), rest)
        }
        None => (None, None),
    };
    let stream = |s: &super::streams::Subscription| json!({"open": s.is_open(), "replies": s.replies, "resubscribes": s.resubscribes});
    let mut view = module.engine.status(module.now, detail.as_ref());
    if let Some(rest) = detail_rest {
        view.shell.insert("detail_rest".to_owned(), json!(rest));
    }
    let namespace = module.driver.as_ref().map(|d| d.namespace());
    view.shell.extend(fields([
        ("name", json!(module.name)),
        ("version", json!(env!("CARGO_PKG_VERSION"))),
        ("config", json!(module.config)),
        ("uptime", json!(module.now - module.loaded_at)),
        ("counters", json!(module.counters)),
        ("watchers", json!(module.watches.len())),
        ("history_followers", json!(module.history_followers.len())),
        ("panics_contained", json!(flux::panics_caught())),
        ("callbacks", json!(flux::callback_costs())),
        ("requests", json!(module.request_costs)),
    ]));
    view.flux.shell.extend(fields([
        ("journal", stream(&module.streams.journal)),
        ("overlay", stream(&module.streams.overlay)),
    ]));
    view.autoscale
        .shell
        .extend(fields([("stream", stream(&module.streams.jobs))]));
    view.kubernetes.shell.extend(fields([
        ("connected", json!(module.driver.is_some())),
        ("namespace", json!(namespace)),
    ]));
    let text = serde_json::to_string(&view)
        .map_err(|e| Refusal::invalid(format!("cannot encode the status: {e}")))?;
    drop(view);
    if let Err(err) = handle.respond(msg, &text) {
        tracing::error!("{}: cannot respond: {err}", module.name);
    }
    Ok(Value::Null)
}

/// Ranks a status answers in detail at most: each costs the module thread a few
/// microseconds and a few hundred bytes, and one answer must stay well within a
/// millisecond of the reactor (10,000 ranks at once took several).
pub const DETAIL_PAGE: usize = 256;

/// Splits the ranks asked for in detail into those of this answer (the first
/// [`DETAIL_PAGE`] of them within an instance of `size` ranks) and the rest, if any,
/// which the caller asks for next (`detail_rest` in the answer).
pub fn detail_page(asked: &IdSet, size: u32) -> (IdSet, Option<IdSet>) {
    let Some(last) = size.checked_sub(1) else {
        return (IdSet::new(), None);
    };
    let in_instance = asked.intersection(&IdSet::range(0, last));
    let next = in_instance.iter().nth(DETAIL_PAGE);
    match next {
        None => (in_instance, None),
        Some(next) => (
            in_instance.intersection(&IdSet::range(0, next - 1)),
            Some(in_instance.intersection(&IdSet::range(next, last))),
        ),
    }
}

/// Named values for a status section the module adds to.
fn fields<const N: usize>(pairs: [(&str, Value); N]) -> impl Iterator<Item = (String, Value)> {
    pairs
        .into_iter()
        .map(|(key, value)| (key.to_owned(), value))
}

/// `<name>.watch`: no payload or an empty object, sent with `FLUX_RPC_STREAMING`.
pub fn watch_request(payload: Option<&str>, streaming: bool) -> Result<(), Refusal> {
    only_fields(&request_object(payload)?, &[])?;
    if !streaming {
        return Err(Refusal::proto("watch requires the streaming RPC flag"));
    }
    Ok(())
}

fn watch(handle: &Handle, msg: &Message<'_>, module: &mut Module) -> Reply {
    watch_request(payload(msg)?.as_deref(), msg.is_streaming())?;
    super::watch::open(module, handle, msg);
    Ok(Value::Null)
}

/// What a `<name>.history` request asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryRequest {
    /// Only what concerns these ranks.
    pub ranks: Option<IdSet>,
    /// The picture (SVG text) instead of the entries.
    pub svg: bool,
    /// Sent with `FLUX_RPC_STREAMING`: the entries so far, then each new one.
    pub follow: bool,
}

/// `<name>.history`: no payload, or `{"ranks": "IDSET", "svg": BOOL}` (either field
/// optional); streaming follows new entries, which a picture cannot.
pub fn history_request(payload: Option<&str>, streaming: bool) -> Result<HistoryRequest, Refusal> {
    let object = request_object(payload)?;
    only_fields(&object, &["ranks", "svg"])?;
    let svg = match object.get("svg") {
        None => false,
        Some(Value::Bool(svg)) => *svg,
        Some(_) => return Err(Refusal::proto("svg must be true or false")),
    };
    if svg && streaming {
        return Err(Refusal::proto(
            "svg draws the history once: send it without the streaming flag",
        ));
    }
    Ok(HistoryRequest {
        ranks: ranks_field(&object)?,
        svg,
        follow: streaming,
    })
}

fn history(handle: &Handle, msg: &Message<'_>, module: &mut Module) -> Reply {
    let request = history_request(payload(msg)?.as_deref(), msg.is_streaming())?;
    super::history::serve(module, handle, msg, request)
}

fn refusal(err: RequestError) -> Refusal {
    match err {
        RequestError::NotSynced => Refusal {
            errno: libc::EAGAIN,
            message: err.to_string(),
        },
        _ => Refusal::invalid(err.to_string()),
    }
}

fn resize(_handle: &Handle, msg: &Message<'_>, module: &mut Module) -> Reply {
    let size = resize_request(payload(msg)?.as_deref())?;
    let now = module.now;
    let answer = module.engine.request_size(size, now).map_err(refusal)?;
    serde_json::to_value(answer).map_err(|e| Refusal::proto(e.to_string()))
}

fn retire(_handle: &Handle, msg: &Message<'_>, module: &mut Module) -> Reply {
    let ranks = retire_request(payload(msg)?.as_deref())?;
    let answer = module
        .engine
        .request_retire(&ranks, module.now)
        .map_err(refusal)?;
    serde_json::to_value(answer).map_err(|e| Refusal::proto(e.to_string()))
}

fn config_reload(handle: &Handle, msg: &Message<'_>, module: &mut Module) -> Reply {
    let table = handle
        .accept_config_reload(msg, "fluxk8s")
        .map_err(|e| Refusal::proto(format!("config-reload: {e}")))?;
    let config =
        reloaded_config(table.as_deref(), &module.args, &module.config).map_err(|refusal| {
            Refusal {
                message: format!("{}: {}", module.name, refusal.message),
                ..refusal
            }
        })?;
    module
        .engine
        .reconfigure(super::planner_config(&config), config.dry_run);
    module
        .engine
        .set_autoscale(super::autoscale_config(&config));
    if config.log_filter != module.config.log_filter
        && let Err(err) = super::set_log_filter(&module.log_filter, &config.log_filter)
    {
        tracing::error!("{}: {err}", module.name);
    }
    module.config = config;
    module.counters.config_reloads += 1;
    tracing::info!("{}: configuration reloaded", module.name);
    Ok(json!({}))
}

fn shutdown(handle: &Handle, _msg: &Message<'_>, module: &mut Module) -> Reply {
    tracing::info!("{}: shutdown requested", module.name);
    handle.stop();
    // The broker's shutdown request expects no response.
    Ok(Value::Null)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(text: &str) -> IdSet {
        text.parse().expect("an idset")
    }

    #[test]
    fn detail_pages_cover_the_asked_ranks_of_the_instance_once_in_order() {
        let size = 10_000;
        let asked = set("3,7-8,100-9999,20000-30000");
        let (mut pages, mut next) = (Vec::new(), Some(asked.clone()));
        while let Some(ranks) = next {
            let (page, rest) = detail_page(&ranks, size);
            assert!(page.len() <= DETAIL_PAGE, "{page}");
            pages.push(page);
            next = rest;
        }
        assert_eq!(pages.len(), 9903_usize.div_ceil(DETAIL_PAGE));
        let joined: Vec<u32> = pages
            .iter()
            .flat_map(|p| p.iter().collect::<Vec<_>>())
            .collect();
        let expected: Vec<u32> = asked.iter().filter(|&k| k < size).collect();
        assert_eq!(joined, expected);
        assert_eq!(pages[0].to_string(), "3,7-8,100-352");
    }

    #[test]
    fn a_detail_within_one_page_or_outside_the_instance_has_no_rest() {
        assert_eq!(detail_page(&set("0-255"), 1_000), (set("0-255"), None));
        assert_eq!(detail_page(&set("0-99999"), 10), (set("0-9"), None));
        assert_eq!(detail_page(&set("5-9"), 0), (IdSet::new(), None));
    }
}
