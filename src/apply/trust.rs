//! Managed trust in apply: a primary's `cacerts` Secret with an intermediate
//! issued now by the root's [`Signer`](crate::trust::Signer), and the istiod
//! restart that makes istiod take up a new root.
//!
//! The intermediate's key exists only between its making and the write of
//! its Secret; the diff shows that the Secret's values changed, never them.

use k8s_openapi::ByteString;
use kube::core::ObjectMeta;
use secrecy::ExposeSecret;

use super::*;
use crate::plan::CaCertsMode;

impl Run<'_> {
    pub(super) async fn write_ca_certs(
        &self,
        cluster: &str,
        client: kube::Client,
        mode: CaCertsMode,
        (root_sha256, previous_root_sha256): (&str, Option<&str>),
        lifetime_seconds: u64,
        precondition: Option<&Precondition>,
    ) -> Result<Option<String>, String> {
        let signer = self
            .target
            .signer
            .ok_or("the root of trust was not loaded for this run (mesh.toml has no managed [mesh.trust])")?;
        if signer.root_sha256() != root_sha256 {
            return Err(format!(
                "the root certificate is not the one the plan was made for (sha256:{} now): plan again",
                &signer.root_sha256()[..16]
            ));
        }
        // Stage 3 drops the previous root: its plan names none, while
        // mesh.toml still declares it until the rotation is complete.
        if mode != CaCertsMode::DropPrevious && signer.previous_root_sha256() != previous_root_sha256 {
            return Err(
                "the previous root certificate (`previous_root_cert`) is not the one the plan was made for: plan again"
                    .to_string(),
            );
        }
        if mode == CaCertsMode::TrustBoth {
            return self.trust_both(cluster, client, signer, precondition).await;
        }
        let trust_previous = mode == CaCertsMode::SignWithNew;
        let issued = signer
            .issue(
                self.mesh(),
                cluster,
                lifetime_seconds,
                trust_previous,
                jiff::Timestamp::now(),
            )
            .map_err(|e| e.to_string())?;
        let ns = self.ns();
        let name = objects::CA_CERTS_SECRET;
        let data = [
            (objects::CA_CERT_KEY, issued.ca_cert.as_bytes()),
            (objects::CA_KEY_KEY, issued.ca_key.expose_secret().as_bytes()),
            (objects::CA_CHAIN_KEY, issued.cert_chain.as_bytes()),
            (objects::CA_ROOT_CERT_KEY, issued.root_cert.as_bytes()),
        ];
        let secret = Secret {
            metadata: ObjectMeta {
                name: Some(name.to_string()),
                namespace: Some(ns.to_string()),
                labels: Some(objects::managed_labels(self.mesh())),
                resource_version: precondition.map(|p| p.resource_version.clone()),
                ..ObjectMeta::default()
            },
            type_: Some("Opaque".to_string()),
            data: Some(
                data.into_iter()
                    .map(|(k, v)| (k.to_string(), ByteString(v.to_vec())))
                    .collect(),
            ),
            ..Secret::default()
        };
        drop(issued);
        let api: Api<Secret> = Api::namespaced(client, ns);
        match mode {
            // A create: never merged into a `cacerts` someone made since observe.
            CaCertsMode::Create if !self.settings.dry_run => match self.create(cluster, &api, &secret).await? {
                Created::New(diff) => Ok(diff),
                Created::Existing(_) => Err(format!(
                    "Secret {ns}/{name} was created by someone else after this run read the cluster; it was left as it is: plan and apply again"
                )),
            },
            CaCertsMode::Create
            | CaCertsMode::Renew
            | CaCertsMode::Reissue
            | CaCertsMode::SignWithNew
            | CaCertsMode::DropPrevious
            // Handled above; never reached.
            | CaCertsMode::TrustBoth => self.ssa(cluster, &api, name, &secret, true).await,
            // Tools keep whole copies of what they applied in annotations: of
            // a hand-made `cacerts`, that is the replaced intermediate's key,
            // still trusted by the root until it ends. Removed with the take-over.
            // Observe reads no annotation of `cacerts`, so every kind of copy
            // is removed.
            CaCertsMode::Adopt => {
                let copies = objects::OBJECT_COPY_ANNOTATIONS.map(String::from);
                self.adopt(cluster, &api, name, secret, &copies).await
            }
        }
    }

    /// A rotation's first stage: `root-cert.pem` alone is replaced by both
    /// roots, with a merge patch that names no other key, so the
    /// intermediate's key is neither read nor sent. The intermediate still
    /// verifies (it is of the previous root, one of the two), which is all
    /// istiod asks of the files when it starts
    /// (security/pkg/pki/util/keycertbundle.go, `Verify`: any root of the
    /// bundle). The resourceVersion refuses a `cacerts` changed since observe.
    async fn trust_both(
        &self,
        cluster: &str,
        client: kube::Client,
        signer: &crate::trust::Signer,
        precondition: Option<&Precondition>,
    ) -> Result<Option<String>, String> {
        use base64::Engine;
        let precondition = precondition.ok_or("a rotation's first stage changes an existing cacerts: plan again")?;
        let both = signer
            .both_roots_pem()
            .ok_or("no previous root was loaded for this run: plan again")?;
        let patch = serde_json::json!({
            "metadata": {"resourceVersion": precondition.resource_version},
            "data": {(objects::CA_ROOT_CERT_KEY): base64::engine::general_purpose::STANDARD.encode(both)},
        });
        let api: Api<Secret> = Api::namespaced(client, self.ns());
        self.merge(cluster, &api, objects::CA_CERTS_SECRET, &patch).await
    }

    /// `kubectl rollout restart` of each istiod Deployment.
    pub(super) async fn restart_istiod(
        &self,
        cluster: &str,
        client: kube::Client,
        deployments: &[String],
    ) -> Result<Option<String>, String> {
        let api: Api<Deployment> = Api::namespaced(client, self.ns());
        let (patch, params) = self.rollout_restart();
        for name in deployments {
            api.patch(name, &params, &Patch::Merge(&patch))
                .await
                .map_err(|e| describe(cluster, &e))?;
        }
        Ok(Some(format!("restarted Deployment {}", deployments.join(", "))))
    }
}
