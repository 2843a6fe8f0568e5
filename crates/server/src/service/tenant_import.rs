//! Importing a tenant's archive (`service::portability`) into this deployment, one way for
//! `bulkhead tenant import` on the database directly and for `POST /operator/v1/tenant-imports`
//! (which the same command uses through a running server's operator socket).
//!
//! Invariants:
//! - **All or nothing.** The archive is read once, as it arrives, and its rows written as they are
//!   read; only when every file matched the manifest is anything committed. An archive that
//!   breaks off, a wrong hash, a slug or id already here: nothing of the tenant is kept.
//! - **Recorded first.** The operator log's `tenant.import` `started` event commits before the
//!   first row is written, and its `success` or `failure` event follows.

use bulkhead_auth::MasterKey;
use bulkhead_store::placement::registry::Tenant;
use bulkhead_store::{Store, StoreError};
use futures::FutureExt as _;
use tokio::io::AsyncRead;

use super::operators;
use super::portability::{self, CheckedArchive};
use super::tenants::{self, DedicatedDatabase};

/// Where an imported tenant goes.
#[derive(Debug, Clone, Copy)]
pub struct ImportPlace<'a> {
    /// `shared`, `schema` or `dedicated`, as for `tenant create`.
    pub tier: &'a str,
    /// Its region here (default: the exported one).
    pub region: Option<&'a str>,
    /// The dedicated database (tier `dedicated`).
    pub dedicated: Option<&'a DedicatedDatabase>,
    /// The master key, to seal a dedicated database's URLs.
    pub master: Option<&'a MasterKey>,
}

/// A failed import: nothing of the tenant was kept. The cause is kept whole, so a caller can
/// tell the archive's fault (a `bail!` of the reader), the upload's (an `std::io::Error`) and
/// the deployment's (a [`StoreError`]) apart by downcasting.
#[derive(Debug)]
pub struct ImportFailed(pub anyhow::Error);

impl std::fmt::Display for ImportFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:#}", self.0)
    }
}

impl From<StoreError> for ImportFailed {
    fn from(err: StoreError) -> Self {
        Self(err.into())
    }
}

/// Reads `input` and imports the tenant it holds at `place`, audited as `actor` (`metadata`:
/// what the operator log says of the source). `owner` must be a store on the owner role.
/// Returns the checked archive and the tenant as registered here.
pub async fn import<R: AsyncRead + Unpin>(
    owner: &Store,
    input: R,
    place: ImportPlace<'_>,
    actor: &str,
    metadata: serde_json::Value,
) -> Result<(CheckedArchive, Tenant), ImportFailed> {
    let placing = |tenant: &Tenant| {
        let (slug, id) = (tenant.slug.clone(), tenant.id);
        let region = place
            .region
            .map_or_else(|| tenant.region.clone(), str::to_owned);
        async move {
            let placement = tenants::placement(
                owner,
                place.tier,
                place.dedicated,
                &slug,
                Some(id),
                &region,
                place.master,
                actor,
            )
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
            Ok((placement, region))
        }
        .boxed()
    };
    let work = portability::read(input, Some((owner, &placing)));
    let (checked, tenant) = operators::audited(
        owner,
        actor,
        "tenant.import",
        None,
        metadata,
        |(checked, _): &(CheckedArchive, _)| checked.manifest.tenant_id.to_string(),
        work.map(|r| r.map_err(ImportFailed)),
    )
    .await?;
    let tenant = tenant.ok_or_else(|| {
        // `read` with an import always returns the tenant it registered.
        ImportFailed(anyhow::anyhow!("the import registered no tenant"))
    })?;
    Ok((checked, tenant))
}
