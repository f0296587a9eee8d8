//! Reader tokens for remote secrets: a TokenRequest bound to a binding
//! Secret per holder, or the legacy token Secret's (`tokens.mode = "secret"`).
//! Tokens stay in memory; nothing here prints or logs one.

use super::*;

impl Run<'_> {
    /// A reader token of `peer` for `holder`. A requested token is bound to
    /// a binding Secret made for it in the peer, which stands for the holder:
    /// deleting it revokes the token (pkg/serviceaccount/claims.go in
    /// Kubernetes checks that the bound Secret exists with the same UID).
    /// A legacy token is shared by every primary: read once per run.
    pub(super) async fn token(&self, holder: &str, peer: &str) -> Result<SecretString, String> {
        if self.settings.dry_run {
            // Nothing persists in a dry run, so no credential is minted for it.
            return Ok(SecretString::from("dry-run"));
        }
        let connection = self.connection(peer)?;
        if self.target.topology.mesh.tokens.mode == TokenMode::Secret {
            let cell = self
                .tokens
                .get(peer)
                .ok_or_else(|| format!("no token slot for {peer}"))?;
            return cell.get_or_init(|| legacy_token(connection, self.ns())).await.clone();
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
            .create_token_request(objects::READER_SERVICE_ACCOUNT, &PostParams::default(), &request)
            .await
            .map_err(|e| format!("cannot get a reader token from {peer}: {}", describe(peer, &e)))?;
        response
            .status
            .map(|s| SecretString::from(s.token))
            .ok_or_else(|| format!("{peer} answered the token request without a token"))
    }
}

/// The token the token controller put into the reader's legacy Secret; it
/// may take a moment after the Secret is created.
pub(super) async fn legacy_token(connection: &Connection, ns: &str) -> Result<SecretString, String> {
    let secrets: Api<Secret> = Api::namespaced(connection.client.clone(), ns);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let secret = secrets
            .get_opt(objects::READER_TOKEN_SECRET)
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
                objects::READER_TOKEN_SECRET,
                connection.cluster
            ));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
