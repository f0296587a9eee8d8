//! meshform keeps a multi-cluster Istio mesh in the shape declared in a
//! topology file (`mesh.toml`).
//!
//! The modules follow the pipeline: [`topology`] (file model and validation)
//! → [`access`] (clients from kubeconfigs) → [`observe`] (reads clusters) →
//! [`plan`] (pure diff into actions) → [`apply`] (writes) → [`render`] (text,
//! markdown, JSON). A module imports only those before it; [`objects`] (the
//! names and hashes of what meshform writes) serves them all. [`reconcile`]
//! runs the steps in order (connect, lock, observe, plan, execute) for every
//! shell, and [`cli`] is one such shell: arguments in, output out.
//! [`controller`] runs the same reconcile until stopped.
//! [`trust`] (certificates, the root of trust's key, issuing intermediates)
//! serves observe and apply, as [`objects`] does.

pub mod access;
pub mod apply;
pub mod check;
pub mod cli;
pub mod controller;
pub mod import;
pub mod objects;
pub mod observe;
pub mod plan;
pub mod reconcile;
pub mod render;
pub mod topology;
pub mod trust;
