//! Bulkhead's outbound webhooks.
//!
//! # Invariants
//! - Every outbound request goes through [`egress::EgressClient`]: the URL is judged before each
//!   attempt ([`egress::EgressPolicy::check_url`]), the client's only resolver is
//!   [`egress::GuardedResolver`] (one lookup, every answer judged, only vetted addresses reach
//!   the connector), redirects are never followed, proxies from the environment are ignored, and
//!   response bodies are read at most [`egress::RESPONSE_SAMPLE_BYTES`] deep.
//! - Only global unicast addresses are reached, unless the operator's allow list names an
//!   address; the operator's deny list wins over the allow list and also applies to the IPv4
//!   address an IPv6 address embeds.
//! - Signatures follow the Standard Webhooks specification byte for byte ([`signing`]); secrets
//!   never appear in `Debug` output or logs and are compared in constant time.
//! - Deliveries are durable and at-least-once ([`delivery`]): a delivery is claimed under a
//!   lease; it is finished only in the same transaction that records its attempt, so a worker
//!   that dies mid-delivery loses nothing (the lease expires and another worker claims it).
//! - A blocked attempt is recorded as blocked, audited (`webhook.blocked`) and never retried.
//! - Time comes from [`bulkhead_core::Clock`], so schedules are tested without sleeping.
#![forbid(unsafe_code, unused_must_use)]
#![warn(missing_docs)]

pub mod delivery;
pub mod egress;
pub mod headers;
pub mod schedule;
pub mod signing;

pub use egress::{
    CappedOutcome, EgressClient, EgressConfig, EgressError, EgressPolicy, GuardedResolver,
    HickoryResolver, HostResolver, StaticResolver,
};
pub use signing::{verify, Secret, SignatureError};
