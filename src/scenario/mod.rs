//! End-to-end runs of the real pieces: the [`Engine`](crate::engine::Engine) and a real
//! [`Driver`](crate::k8s::Driver) against the simulated API server
//! ([`SimCluster`](crate::sim::SimCluster)) and the simulated Flux side
//! ([`SimFlux`](crate::sim::flux::SimFlux)), wired the way the broker module wires them.
//!
//! - [`Cluster`]: the runner. It pumps Flux stream payloads and driver reports into the
//!   engine, carries out its effects, and keeps a timeline of what happened and why.
//! - [`Script`]: the line-based scenario format of `examples/scenarios/*.txt`.
//! - [`play`]: runs a script with fluxk8s (checking its `expect` lines) or by hand (the
//!   way people resize today: drain in Flux, patch the MiniCluster size).

mod cluster;
mod picture;
mod play;
mod script;

pub use cluster::{Cluster, ClusterSpec, JobKind, Mode, RunError, quick_planner};
pub use picture::timeline_svg;
pub use play::{Check, Checkpoint, Outcome, play};
pub use script::{Command, Expectation, ParseError, Script, Step};

/// The namespace every scenario runs in.
pub const NAMESPACE: &str = "flux";
