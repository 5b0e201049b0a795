//! The request log: every request the server answered, for tests and benchmarks.

use std::time::Instant;

use super::faults::Verb;

/// One answered request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestRecord {
    pub method: String,
    /// `None` for discovery and unknown paths.
    pub verb: Option<Verb>,
    /// `pods`, `miniclusters/scale`, ... (`None` when `verb` is).
    pub resource: Option<String>,
    pub path: String,
    pub query: String,
    pub content_type: Option<String>,
    pub status: u16,
    /// When the request reached the server, before any injected hold or latency (for
    /// latency measurements against the client's clock: both run in one process).
    pub received: Instant,
    /// When the answer was ready (a watch's: when its stream began), so that
    /// `answered - received` is the server's own time.
    pub answered: Instant,
}

/// A snapshot of the request log.
#[derive(Debug, Clone, Default)]
pub struct RequestLog {
    pub records: Vec<RequestRecord>,
}

impl RequestLog {
    /// Requests with this verb on this resource.
    pub fn count(&self, verb: Verb, resource: &str) -> usize {
        self.records
            .iter()
            .filter(|r| r.verb == Some(verb) && r.resource.as_deref() == Some(resource))
            .count()
    }

    /// Requests answered with this HTTP status.
    pub fn count_status(&self, status: u16) -> usize {
        self.records.iter().filter(|r| r.status == status).count()
    }

    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }
}
