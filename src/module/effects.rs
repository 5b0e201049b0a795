//! Carrying out the engine's effects: RPCs on the module thread, commands to the
//! Kubernetes driver; and feeding their results and the driver's reports back.

use std::cell::RefCell;
use std::rc::Rc;

use super::Module;
use crate::engine::{Effect, FluxFailure};
use crate::flux::{Handle, Rpc, RpcError};
use crate::k8s::Command;
use crate::model::{Report, Retry};

pub(crate) fn run(shared: &Rc<RefCell<Module>>, handle: &Handle, effects: Vec<Effect>) {
    for effect in effects {
        let mut module = shared.borrow_mut();
        let now = module.now;
        match effect {
            Effect::FluxRpc { id, request } if !request.expects_reply => {
                let sent =
                    Rpc::send_one_way(handle, request.topic, &request.payload, request.nodeid);
                let outcome = sent.map_err(|e| FluxFailure {
                    errno: e.errno(),
                    text: format!("{}: {e}", request.topic),
                });
                module.engine.flux_finished(id, outcome, now);
            }
            Effect::FluxRpc { id, request } => {
                let weak = Rc::downgrade(shared);
                let sent = Rpc::call(
                    handle,
                    request.topic,
                    Some(&request.payload),
                    request.nodeid,
                    false,
                    move |handle, reply| {
                        if let Some(shared) = weak.upgrade() {
                            rpc_answered(&shared, handle, id, reply);
                        }
                    },
                );
                match sent {
                    Ok(rpc) => {
                        module.flux_rpcs.insert(id, rpc);
                    }
                    Err(err) => {
                        let failure = FluxFailure {
                            errno: err.errno(),
                            text: format!("{}: {err}", request.topic),
                        };
                        module.engine.flux_finished(id, Err(failure), now);
                    }
                }
            }
            Effect::Kube { id, action } => {
                let sent = match &module.driver {
                    Some(driver) => driver
                        .send(Command::Apply { id, action })
                        .map_err(|e| e.to_string()),
                    None => Err("no Kubernetes connection".to_owned()),
                };
                if let Err(err) = sent {
                    module
                        .engine
                        .finished(id, Retry::Unreachable(err).into(), now);
                }
            }
        }
    }
}

fn rpc_answered(
    shared: &Rc<RefCell<Module>>,
    handle: &Handle,
    id: u64,
    reply: Result<String, RpcError>,
) {
    let mut module = shared.borrow_mut();
    // The Rpc is dropped here, inside its own continuation (see flux::callback).
    module.flux_rpcs.remove(&id);
    module.now = handle.now();
    let now = module.now;
    let outcome = reply.map(drop).map_err(|e| FluxFailure {
        errno: e.errno,
        text: e.to_string(),
    });
    module.engine.flux_finished(id, outcome, now);
    drop(module);
    super::state_changed(shared, handle);
}

/// Takes the waiting reports from the driver, with one view at most: a view made while
/// this one is applied waits for the next callback (the driver's wake-up brings it), so a
/// callback applies one snapshot of the pods, not as many as the driver makes meanwhile.
pub(crate) fn drain_reports(shared: &Rc<RefCell<Module>>, handle: &Handle) {
    let mut changed = false;
    let mut took_view = false;
    loop {
        let mut module = shared.borrow_mut();
        let next = module.driver.as_ref().and_then(|driver| match took_view {
            false => driver.try_recv(),
            true => driver.try_recv_queued(),
        });
        let Some(report) = next else {
            break;
        };
        changed = true;
        took_view |= matches!(report, Report::View(_));
        module.now = handle.now();
        let now = module.now;
        let replaced = module.engine.kube_report(report, now);
        if let (Some(view), Some(driver)) = (replaced, module.driver.as_ref()) {
            driver.release(view);
        }
    }
    if changed {
        super::state_changed(shared, handle);
    }
}
