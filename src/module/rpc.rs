//! The module's services: `<name>.status` (and `stats-get`), `config-reload`,
//! `shutdown`.

use std::cell::RefCell;
use std::rc::Rc;

use serde_json::{Map, Value, json};

use super::config::Config;
use super::{Handlers, Module, OWNER};
use crate::flux::{self, Access, Handle, Message, MsgHandler};
use crate::model::IdSet;
use crate::planner::RequestError;

/// A request that cannot be served: errno and a message for the caller.
pub(crate) struct Refusal {
    pub(crate) errno: i32,
    pub(crate) message: String,
}

impl Refusal {
    pub(crate) fn proto(message: impl Into<String>) -> Self {
        Refusal {
            errno: libc::EPROTO,
            message: message.into(),
        }
    }

    pub(crate) fn invalid(message: impl Into<String>) -> Self {
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
    let mut add =
        |method: &str, access: Access, serve: fn(&Handle, &Message<'_>, &mut Module) -> Reply| {
            let shared = Rc::clone(module);
            let topic = format!("{name}.{method}");
            MsgHandler::request(handle, &topic, access, move |handle, msg| {
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
            })
            .map(|h| handlers.push(h))
        };
    add("status", Access::AnyUser, status)?;
    add("stats-get", Access::AnyUser, status)?;
    add("resize", OWNER, resize)?;
    add("retire", OWNER, retire)?;
    add("config-reload", OWNER, config_reload)?;
    add("shutdown", OWNER, shutdown)?;
    if std::env::var_os("FLUXK8S_TEST_PANIC").is_some() {
        // Test-only: proves a panic in a callback is contained and answered.
        add("test-panic", OWNER, |_, _, _| {
            panic!("panic requested through FLUXK8S_TEST_PANIC")
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
pub(crate) fn request_object(msg: &Message<'_>) -> Result<Map<String, Value>, Refusal> {
    let payload = msg
        .payload()
        .map_err(|e| Refusal::proto(format!("cannot decode request: {e}")))?;
    match payload.as_deref().map(serde_json::from_str::<Value>) {
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

fn status(handle: &Handle, msg: &Message<'_>, module: &mut Module) -> Reply {
    only_fields(&request_object(msg)?, &[])?;
    let stream = |s: &super::streams::Subscription| json!({"open": s.is_open(), "replies": s.replies, "resubscribes": s.resubscribes});
    let mut view = module.engine.status(module.now);
    let add = |map: &mut Map<String, Value>, key: &str, value: Value| {
        map.insert(key.to_owned(), value);
    };
    add(&mut view.shell, "name", json!(module.name));
    add(&mut view.shell, "version", json!(env!("CARGO_PKG_VERSION")));
    add(&mut view.shell, "config", json!(module.config));
    add(
        &mut view.shell,
        "uptime",
        json!(module.now - module.loaded_at),
    );
    add(&mut view.shell, "counters", json!(module.counters));
    add(
        &mut view.shell,
        "panics_contained",
        json!(flux::panics_caught()),
    );
    add(
        &mut view.flux.shell,
        "journal",
        stream(&module.streams.journal),
    );
    add(
        &mut view.flux.shell,
        "overlay",
        stream(&module.streams.overlay),
    );
    add(
        &mut view.autoscale.shell,
        "stream",
        stream(&module.streams.jobs),
    );
    let namespace = module.driver.as_ref().map(|d| d.namespace());
    add(
        &mut view.kubernetes.shell,
        "connected",
        json!(module.driver.is_some()),
    );
    add(&mut view.kubernetes.shell, "namespace", json!(namespace));
    let text = serde_json::to_string(&view)
        .map_err(|e| Refusal::invalid(format!("cannot encode the status: {e}")))?;
    drop(view);
    if let Err(err) = handle.respond(msg, &text) {
        tracing::error!("{}: cannot respond: {err}", module.name);
    }
    Ok(Value::Null)
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
    let object = request_object(msg)?;
    only_fields(&object, &["size"])?;
    let size = object
        .get("size")
        .ok_or_else(|| Refusal::proto("resize needs {\"size\": N}"))?
        .as_u64()
        .and_then(|n| u32::try_from(n).ok())
        .ok_or_else(|| Refusal::proto("size must be a whole number"))?;
    let now = module.now;
    let answer = module.engine.request_size(size, now).map_err(refusal)?;
    serde_json::to_value(answer).map_err(|e| Refusal::proto(e.to_string()))
}

fn retire(_handle: &Handle, msg: &Message<'_>, module: &mut Module) -> Reply {
    let object = request_object(msg)?;
    only_fields(&object, &["ranks"])?;
    let text = object
        .get("ranks")
        .and_then(Value::as_str)
        .ok_or_else(|| Refusal::proto("retire needs {\"ranks\": \"IDSET\"}"))?;
    let ranks: IdSet = text.parse().map_err(|e| Refusal::invalid(format!("{e}")))?;
    if ranks.is_empty() {
        return Err(Refusal::invalid("no ranks given"));
    }
    let answer = module.engine.request_retire(&ranks).map_err(refusal)?;
    serde_json::to_value(answer).map_err(|e| Refusal::proto(e.to_string()))
}

fn config_reload(handle: &Handle, msg: &Message<'_>, module: &mut Module) -> Reply {
    let table = handle
        .accept_config_reload(msg, "fluxk8s")
        .map_err(|e| Refusal::proto(format!("config-reload: {e}")))?;
    let config = Config::load(table.as_deref(), &module.args)
        .map_err(|e| Refusal::invalid(format!("{}: {e}", module.name)))?;
    if config.connection_differs(&module.config) {
        return Err(Refusal::invalid(format!(
            "{}: namespace, kubeconfig, job, minicluster and evict apply only at load: reload the module",
            module.name
        )));
    }
    module
        .engine
        .reconfigure(super::planner_config(&config), config.dry_run);
    module
        .engine
        .set_autoscale(super::autoscale_config(&config));
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
