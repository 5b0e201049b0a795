//! Which ranks run jobs: a drained rank is retired only when idle. Asked of the
//! job-manager (`job-manager.resource-status`, the allocated resource set) when a drained
//! rank may be waiting, and again every few seconds while one is; never otherwise.

use std::cell::RefCell;
use std::rc::Rc;

use serde_json::Value;

use super::Module;
use crate::flux::{Handle, Rpc, RpcError, Watcher};
use crate::model::IdSet;
use crate::model::queue::r_ranks;

/// How often the allocated set is asked again while a drained rank is still up.
const RECHECK: f64 = 5.0;
/// Planning waits for the answer; a job-manager that does not answer in this long is
/// reported and the last known set is used.
const ANSWER_WITHIN: f64 = 10.0;

#[derive(Default)]
pub(crate) struct BusyProbe {
    rpc: Option<Rpc>,
    timer: Option<Watcher>,
    /// Drained ranks still online when the allocated set was last asked.
    asked_for: IdSet,
    /// The answer for the current candidates has not arrived: plans wait for it.
    pub(crate) pending: bool,
}

/// Asks again if the candidates changed; keeps a recheck timer while there are any.
/// Returns true while an answer is awaited (planning should wait for it).
pub(crate) fn refresh_if_needed(shared: &Rc<RefCell<Module>>, handle: &Handle) -> bool {
    let mut module = shared.borrow_mut();
    let wanted = module.engine.busy_candidates();
    if wanted.is_empty() {
        module.busy.timer = None;
        module.busy.asked_for = wanted;
        return false;
    }
    let fresh_candidates = !wanted.difference(&module.busy.asked_for).is_empty();
    if fresh_candidates && module.busy.rpc.is_none() {
        module.busy.asked_for = wanted;
        drop(module);
        ask(shared, handle);
        module = shared.borrow_mut();
    }
    if module.busy.timer.is_none() {
        let weak = Rc::downgrade(shared);
        match Watcher::timer(handle, "busy recheck", RECHECK, RECHECK, move |handle| {
            if let Some(shared) = weak.upgrade() {
                let idle = shared.borrow().busy.rpc.is_none();
                if idle {
                    ask(&shared, handle);
                }
            }
        }) {
            Ok(timer) => module.busy.timer = Some(timer),
            Err(err) => module.note_problem(format!("busy recheck timer: {err}")),
        }
    }
    module.busy.pending
}

fn ask(shared: &Rc<RefCell<Module>>, handle: &Handle) {
    let weak = Rc::downgrade(shared);
    let sent = Rpc::call_within(
        handle,
        "job-manager.resource-status",
        None,
        0,
        ANSWER_WITHIN,
        move |handle, reply| {
            if let Some(shared) = weak.upgrade() {
                answered(&shared, handle, reply);
            }
        },
    );
    let mut module = shared.borrow_mut();
    match sent {
        Ok(rpc) => {
            module.busy.rpc = Some(rpc);
            module.busy.pending = true;
        }
        Err(err) => module.note_problem(format!("job-manager.resource-status: {err}")),
    }
}

fn answered(shared: &Rc<RefCell<Module>>, handle: &Handle, reply: Result<String, RpcError>) {
    let mut module = shared.borrow_mut();
    module.busy.rpc = None;
    module.busy.pending = false;
    let busy = match reply {
        Ok(payload) => allocated_ranks(&payload),
        // No job-manager: no job can be running.
        Err(err) if err.errno == libc::ENOSYS => Ok(IdSet::new()),
        Err(err) => Err(err.to_string()),
    };
    match busy {
        Ok(busy) => module.engine.set_busy(busy),
        // Keep the last known set: treating unknown as idle could kill running jobs.
        Err(err) => module.note_problem(format!("job-manager.resource-status: {err}")),
    }
    drop(module);
    super::state_changed(shared, handle);
}

/// The ranks of `{"allocated": R}`.
pub(crate) fn allocated_ranks(payload: &str) -> Result<IdSet, String> {
    let value: Value = serde_json::from_str(payload).map_err(|e| format!("not JSON: {e}"))?;
    match value.get("allocated") {
        None | Some(Value::Null) => Ok(IdSet::new()),
        Some(r) => r_ranks(r),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_allocated_ranks_of_r_version_1() {
        let payload = r#"{"allocated":{"version":1,"execution":{"R_lite":[
            {"rank":"1-2","children":{"core":"0-1"}},{"rank":"5","children":{"core":"0"}}],
            "starttime":0.0,"expiration":0.0,"nodelist":["n[1-2,5]"]}}}"#;
        assert_eq!(allocated_ranks(payload).unwrap().to_string(), "1-2,5");
    }

    #[test]
    fn nothing_allocated_is_the_empty_set() {
        assert!(allocated_ranks(r#"{"allocated":null}"#).unwrap().is_empty());
        assert!(allocated_ranks("{}").unwrap().is_empty());
        let empty = r#"{"allocated":{"version":1,"execution":{"R_lite":[]}}}"#;
        assert!(allocated_ranks(empty).unwrap().is_empty());
    }

    #[test]
    fn malformed_answers_are_errors() {
        assert!(allocated_ranks("nope").is_err());
        assert!(allocated_ranks(r#"{"allocated":{"version":1}}"#).is_err());
        assert!(
            allocated_ranks(r#"{"allocated":{"execution":{"R_lite":[{"rank":"x"}]}}}"#).is_err()
        );
    }
}
