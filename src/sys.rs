//! Raw bindings made by bindgen from `flux-headers/` and committed (`build.rs` checks
//! them where libclang is available). Only `crate::flux` uses them.

#![allow(
    non_camel_case_types,
    non_upper_case_globals,
    non_snake_case,
    dead_code,
    unsafe_op_in_unsafe_fn,
    clippy::all,
    clippy::undocumented_unsafe_blocks
)]

include!("sys/bindings.rs");
