//! Observing the Flux job queue with no polling: the job-manager's `events-journal`
//! stream, asked for only the events the queue view needs. It tells which ranks run jobs
//! and until when (which ranks a shrink may take, when a draining rank is free) and, for
//! autoscaling, what waits.

use serde_json::{Map, Value, json};

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
