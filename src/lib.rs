//! fluxk8s: a flux-core broker module that makes a Flux instance running on Kubernetes
//! elastic, with Flux as the source of truth.
//!
//! The crate is laid out one concern per module:
//! - [`flux`]: the safe layer over the broker's C API (all `unsafe` lives there);
//! - [`model`]: Flux rank state and the Kubernetes view, parsed from real payloads, and
//!   how an action ends (done, retryable, refused) and what the driver reports;
//! - [`planner`]: the pure decision logic (views in, actions and typed verdicts out; words
//!   only for a status);
//! - [`engine`]: the sans-I/O core around it (payloads and reports in, effects out),
//!   shared by the module, the demo and the end-to-end tests;
//! - [`k8s`]: the Kubernetes driver (kube client on its own thread);
//! - [`sim`]: a simulated API server (and Flux side) for tests and the demo;
//! - [`scenario`]: the simulated world (the engine and driver against the simulations)
//!   and the runs on it, shared by the demo, the end-to-end and fault tests and the bench;
//! - `module`: fluxk8s as a broker module (its `mod_main` is made by the entry point in
//!   [`flux`]) and its RPC handlers, private; what they read from outside is public for
//!   tests and fuzzers: [`config`] (the `[fluxk8s]` table and the module arguments) and
//!   [`rpc`] (the request payloads, parsed and checked).
//!
//! What fluxk8s relies on in flux-core, Kubernetes and the Flux Operator, with the source
//! of each fact and the test that checked it, is in `docs/flux-core.md` and
//! `docs/kubernetes.md`.

#[cfg(panic = "abort")]
compile_error!("fluxk8s relies on unwinding: mod_main catches panics so none reaches the broker");

mod sys;

pub mod engine;
pub mod flux;
pub mod k8s;
pub mod model;
pub mod planner;
#[cfg(feature = "sim")]
pub mod scenario;
#[cfg(feature = "sim")]
pub mod sim;

mod module;

pub use module::{config, rpc};
