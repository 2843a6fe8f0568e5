//! What happens to a whole tenant: onboarding, suspension and reactivation, and moves between
//! locations. These write the registry, the tenant's repositories and its audit log together,
//! so they sit above all three; placement never calls back into them.

pub mod deletion;
pub mod moves;
mod onboarding;
pub mod portability;
mod status;
