//! The engine's one-shot wake-up: no polling, a timer armed only for the moment the
//! engine has to plan again without an event (a rate window, cooldown or timeout ending,
//! moves left for the next pass, an autoscale idle timeout).

use std::cell::RefCell;
use std::rc::Rc;

use super::Module;
use crate::flux::{Handle, Watcher};

/// The armed wake-up, if any.
#[derive(Default)]
pub(crate) struct WakeTimer {
    timer: Option<Watcher>,
    at: Option<f64>,
}

/// Arms (or re-arms, or drops) the timer for the engine's next wake-up.
pub(crate) fn arm(shared: &Rc<RefCell<Module>>, handle: &Handle) {
    let mut module = shared.borrow_mut();
    let at = module.engine.wake_at();
    if at == module.wake_timer.at {
        return;
    }
    module.wake_timer.at = at;
    module.wake_timer.timer = None;
    let Some(at) = at else { return };
    let weak = Rc::downgrade(shared);
    let after = (at - module.now).max(0.0);
    let timer = Watcher::timer(handle, "planner wake-up", after, 0.0, move |handle| {
        if let Some(shared) = weak.upgrade() {
            // Forget it so the next plan arms again, even for the same time.
            shared.borrow_mut().wake_timer.at = None;
            super::state_changed(&shared, handle);
        }
    });
    match timer {
        Ok(timer) => module.wake_timer.timer = Some(timer),
        Err(err) => module.note_problem(format!("wake-up timer: {err}")),
    }
}
