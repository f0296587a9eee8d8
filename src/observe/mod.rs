//! Reading the clusters of a topology.

pub mod model;
pub mod synthetic;
