//! API errors as the API server reports them: a `Status` object with the matching HTTP code.

use serde_json::{Value, json};

/// A failed API call: HTTP code, `Status.reason` and message, plus the object it is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub code: u16,
    pub reason: &'static str,
    pub message: String,
    /// `details.name` / `details.kind` of the Status (kind is the plural resource name).
    pub details: Option<(String, String)>,
}

impl ApiError {
    pub fn new(code: u16, reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            reason,
            message: message.into(),
            details: None,
        }
    }

    fn about(mut self, resource: &str, name: &str) -> Self {
        // The real server puts the plural resource (without group) in details.kind.
        let plural = resource.split('.').next().unwrap_or(resource);
        self.details = Some((name.to_owned(), plural.to_owned()));
        self
    }

    /// `pods "x" not found`; `resource` is the group-qualified plural (`jobs.batch`).
    pub fn not_found(resource: &str, name: &str) -> Self {
        Self::new(404, "NotFound", format!("{resource} \"{name}\" not found")).about(resource, name)
    }

    pub fn already_exists(resource: &str, name: &str) -> Self {
        Self::new(
            409,
            "AlreadyExists",
            format!("{resource} \"{name}\" already exists"),
        )
        .about(resource, name)
    }

    /// `Operation cannot be fulfilled on ...`: a failed precondition or a stale resourceVersion.
    pub fn conflict(resource: &str, name: &str, why: &str) -> Self {
        Self::new(
            409,
            "Conflict",
            format!("Operation cannot be fulfilled on {resource} \"{name}\": {why}"),
        )
        .about(resource, name)
    }

    /// The optimistic-concurrency conflict of a write with an old resourceVersion.
    pub fn modified(resource: &str, name: &str) -> Self {
        Self::conflict(
            resource,
            name,
            "the object has been modified; please apply your changes to the latest version and \
             try again",
        )
    }

    /// 422 with the validation message shape `Kind.group "name" is invalid: field: why`.
    pub fn invalid(kind_group: &str, name: &str, field_errors: &str) -> Self {
        Self::new(
            422,
            "Invalid",
            format!("{kind_group} \"{name}\" is invalid: {field_errors}"),
        )
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", message)
    }

    /// A watch or list from a resourceVersion older than the retained history.
    pub fn expired(requested: u64, oldest: u64) -> Self {
        Self::new(
            410,
            "Expired",
            format!("too old resource version: {requested} ({oldest})"),
        )
    }

    /// The `Status` object the server sends as the response body (or a watch ERROR event).
    pub fn to_status(&self) -> Value {
        let mut status = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        });
        if let Some((name, kind)) = &self.details {
            status["details"] = json!({"name": name, "kind": kind});
        }
        status
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}: {}", self.code, self.reason, self.message)
    }
}

impl std::error::Error for ApiError {}

/// The `Status` a successful eviction (and other status-only answers) returns.
pub fn success_status(code: u16) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": code})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn not_found_status_matches_the_api_server_shape() {
        let status = ApiError::not_found("jobs.batch", "flux-sample").to_status();
        assert_eq!(status["message"], "jobs.batch \"flux-sample\" not found");
        assert_eq!(status["reason"], "NotFound");
        assert_eq!(status["code"], 404);
        assert_eq!(status["details"]["kind"], "jobs");
        assert_eq!(status["status"], "Failure");
    }
}
