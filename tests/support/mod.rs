//! Shared helpers for meshform's integration tests.
//!
//! Each test file that needs them says `mod support;`. Not every file uses
//! every helper, hence the `dead_code` allowance.
#![allow(dead_code)]

pub mod ambient;
pub mod cli;
pub mod controlplane;
pub mod gobuild;
pub mod install;
pub mod istio;
pub mod istiod;
pub mod library;
pub mod mesh;
pub mod metrics;
pub mod plan_fixtures;
pub mod reporter;
pub mod snapshot;
pub mod state;
pub mod trust;
pub mod wds;
pub mod workload;
