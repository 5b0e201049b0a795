//! What a simulated run starts with: the workload that runs the brokers.

use super::world::RunError;

/// What runs the brokers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobKind {
    /// A Flux Operator MiniCluster; `complete_workers` is `spec.flux.completeWorkers`.
    MiniCluster { complete_workers: bool },
    /// An Indexed Job created directly, without an operator.
    BareJob,
}

/// The cluster a run starts with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterSpec {
    /// MiniCluster and Job name; brokers are `<name>-<rank>`.
    pub name: String,
    pub kind: JobKind,
    /// Ranks running at the start.
    pub size: u32,
    /// Configured ranks (the MiniCluster's `maxSize`, the Flux instance size).
    pub max_size: u32,
    /// `backoffLimitPerIndex` of the Job (for a MiniCluster: the operator variant of PR #213).
    pub backoff_limit_per_index: Option<u32>,
}

impl ClusterSpec {
    /// A MiniCluster as the released operator makes it (no per-index backoff, no
    /// completeWorkers).
    pub fn minicluster(size: u32, max_size: u32) -> Self {
        Self {
            name: "flux-sample".to_owned(),
            kind: JobKind::MiniCluster {
                complete_workers: false,
            },
            size,
            max_size,
            backoff_limit_per_index: None,
        }
    }

    /// A bare Indexed Job of `size` whose Flux instance has exactly `size` ranks.
    pub fn bare_job(size: u32) -> Self {
        Self {
            kind: JobKind::BareJob,
            max_size: size,
            ..Self::minicluster(size, size)
        }
    }

    /// The scenario-file form of this spec.
    pub fn describe(&self) -> String {
        let kind = match self.kind {
            JobKind::MiniCluster { .. } => "minicluster",
            JobKind::BareJob => "bare-job",
        };
        let mut text = format!("{kind} size={} max={}", self.size, self.max_size);
        if let Some(limit) = self.backoff_limit_per_index {
            text.push_str(&format!(" backoff-per-index={limit}"));
        }
        if self.kind
            == (JobKind::MiniCluster {
                complete_workers: true,
            })
        {
            text.push_str(" complete-workers");
        }
        text.push_str(&format!(" name={}", self.name));
        text
    }

    pub(super) fn check(&self) -> Result<(), RunError> {
        if self.size == 0 || self.size > self.max_size {
            return Err(RunError::Invalid(format!(
                "size {} must be between 1 and max {}",
                self.size, self.max_size
            )));
        }
        Ok(())
    }
}
