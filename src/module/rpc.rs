//! The module's services: `<name>.status` (and `stats-get`), `config-reload`,
//! `shutdown`.

use std::cell::RefCell;
use std::rc::Rc;

use serde_json::{Map, Value, json};

use super::config::Config;
use super::{Handlers, Module, OWNER};
use crate::flux::{self, Access, Handle, Message, MsgHandler};

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
            let module = Rc::clone(module);
            let topic = format!("{name}.{method}");
            MsgHandler::request(handle, &topic, access, move |handle, msg| {
                let mut module = module.borrow_mut();
                module.counters.requests += 1;
                let reply = serve(handle, msg, &mut module);
                answer(handle, msg, &mut module, reply);
            })
            .map(|h| handlers.push(h))
        };
    add("status", Access::AnyUser, status)?;
    add("stats-get", Access::AnyUser, status)?;
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

fn status(handle: &Handle, msg: &Message<'_>, module: &mut Module) -> Reply {
    request_object(msg)?;
    Ok(json!({
        "name": module.name,
        "version": env!("CARGO_PKG_VERSION"),
        "config": module.config,
        "uptime": handle.now() - module.loaded_at,
        "counters": module.counters,
        "panics_contained": flux::panics_caught(),
    }))
}

fn config_reload(handle: &Handle, msg: &Message<'_>, module: &mut Module) -> Reply {
    let table = handle
        .accept_config_reload(msg, "fluxk8s")
        .map_err(|e| Refusal::proto(format!("config-reload: {e}")))?;
    let config = Config::load(table.as_deref(), &module.args)
        .map_err(|e| Refusal::invalid(format!("{}: {e}", module.name)))?;
    if config.connection_differs(&module.config) {
        return Err(Refusal::invalid(format!(
            "{}: namespace, kubeconfig, job and minicluster apply only at load: reload the module",
            module.name
        )));
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
