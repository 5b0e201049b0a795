//! End-to-end runs of the real pieces: the [`Engine`](crate::engine::Engine) and a real
//! [`Driver`](crate::k8s::Driver) against the simulated API server
//! ([`SimCluster`](crate::sim::SimCluster)) and the simulated Flux side
//! ([`SimFlux`](crate::sim::flux::SimFlux)), wired the way the broker module wires them.
//!
//! - [`World`]: the wiring, the one harness everything below stands on. It pumps Flux
//!   stream payloads and driver reports into the engine and carries out its effects,
//!   timing every engine call ([`CallTimings`]). The fault tests and the bench use it
//!   directly.
//! - [`Cluster`]: the scenario runner on a world, with a timeline of what happened and
//!   why; the demo and the end-to-end tests use it.
//! - [`Script`]: the line-based scenario format of `examples/scenarios/*.txt`.
//! - [`play`]: runs a script with fluxk8s (checking its `expect` lines) or by hand (the
//!   way people resize today: drain in Flux, patch the MiniCluster size).
//! - [`flux_core`]: finding and driving a real flux-core, for the real-broker tests and
//!   the bench.

mod cluster;
pub mod flux_core;
mod picture;
mod play;
mod script;
mod spec;
mod timings;
mod world;

pub use cluster::{Cluster, Mode, quick_planner};
pub use picture::timeline_svg;
pub use play::{Check, Checkpoint, Outcome, play};
pub use script::{Command, Expectation, ParseError, Script, Step};
pub use spec::{ClusterSpec, JobKind};
pub use timings::{CallStats, CallTimings};
pub use world::{
    ALL_VERBS, RESOURCES, RunError, Traffic, World, answered, api_down, default_sim,
    events_with_reason, fast_tuning, test_planner,
};

/// The namespace every run happens in.
pub const NAMESPACE: &str = "flux";
