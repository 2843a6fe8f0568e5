//! Bulkhead's shared vocabulary. No I/O happens in this crate.
//!
//! # Invariants
//! - Every public identifier is a [`PrefixedId`]: a type prefix (`tnt_`, `sess_`, …) and a 128-bit
//!   UUIDv7 written as 26 lowercase Crockford base-32 characters (the TypeID layout). Parsing is
//!   strict: the exact prefix of the expected type, exact length, lowercase alphabet only. An id of
//!   one type never parses as another type, so a tenant id cannot be passed where a session id goes.
//! - A [`TenantContext`] names exactly one tenant. Everything that touches tenant data takes one by
//!   reference; there is no "all tenants" value and no default. Constructing one is a security
//!   decision, so the fields are private and each named constructor is one kind of decision:
//!   - [`TenantContext::for_credential`] takes a [`Credential`] (an API key or an access token,
//!     never the system actor): the server's resolution (`http::resolve`, after the tenant and
//!     the credential agree) and OAuth client authentication (`service::oauth`, and the key
//!     ceilings of `service::ceilings`, for a key already verified for its tenant).
//!   - [`TenantContext::for_system`] builds the system actor itself from a component name: the
//!     job worker and sweeps (`service::worker`, after the registry says the tenant is active),
//!     the audit log's sequencer and authentication-failure writer (`service::audit_log`), key
//!     bookkeeping off the request path (`service::credentials`), the OAuth grants that
//!     authenticate a refresh or subject token (`service::oauth`), the login endpoint's tenant
//!     named by host or body (`http::resolve`), the operator commands (`cli`), tenant
//!     onboarding, status changes and moves in the store (`lifecycle`), and the webhook
//!     dispatcher (`bulkhead-webhooks`). Route handlers never call it (the architecture checker
//!     refuses it under `http/routes`).
//!   - [`TenantContext::narrowed`] keeps tenant, actor and request and cuts the scopes to a role
//!     ceiling (resolution).
//!   - `TenantContext::for_test` takes any actor, behind the `testing` feature that only
//!     dev-dependencies (through `bulkhead-test-support`) enable.
//! - [`TenantCache`] keys always contain the [`TenantId`] of the context they were written under;
//!   there is no method that reads or writes without a context.
//! - [`TenantSlug`] values are valid DNS labels and never one of the [reserved](slug::RESERVED_SLUGS) names.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod cache;
pub mod clock;
pub mod context;
pub mod id;
pub mod net;
pub mod operator;
pub mod prefix;
pub mod scope;
pub mod slug;
pub mod tool;

pub use cache::TenantCache;
pub use clock::Clock;
pub use context::{Actor, Credential, TenantContext};
pub use id::{
    AccessTokenId, ApiKeyId, AuditEventId, AuthSessionId, IdError, JobId, PrefixedId, RequestId,
    SessionId, TenantId, UserId,
};
pub use id::{
    AgentId, OAuthClientId, OAuthGrantId, OAuthResourceId, OperatorEventId, OperatorKeyId,
    RoleAssignmentId, RoleId,
};
pub use id::{AttemptId, DeliveryId, EndpointId, MessageId, ScreeningId, ToolCallId, ToolId};
pub use operator::{OperatorScope, OperatorScopes};
pub use prefix::{Namespace, NamespaceError};
pub use scope::{Scope, ScopeSet, UnknownScope};
pub use slug::{SlugError, TenantSlug};
pub use tool::{ToolName, ToolNameError};
