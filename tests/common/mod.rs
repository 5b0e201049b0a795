//! Support shared by the integration tests.

pub mod bridge;
pub mod cluster;
