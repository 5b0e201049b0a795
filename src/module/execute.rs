//! Carrying out the planner's actions: Flux-side ones as RPCs on the module thread,
//! Kubernetes-side ones through the driver; and taking the driver's reports back.

use std::cell::RefCell;
use std::rc::Rc;

use serde_json::json;

use super::Module;
use crate::flux::{Handle, Rpc, RpcError};
use crate::k8s::{Command, Outcome, Report};
use crate::model::{Action, FluxAction};

/// Actions sent and not yet answered, by id.
#[derive(Default)]
pub(crate) struct InFlight {
    next_id: u64,
    flux: std::collections::BTreeMap<u64, (Action, Rpc)>,
    kube: std::collections::BTreeMap<u64, Action>,
}

impl InFlight {
    fn next(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    pub(crate) fn len(&self) -> usize {
        self.flux.len() + self.kube.len()
    }
}

/// The RPC that carries out a Flux-side action: topic, payload.
fn flux_request(action: &FluxAction) -> (&'static str, String) {
    match action {
        // "update" keeps a drain someone set meanwhile instead of failing with EEXIST.
        FluxAction::Drain { ranks, reason } => (
            "resource.drain",
            json!({"targets": ranks.to_string(), "reason": reason, "mode": "update"}).to_string(),
        ),
        FluxAction::Undrain { ranks } => (
            "resource.undrain",
            json!({"targets": ranks.to_string()}).to_string(),
        ),
        // The parent of every rank in the flat topology the Flux Operator sets up.
        FluxAction::Disconnect { rank } => (
            "overlay.disconnect-subtree",
            json!({"rank": rank}).to_string(),
        ),
    }
}

/// Starts one action. In dry run it is only logged, and reported done.
pub(crate) fn execute(shared: &Rc<RefCell<Module>>, handle: &Handle, action: Action) {
    let mut module = shared.borrow_mut();
    module.counters.actions += 1;
    if module.config.dry_run {
        tracing::info!("dry-run: would {action}");
        module
            .reconciler
            .action_finished(&action, Ok(()), handle.now());
        return;
    }
    tracing::info!("{action}");
    let id = module.in_flight.next();
    match &action {
        Action::Flux(flux_action) => {
            let (topic, payload) = flux_request(flux_action);
            let weak = Rc::downgrade(shared);
            let sent = Rpc::call(
                handle,
                topic,
                Some(&payload),
                0,
                false,
                move |handle, reply| {
                    if let Some(shared) = weak.upgrade() {
                        flux_action_done(&shared, handle, id, reply);
                    }
                },
            );
            match sent {
                Ok(rpc) => {
                    module.in_flight.flux.insert(id, (action, rpc));
                }
                Err(err) => {
                    let text = format!("{topic}: {err}");
                    module
                        .reconciler
                        .action_finished(&action, Err(text.clone()), handle.now());
                    module.note_problem(text);
                }
            }
        }
        Action::Kube(kube_action) => {
            let sent = match &module.driver {
                Some(driver) => driver
                    .send(Command::Apply {
                        id,
                        action: kube_action.clone(),
                    })
                    .map_err(|e| e.to_string()),
                None => Err("no Kubernetes connection".to_owned()),
            };
            match sent {
                Ok(()) => {
                    module.in_flight.kube.insert(id, action);
                }
                Err(err) => {
                    module
                        .reconciler
                        .action_finished(&action, Err(err.clone()), handle.now());
                    module.note_problem(format!("{action}: {err}"));
                }
            }
        }
    }
}

fn flux_action_done(
    shared: &Rc<RefCell<Module>>,
    handle: &Handle,
    id: u64,
    reply: Result<String, RpcError>,
) {
    let mut module = shared.borrow_mut();
    // The Rpc is dropped here, inside its own continuation (see flux::callback).
    let Some((action, _rpc)) = module.in_flight.flux.remove(&id) else {
        return;
    };
    let outcome = reply.map(drop).map_err(|e| e.to_string());
    if let Err(err) = &outcome {
        module.note_problem(format!("{action}: {err}"));
    }
    module
        .reconciler
        .action_finished(&action, outcome, handle.now());
    drop(module);
    super::state_changed(shared, handle);
}

/// Takes every waiting report from the driver.
pub(crate) fn drain_reports(shared: &Rc<RefCell<Module>>, handle: &Handle) {
    let mut changed = false;
    loop {
        let mut module = shared.borrow_mut();
        let Some(report) = module.driver.as_ref().and_then(|d| d.try_recv()) else {
            break;
        };
        changed = true;
        match report {
            Report::View(view) => module.kube.view = Some(view),
            Report::Synced => {
                module.kube.synced = true;
                tracing::info!("Kubernetes view synced");
            }
            Report::Finished { id, outcome } => {
                let Some(action) = module.in_flight.kube.remove(&id) else {
                    continue;
                };
                let outcome = match outcome {
                    Outcome::Done => Ok(()),
                    Outcome::Replaced { current_uid } => Err(format!(
                        "pod was replaced (now uid {})",
                        current_uid.as_deref().unwrap_or("none")
                    )),
                    Outcome::Refused(why) => Err(format!("refused: {why}")),
                    Outcome::Failed(why) => Err(format!("failed: {why}")),
                    Outcome::Abandoned => Err("abandoned at shutdown".to_owned()),
                };
                if let Err(err) = &outcome {
                    module.note_problem(format!("{action}: {err}"));
                }
                module
                    .reconciler
                    .action_finished(&action, outcome, handle.now());
            }
            Report::Problem(problem) => {
                let level_forbidden = problem.forbidden;
                let text = format!("kubernetes {}: {}", problem.area, problem.what);
                if level_forbidden {
                    tracing::error!("{text}");
                } else {
                    tracing::warn!("{text}");
                }
                module.kube_problems.insert(problem.area.clone(), problem);
            }
            Report::Cleared { area } => {
                if module.kube_problems.remove(&area).is_some() {
                    tracing::info!("kubernetes {area}: recovered");
                }
            }
        }
    }
    if changed {
        super::state_changed(shared, handle);
    }
}
