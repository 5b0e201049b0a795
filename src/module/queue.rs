//! Observing the Flux job queue for autoscaling, with no polling: the job-manager's
//! `events-journal` stream (only the events the queue view needs) is opened once
//! autoscaling is on.

use std::cell::RefCell;
use std::rc::Rc;

use serde_json::{Map, Value, json};

use super::Module;
use super::streams::{self, Stream};
use crate::flux::Handle;
use crate::model::queue::QUEUE_EVENTS;

/// The request for `job-manager.events-journal`: active jobs, filtered to the events the
/// queue view reads.
pub(crate) fn request_payload() -> String {
    let allow: Map<String, Value> = QUEUE_EVENTS
        .iter()
        .map(|&name| (name.to_owned(), json!(1)))
        .collect();
    json!({"allow": allow, "full": false}).to_string()
}

/// Opens the job stream when autoscaling is on and it is not followed yet. Turning
/// autoscaling off leaves it open: the job-manager offers no cancel by future, and an
/// idle stream costs nothing.
pub(crate) fn follow(shared: &Rc<RefCell<Module>>, handle: &Handle) {
    let wanted = {
        let module = shared.borrow();
        module.config.autoscale && !module.streams.jobs.is_following()
    };
    if wanted {
        streams::subscribe(shared, handle, Stream::Jobs);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_request_allows_exactly_the_queue_events() {
        let request: Value = serde_json::from_str(&request_payload()).unwrap();
        let allow = request["allow"].as_object().unwrap();
        assert_eq!(allow.len(), QUEUE_EVENTS.len());
        assert!(QUEUE_EVENTS.iter().all(|name| allow[*name] == 1));
        assert_eq!(request["full"], false);
    }
}
