//! meshform: a declarative reconciliation engine for multi-cluster Istio meshes.
