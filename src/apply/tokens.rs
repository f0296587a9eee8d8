//! Reader tokens for remote secrets: a TokenRequest bound to a binding
//! Secret per holder, or the legacy token Secret's (`tokens.mode = "secret"`).
//! Tokens stay in memory; nothing here prints or logs one.

use super::*;

/// A reader token, and the binding Secret it dies with (name and UID) when
/// it was requested; a legacy or dry-run token has none.
pub(super) struct Minted {
    pub token: SecretString,
    pub binding: Option<(String, String)>,
}

impl Run<'_> {
    /// A token of `peer`'s account `account` for `holder` (the plan says
    /// which: the control-plane account for a remote's control plane, else
    /// the reader). A requested token is bound to a binding Secret made for
    /// it in the peer, which stands for the holder: deleting it revokes the
    /// token, whichever account it was issued to (pkg/serviceaccount/claims.go
    /// in Kubernetes checks that the bound Secret exists with the same UID).
    /// A legacy token is shared by every primary: read once per run.
    pub(super) async fn token(&self, holder: &str, peer: &str, account: ReaderScope) -> Result<Minted, String> {
        let unbound = |token| Minted { token, binding: None };
        if self.settings.dry_run {
            // Nothing persists in a dry run, so no credential is minted for it.
            return Ok(unbound(SecretString::from("dry-run")));
        }
        let connection = self.connection(peer)?;
        if self.target.topology.mesh.tokens.mode == TokenMode::Secret {
            let cell = self
                .tokens
                .get(&(peer, account))
                .ok_or_else(|| format!("no token slot for {peer}"))?;
            let token = cell
                .get_or_init(|| legacy_token(connection, self.ns(), account))
                .await
                .clone();
            return token.map(unbound);
        }
        let identity = self
            .target
            .observed
            .facts(holder)
            .map(|f| f.identity.as_str())
            .unwrap_or_default();
        let secrets: Api<Secret> = Api::namespaced(connection.client.clone(), self.ns());
        let binding = secrets
            .create(
                &PostParams {
                    dry_run: false,
                    field_manager: Some(FIELD_MANAGER.to_string()),
                },
                &build::token_binding(self.ns(), self.mesh(), holder, identity),
            )
            .await
            .map_err(|e| {
                format!(
                    "cannot create the token's binding Secret in {peer}: {}",
                    describe(peer, &e)
                )
            })?;
        let accounts: Api<ServiceAccount> = Api::namespaced(connection.client.clone(), self.ns());
        let bound = binding.metadata.name.clone().zip(binding.metadata.uid.clone());
        let request = TokenRequest {
            spec: TokenRequestSpec {
                expiration_seconds: Some(self.target.topology.mesh.tokens.lifetime_seconds as i64),
                bound_object_ref: Some(BoundObjectReference {
                    api_version: Some("v1".into()),
                    kind: Some("Secret".into()),
                    name: binding.metadata.name,
                    uid: binding.metadata.uid,
                }),
                ..TokenRequestSpec::default()
            },
            ..TokenRequest::default()
        };
        let response = accounts
            .create_token_request(account.service_account(), &PostParams::default(), &request)
            .await
            .map_err(|e| {
                format!(
                    "cannot get a token of the {} {} from {peer}: {}",
                    account.describe(),
                    account.service_account(),
                    describe(peer, &e)
                )
            })?;
        let token = response
            .status
            .map(|s| SecretString::from(s.token))
            .ok_or_else(|| format!("{peer} answered the token request without a token"))?;
        Ok(Minted { token, binding: bound })
    }

    /// Revokes a token that was minted but never stored: deletes its binding
    /// Secret in `peer` (by UID, so only that one). Only for a write the API
    /// server refused outright; after a timeout the token may be in place.
    pub(super) async fn discard(&self, peer: &str, minted: &Minted) -> Result<(), String> {
        let Some((name, uid)) = &minted.binding else {
            return Ok(());
        };
        let connection = self.connection(peer)?;
        let secrets: Api<Secret> = Api::namespaced(connection.client.clone(), self.ns());
        let params = DeleteParams {
            preconditions: Some(Preconditions {
                uid: Some(uid.clone()),
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        match secrets.delete(name, &params).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
            Err(e) => Err(format!("Secret {}/{name} in {peer}: {}", self.ns(), describe(peer, &e))),
        }
    }
}

/// The token the token controller put into the account's legacy Secret; it
/// may take a moment after the Secret is created.
pub(super) async fn legacy_token(
    connection: &Connection,
    ns: &str,
    account: ReaderScope,
) -> Result<SecretString, String> {
    let secrets: Api<Secret> = Api::namespaced(connection.client.clone(), ns);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let secret = secrets
            .get_opt(account.token_secret())
            .await
            .map_err(|e| describe(&connection.cluster, &e))?;
        let token = secret
            .as_ref()
            .and_then(|s| s.data.as_ref())
            .and_then(|d| d.get("token"));
        if let Some(token) = token.and_then(|t| String::from_utf8(t.0.clone()).ok()) {
            return Ok(SecretString::from(token));
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(format!(
                "Secret {ns}/{} in {} has no token after 30s: is the token controller running?",
                account.token_secret(),
                connection.cluster
            ));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
