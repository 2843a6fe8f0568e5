//! Token signing keys: deployment-wide control-plane rows, written only by the owner role.
//!
//! Lifecycle: a key is created `next` (published in the JWKS, signs nothing), becomes `current`
//! (signs) at the following rotation, then `retired` (still published until `publish_until`,
//! by which time every token it signed has expired), then deleted. So every key is in the JWKS
//! for a full rotation period before its first signature, and stays after its last one for
//! longer than any token lives.

use bulkhead_auth::signing::generate_signing_key;
use bulkhead_auth::MasterKey;
use chrono::{DateTime, Duration, Utc};
use sqlx::{PgConnection, PgPool};

use crate::{Store, StoreError};

/// Channel on which every change to the signing keys is announced.
pub const SIGNING_KEYS_CHANNEL: &str = "bulkhead_signing_keys";

/// Where a key is in its lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SigningKeyState {
    /// Published, not yet signing.
    Next,
    /// Signs new tokens.
    Current,
    /// Published until its tokens have expired.
    Retired,
}

impl SigningKeyState {
    fn parse(text: &str) -> Result<Self, StoreError> {
        match text {
            "next" => Ok(Self::Next),
            "current" => Ok(Self::Current),
            "retired" => Ok(Self::Retired),
            other => Err(StoreError::UnsafeConfiguration(format!(
                "unknown signing key state {other:?}"
            ))),
        }
    }
}

/// A stored signing key: its public half and its sealed private half.
#[derive(Clone)]
pub struct StoredSigningKey {
    /// The JWK `kid`.
    pub kid: String,
    /// Raw Ed25519 public key.
    pub public_key: Vec<u8>,
    /// Private key sealed under the master key, bound to `kid`.
    pub sealed_private_key: Vec<u8>,
    /// Lifecycle state.
    pub state: SigningKeyState,
    /// For retired keys: when they leave the JWKS.
    pub publish_until: Option<DateTime<Utc>>,
}

impl std::fmt::Debug for StoredSigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredSigningKey")
            .field("kid", &self.kid)
            .field("state", &self.state)
            .field("publish_until", &self.publish_until)
            .finish_non_exhaustive()
    }
}

type Row = (String, Vec<u8>, Vec<u8>, String, Option<DateTime<Utc>>);

fn from_row(
    (kid, public_key, sealed_private_key, state, publish_until): Row,
) -> Result<StoredSigningKey, StoreError> {
    Ok(StoredSigningKey {
        kid,
        public_key,
        sealed_private_key,
        state: SigningKeyState::parse(&state)?,
        publish_until,
    })
}

impl Store {
    /// Every key that is published at `now` (next, current, and retired ones not yet past
    /// `publish_until`).
    pub async fn published_signing_keys(
        &self,
        now: DateTime<Utc>,
    ) -> Result<Vec<StoredSigningKey>, StoreError> {
        let rows: Vec<Row> = sqlx::query_as(
            "SELECT kid, public_key, sealed_private_key, state, publish_until \
             FROM bulkhead.signing_keys \
             WHERE state <> 'retired' OR publish_until > $1 ORDER BY created_at",
        )
        .bind(now)
        .fetch_all(self.pool())
        .await?;
        rows.into_iter().map(from_row).collect()
    }

    /// A listener for [`SIGNING_KEYS_CHANNEL`].
    pub async fn listen_signing_keys(&self) -> Result<sqlx::postgres::PgListener, StoreError> {
        let mut listener = sqlx::postgres::PgListener::connect_with(self.pool()).await?;
        listener.listen(SIGNING_KEYS_CHANNEL).await?;
        Ok(listener)
    }
}

async fn insert_next(conn: &mut PgConnection, master: &MasterKey) -> Result<String, StoreError> {
    let generated = generate_signing_key();
    let sealed = master.seal_signing_key(&generated.kid, &generated.pkcs8);
    sqlx::query(
        "INSERT INTO bulkhead.signing_keys (kid, algorithm, public_key, sealed_private_key, state) \
         VALUES ($1, 'EdDSA', $2, $3, 'next')",
    )
    .bind(&generated.kid)
    .bind(&generated.public_key[..])
    .bind(sealed)
    .execute(&mut *conn)
    .await?;
    Ok(generated.kid)
}

async fn lock_and_notify(conn: &mut PgConnection) -> Result<(), StoreError> {
    sqlx::query("LOCK TABLE bulkhead.signing_keys IN EXCLUSIVE MODE")
        .execute(&mut *conn)
        .await?;
    sqlx::query("SELECT pg_notify($1, 'changed')")
        .bind(SIGNING_KEYS_CHANNEL)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Makes sure a current and a next key exist (first start). Owner role. Returns whether it
/// created anything.
pub async fn ensure_signing_keys(owner: &PgPool, master: &MasterKey) -> Result<bool, StoreError> {
    let mut tx = owner.begin().await?;
    lock_and_notify(&mut tx).await?;
    let states: Vec<(String,)> =
        sqlx::query_as("SELECT state FROM bulkhead.signing_keys WHERE state <> 'retired'")
            .fetch_all(&mut *tx)
            .await?;
    let has = |s: &str| states.iter().any(|(state,)| state == s);
    let mut created = false;
    if !has("current") {
        // A first key has no earlier JWKS to have been published in: nothing it signs can exist
        // before it does.
        let kid = insert_next(&mut tx, master).await?;
        sqlx::query("UPDATE bulkhead.signing_keys SET state = 'current', activated_at = now() WHERE kid = $1")
            .bind(kid)
            .execute(&mut *tx)
            .await?;
        created = true;
    }
    if !has("next") {
        insert_next(&mut tx, master).await?;
        created = true;
    }
    tx.commit().await?;
    Ok(created)
}

/// What a rotation did.
#[derive(Debug, Clone)]
pub struct Rotation {
    /// The key that signs from now on.
    pub current: String,
    /// The newly published key that will sign after the next rotation.
    pub next: String,
    /// The key that stopped signing, and until when it stays published.
    pub retired: Option<(String, DateTime<Utc>)>,
    /// Retired keys deleted because every token they signed has expired.
    pub deleted: Vec<String>,
}

/// Rotates: current → retired (published for `keep_published`, longer than any token lives),
/// next → current, a new next key is published. Owner role, one transaction.
pub async fn rotate_signing_keys(
    owner: &PgPool,
    master: &MasterKey,
    now: DateTime<Utc>,
    keep_published: Duration,
) -> Result<Rotation, StoreError> {
    let mut tx = owner.begin().await?;
    lock_and_notify(&mut tx).await?;
    let next: Option<(String,)> =
        sqlx::query_as("SELECT kid FROM bulkhead.signing_keys WHERE state = 'next'")
            .fetch_optional(&mut *tx)
            .await?;
    let Some((next,)) = next else {
        return Err(StoreError::UnsafeConfiguration(
            "no published next signing key: run the server once (it creates one) before rotating"
                .into(),
        ));
    };
    let publish_until = now + keep_published;
    let retired: Option<(String,)> = sqlx::query_as(
        "UPDATE bulkhead.signing_keys SET state = 'retired', retired_at = $1, publish_until = $2 \
         WHERE state = 'current' RETURNING kid",
    )
    .bind(now)
    .bind(publish_until)
    .fetch_optional(&mut *tx)
    .await?;
    sqlx::query(
        "UPDATE bulkhead.signing_keys SET state = 'current', activated_at = $1 WHERE kid = $2",
    )
    .bind(now)
    .bind(&next)
    .execute(&mut *tx)
    .await?;
    let new_next = insert_next(&mut tx, master).await?;
    let deleted: Vec<(String,)> = sqlx::query_as(
        "DELETE FROM bulkhead.signing_keys WHERE state = 'retired' AND publish_until <= $1 RETURNING kid",
    )
    .bind(now)
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(Rotation {
        current: next,
        next: new_next,
        retired: retired.map(|(kid,)| (kid, publish_until)),
        deleted: deleted.into_iter().map(|(k,)| k).collect(),
    })
}
