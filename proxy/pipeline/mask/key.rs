//! The mesh's pseudonymisation key (`fields.hash_key_file`), read at start
//! and again whenever its file changes (or on SIGHUP). A replacement that
//! does not load (unreadable, shorter than 32 bytes) leaves the last good
//! key in use, logged and counted; one with the same content changes
//! nothing. Each response is masked with the key current when its request
//! was admitted.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;
use aws_lc_rs::{digest, hmac};

use crate::decision::fields::Mask;
use crate::observe::metrics::{FieldMetrics, ResultLabels};

/// A key as the scanner uses it.
pub type HashKey = Arc<hmac::Key>;

/// The shortest key accepted, in bytes.
pub const MIN_KEY_BYTES: usize = 32;

struct Loaded {
    key: HashKey,
    /// SHA-256 of the key's bytes: a rewrite with the same key is no change.
    digest: Vec<u8>,
}

/// The key file and the key loaded from it.
pub struct HashKeys {
    path: PathBuf,
    current: ArcSwap<Loaded>,
}

impl HashKeys {
    /// Reads the key file; an error names the file.
    pub fn load(path: &Path) -> Result<HashKeys, String> {
        Ok(HashKeys {
            path: path.to_path_buf(),
            current: ArcSwap::from_pointee(read(path)?),
        })
    }

    /// The key in use now.
    pub fn current(&self) -> HashKey {
        self.current.load().key.clone()
    }

    /// Reads the file again: a new key is used from the next request on;
    /// one that does not load keeps the last good one.
    pub fn reload(&self, metrics: &FieldMetrics) {
        let result = match read(&self.path) {
            Ok(l) if l.digest == self.current.load().digest => return,
            Ok(l) => {
                self.current.store(Arc::new(l));
                tracing::info!(file = %self.path.display(), "hash key reloaded");
                "ok"
            }
            Err(e) => {
                tracing::warn!(error = %e, "hash key reload failed; keeping the previous key");
                "error"
            }
        };
        metrics
            .key_reloads
            .get_or_create(&ResultLabels { result })
            .inc();
    }

    /// The file to watch.
    pub fn watch_paths(&self) -> Vec<PathBuf> {
        vec![self.path.clone()]
    }
}

/// Reads a hash key file: its bytes, trimmed of surrounding whitespace, at
/// least [`MIN_KEY_BYTES`] of them.
fn read(path: &Path) -> Result<Loaded, String> {
    let bytes = crate::base::paths::read_file_bytes(path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let trimmed = bytes.trim_ascii();
    if trimmed.len() < MIN_KEY_BYTES {
        return Err(format!(
            "{}: a hash key has at least {MIN_KEY_BYTES} bytes (this one has {})",
            path.display(),
            trimmed.len()
        ));
    }
    Ok(Loaded {
        key: Arc::new(hmac::Key::new(hmac::HMAC_SHA256, trimmed)),
        digest: digest::digest(&digest::SHA256, trimmed).as_ref().to_vec(),
    })
}

/// The fields of `products` whose contract hashes them
/// (`<product>/<dataset>/<path>`): with no hash key configured, a response
/// that hashes one of them is cut, which start-up warns about.
pub fn hashed_fields<'a>(
    products: impl Iterator<Item = &'a crate::decision::contract::Product>,
) -> Vec<String> {
    let mut out = Vec::new();
    for p in products {
        for d in &p.fields {
            for f in d.fields.iter().filter(|f| f.mask == Mask::Hash) {
                out.push(format!("{}/{}/{}", p.id, d.dataset, f.path));
            }
        }
    }
    out
}
