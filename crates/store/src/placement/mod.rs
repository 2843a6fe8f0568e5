//! Where a tenant's rows live and the one way in.
//!
//! Dependencies run one way: [`door`] opens a tenant transaction (entered in one round trip by
//! [`entry`]) through the [`gate`] in the
//! [`location`] the [`registry`] names; [`migrate`] brings a location's schema up to date and
//! [`tiers`] prepares locations and registers dedicated databases. Nothing here reaches a
//! tenant repository or the audit log: onboarding and moves, which write those, live in
//! [`crate::lifecycle`].

pub mod door;
pub mod entry;
pub mod gate;
pub(crate) mod key_cache;
pub mod location;
pub mod migrate;
pub mod registry;
pub mod tiers;
pub(crate) mod wake;
