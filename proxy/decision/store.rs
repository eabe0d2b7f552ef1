//! The live policy snapshot: loaded at start-up, rebuilt whole on change
//! (file watch, SIGHUP), swapped atomically; a failed rebuild keeps serving the
//! last good snapshot.

use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use arc_swap::ArcSwap;

use crate::decision::authz::{LoadErrors, PolicyConfig, PolicyInputs, Snapshot};

/// Where snapshots come from.
#[derive(Debug, Clone)]
pub enum Origin {
    /// Files named by the configuration; reloadable.
    Files(PolicyConfig),
    /// Compiled-in inputs (the demo); fixed.
    Embedded(Box<PolicyInputs>),
}

/// What a reload did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reload {
    /// The inputs build the snapshot in force (or the policies are embedded).
    Unchanged,
    /// A new snapshot is in force.
    Swapped { version: String },
    /// The inputs do not build; the last good snapshot stays.
    Failed,
}

#[derive(Debug, Clone)]
pub struct ReloadError {
    pub at: SystemTime,
    pub errors: Vec<String>,
}

pub struct PolicyStore {
    origin: Origin,
    current: ArcSwap<Snapshot>,
    last_error: Mutex<Option<ReloadError>>,
}

impl PolicyStore {
    /// Loads the first snapshot; failure stops start-up.
    pub fn load(origin: Origin) -> Result<PolicyStore, LoadErrors> {
        let snapshot = build(&origin)?;
        Ok(PolicyStore {
            origin,
            current: ArcSwap::from_pointee(snapshot),
            last_error: Mutex::new(None),
        })
    }

    /// The snapshot to decide with; requests hold it for their whole decision.
    pub fn current(&self) -> arc_swap::Guard<Arc<Snapshot>> {
        self.current.load()
    }

    /// The snapshot in force, to hold across awaits: a request routes,
    /// authenticates, decides and is admitted with this one.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    pub fn origin(&self) -> &Origin {
        &self.origin
    }

    pub fn last_error(&self) -> Option<ReloadError> {
        self.last_error.lock().ok().and_then(|e| e.clone())
    }

    /// Rebuilds from the origin; swaps only a complete, valid, changed
    /// snapshot. Logs what happened; the caller records it in metrics.
    pub fn reload(&self) -> Reload {
        if matches!(self.origin, Origin::Embedded(_)) {
            return Reload::Unchanged;
        }
        match build(&self.origin) {
            Ok(s) if s.version == self.current.load().version => {
                self.set_error(None);
                Reload::Unchanged
            }
            Ok(s) => {
                let version = s.version.to_string();
                let count = s.policy_count;
                let old = self.current.swap(Arc::new(s));
                self.set_error(None);
                tracing::info!(version = %version, policies = count, "policy snapshot reloaded");
                retire(old);
                Reload::Swapped { version }
            }
            Err(e) => {
                for line in &e.0 {
                    tracing::warn!(error = %line, "policy reload failed; keeping the last good snapshot");
                }
                self.set_error(Some(ReloadError {
                    at: SystemTime::now(),
                    errors: e.0,
                }));
                Reload::Failed
            }
        }
    }

    fn set_error(&self, e: Option<ReloadError>) {
        if let Ok(mut slot) = self.last_error.lock() {
            *slot = e;
        }
    }
}

/// Drops a replaced snapshot on the reload thread, once the requests that
/// still decide with it are done, rather than on whichever request thread
/// lets go of it last: freeing 10,000 policies takes milliseconds a request
/// should not wait for. Requests hold a snapshot for one decision, so this
/// takes at most a few milliseconds; past a second the snapshot is left to
/// its last holder.
fn retire(mut old: Arc<Snapshot>) {
    for _ in 0..1000 {
        match Arc::try_unwrap(old) {
            Ok(snapshot) => return drop(snapshot),
            Err(held) => old = held,
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
}

fn build(origin: &Origin) -> Result<Snapshot, LoadErrors> {
    match origin {
        Origin::Files(cfg) => Snapshot::build(&PolicyInputs::read(cfg)?),
        Origin::Embedded(inputs) => Snapshot::build(inputs),
    }
}
