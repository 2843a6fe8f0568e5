//! The one request of a handler of one resource: the app state, the caller's tenant and the
//! route's `{id}`, extracted in that order (a missing tenant 401, a malformed id 400), with the
//! JSON body of a write ([`ByIdJson`]), and the one read and delete of it in a transaction of
//! the tenant ([`super::tx`]).

use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::StatusCode;
use bulkhead_core::id::IdKind;
use bulkhead_core::PrefixedId;
use bulkhead_store::TenantTx;
use serde::de::DeserializeOwned;

use super::tx;
use super::validate::{PathId, PathIdJson};
use super::write::Tail;
use crate::http::error::ApiError;
use crate::http::extract::Tenant;
use crate::http::state::AppState;

/// A request to one resource of the caller's tenant, named by the route's `{id}`.
pub(crate) struct ById<K: IdKind> {
    pub(crate) state: AppState,
    pub(crate) tenant: Tenant,
    pub(crate) id: PrefixedId<K>,
}

impl<K: IdKind> FromRequestParts<AppState> for ById<K> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let tenant = Tenant::from_request_parts(parts, state).await?;
        let PathId(id) = PathId::from_request_parts(parts, state).await?;
        let state = state.clone();
        Ok(Self { state, tenant, id })
    }
}

impl<K: IdKind> ById<K> {
    /// `reads` of the resource in one read-only transaction of the tenant.
    pub(crate) async fn read<T, E: Into<ApiError>>(
        &self,
        reads: impl AsyncFnOnce(&mut TenantTx, PrefixedId<K>) -> Result<T, E>,
    ) -> Result<T, ApiError> {
        let id = self.id;
        tx::read(&self.state, &self.tenant.0, async |tx| {
            reads(tx, id).await.map_err(Into::into)
        })
        .await
    }

    /// `delete` of the resource in one read-write transaction, committed with `tail` (its audit
    /// event and platform events): 204.
    pub(crate) async fn delete<E: Into<ApiError>>(
        &self,
        delete: impl AsyncFnOnce(&mut TenantTx, PrefixedId<K>) -> Result<(), E>,
        tail: Tail,
    ) -> Result<StatusCode, ApiError> {
        let id = self.id;
        tx::write(&self.state, &self.tenant.0, async |tx| {
            delete(tx, id).await.map_err(Into::into)?;
            Ok(((), tail))
        })
        .await?;
        Ok(StatusCode::NO_CONTENT)
    }
}

/// [`ById`] with the JSON body of a write. The body is read first, and its refusal
/// (400/413/415/422) answers before a malformed id's 400 ([`PathIdJson`]).
pub(crate) struct ByIdJson<K: IdKind, B>(pub(crate) ById<K>, pub(crate) B);

impl<K: IdKind, B: DeserializeOwned> FromRequest<AppState> for ByIdJson<K, B> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, ApiError> {
        let (mut parts, body) = request.into_parts();
        let tenant = Tenant::from_request_parts(&mut parts, state).await?;
        let request = Request::from_parts(parts, body);
        let PathIdJson(id, body) = PathIdJson::from_request(request, state).await?;
        let state = state.clone();
        Ok(Self(ById { state, tenant, id }, body))
    }
}
