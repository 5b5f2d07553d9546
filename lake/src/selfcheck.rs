//! The store self-check: does the store enforce put-if-absent?
//!
//! Delta commits are `PUT _delta_log/<version>.json` with If-None-Match: two writers racing
//! for one version must see one of them fail. Some S3-compatible servers accept the header
//! and ignore it; on those, concurrent commits overwrite each other with no error at all.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};

use crate::error::LakeError;
use crate::store::Lake;

/// Where probe objects are written, under the lake root. Never a table directory.
pub const SELF_CHECK_PREFIX: &str = "_loglake/selfcheck";

fn cache() -> &'static Mutex<HashMap<String, bool>> {
    static CACHE: OnceLock<Mutex<HashMap<String, bool>>> = OnceLock::new();
    CACHE.get_or_init(Default::default)
}

/// Probes the store now (no cache) and records the verdict for [`check_cached`].
pub(crate) async fn check_now(lake: &Lake) -> Result<(), LakeError> {
    let key = lake.root().to_string();
    let probe = lake.path(&format!(
        "{SELF_CHECK_PREFIX}/probe-{}",
        uuid::Uuid::new_v4()
    ));
    let safe = check_put_if_absent(lake.object_store().as_ref(), &probe, &key).await?;
    cache()
        .lock()
        .expect("self-check cache")
        .insert(key.clone(), safe);
    if safe {
        Ok(())
    } else {
        Err(LakeError::UnsafeStore {
            url: key,
            probe: probe.to_string(),
        })
    }
}

/// The cached verdict for this store URL, probing on first use.
pub(crate) async fn check_cached(lake: &Lake) -> Result<(), LakeError> {
    let key = lake.root().to_string();
    match cache().lock().expect("self-check cache").get(&key).copied() {
        Some(true) => return Ok(()),
        Some(false) => {
            return Err(LakeError::UnsafeStore {
                url: key,
                probe: format!("{SELF_CHECK_PREFIX}/ (cached verdict)"),
            })
        }
        None => {}
    }
    check_now(lake).await
}

/// Writes `probe` twice with put-if-absent: `Ok(true)` if the second write was refused as it
/// must be, `Ok(false)` if the store let it through. The probe is deleted afterwards.
pub async fn check_put_if_absent(
    store: &dyn ObjectStore,
    probe: &object_store::path::Path,
    url: &str,
) -> Result<bool, LakeError> {
    let store_err = |source| LakeError::Store {
        url: url.to_string(),
        source,
    };
    let create = || PutOptions::from(PutMode::Create);
    store
        .put_opts(probe, PutPayload::from_static(b"first"), create())
        .await
        .map_err(store_err)?;
    let second = store
        .put_opts(probe, PutPayload::from_static(b"second"), create())
        .await;
    let verdict = match second {
        Err(object_store::Error::AlreadyExists { .. }) => Ok(true),
        Err(object_store::Error::Precondition { .. }) => Ok(true),
        Ok(_) => Ok(false),
        Err(e) => Err(store_err(e)),
    };
    if let Err(e) = store.delete(probe).await {
        tracing::warn!(error = %e, probe = %probe, "could not delete self-check probe");
    }
    match &verdict {
        Ok(true) => tracing::info!(store = url, "store enforces put-if-absent"),
        Ok(false) => tracing::error!(store = url, "store ignores put-if-absent"),
        Err(_) => {}
    }
    verdict
}
