//! The live policy snapshot: loaded at start-up, rebuilt whole on change
//! (file watch, SIGHUP), swapped atomically; a failed rebuild keeps serving the
//! last good snapshot.

use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use arc_swap::ArcSwap;

use crate::decision::authz::{LoadErrors, PolicyConfig, PolicyInputs, Snapshot};
use crate::decision::finding::Finding;

/// Where snapshots come from.
#[derive(Debug, Clone)]
pub enum Origin {
    /// Files named by the configuration; reloadable.
    Files(PolicyConfig),
    /// Compiled-in inputs (the demo); fixed.
    Embedded(Box<PolicyInputs>),
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
        log_warnings(snapshot.warnings());
        Ok(PolicyStore {
            origin,
            current: ArcSwap::from_pointee(snapshot),
            last_error: Mutex::new(None),
        })
    }

    /// The snapshot in force, for a quick look (`/policy`, the version in
    /// an audit event); a request holds [`PolicyStore::snapshot`].
    pub fn current(&self) -> arc_swap::Guard<Arc<Snapshot>> {
        self.current.load()
    }

    /// The snapshot in force, held by a request from routing to admission
    /// (across the end-user token check and the quota store): it routes,
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
    /// snapshot, and keeps `last_error` up to date. Says what it did: the
    /// caller records it in metrics, then logs it ([`Reload::log`]), then
    /// lets the replaced snapshot go ([`Reload::retire`]), so that whoever
    /// sees the log line also sees the metrics and `/policy` agree.
    ///
    /// The inputs are read and hashed first: inputs whose version is the
    /// snapshot's in force are not built again (a build of 10,000
    /// policies keeps every CPU busy for a while).
    pub fn reload(&self) -> Reload {
        let Origin::Files(cfg) = &self.origin else {
            return Reload::Unchanged { recovered: false };
        };
        let built = PolicyInputs::read(cfg).and_then(|inputs| {
            let version = inputs.version();
            if *version == *self.current.load().version {
                return Ok(None);
            }
            Snapshot::build(&inputs).map(Some)
        });
        match built {
            Ok(None) => {
                // The inputs are those of the snapshot in force: nothing is
                // pending, and a failure before this one is over (the files
                // were put back as they were).
                let recovered = self.last_error().is_some();
                self.set_error(None);
                Reload::Unchanged { recovered }
            }
            Ok(Some(s)) => {
                let version = s.version.clone();
                let policies = s.policy_count();
                let warnings = s.warnings().to_vec();
                let old = self.current.swap(Arc::new(s));
                self.set_error(None);
                Reload::Swapped {
                    version,
                    policies,
                    warnings,
                    old,
                }
            }
            Err(e) => {
                let lines = e.lines();
                self.set_error(Some(ReloadError {
                    at: SystemTime::now(),
                    errors: lines.clone(),
                }));
                Reload::Failed { errors: lines }
            }
        }
    }

    fn set_error(&self, e: Option<ReloadError>) {
        if let Ok(mut slot) = self.last_error.lock() {
            *slot = e;
        }
    }
}

/// What a reload did.
pub enum Reload {
    /// The inputs build the snapshot in force (or the policies are
    /// embedded); `recovered`: the reload before this one had failed.
    Unchanged { recovered: bool },
    /// A new snapshot is in force; `old` is the one it replaced.
    Swapped {
        version: Arc<str>,
        policies: usize,
        /// What is doubtful in the new snapshot's inputs.
        warnings: Vec<Finding>,
        old: Arc<Snapshot>,
    },
    /// The inputs do not build; the last good snapshot stays.
    Failed { errors: Vec<String> },
}

impl Reload {
    /// The log lines of a reload.
    pub fn log(&self) {
        match self {
            Reload::Unchanged { recovered: true } => tracing::info!(
                "policy files build the snapshot in force again; the reload failure is cleared"
            ),
            Reload::Unchanged { recovered: false } => {
                tracing::debug!(
                    "policy files unchanged; the snapshot in force is kept, not rebuilt"
                )
            }
            Reload::Swapped {
                version,
                policies,
                warnings,
                ..
            } => {
                tracing::info!(version = %version, policies, "policy snapshot reloaded");
                log_warnings(warnings);
            }
            Reload::Failed { errors } => {
                for line in errors {
                    tracing::warn!(error = %line, "policy reload failed; keeping the last good snapshot");
                }
            }
        }
    }

    /// Frees a replaced snapshot once no request holds it any more, on a
    /// thread of its own rather than on whichever request lets go of it
    /// last: freeing 10,000 policies takes milliseconds a request should
    /// not wait for. Requests hold a snapshot for at most their upstream
    /// timeout (an end-user key fetch or a quota store round trip may come
    /// between routing and admission); past a minute it is left to its last
    /// holder.
    pub fn retire(self) {
        let Reload::Swapped { mut old, .. } = self else {
            return;
        };
        let spawned = std::thread::Builder::new()
            .name("meshgate-retire".into())
            .spawn(move || {
                let mut wait = std::time::Duration::from_millis(1);
                let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
                loop {
                    match Arc::try_unwrap(old) {
                        Ok(snapshot) => return drop(snapshot),
                        Err(held) => old = held,
                    }
                    if std::time::Instant::now() >= deadline {
                        return;
                    }
                    std::thread::sleep(wait);
                    wait = (wait * 2).min(std::time::Duration::from_millis(100));
                }
            });
        if let Err(e) = spawned {
            tracing::debug!(error = %e, "no thread to free the replaced snapshot on; its last holder frees it");
        }
    }
}

/// Each warning of a snapshot's inputs, as `meshgate validate` prints it.
fn log_warnings(warnings: &[Finding]) {
    for w in warnings {
        tracing::warn!(warning = %w, "policy input warning");
    }
}

fn build(origin: &Origin) -> Result<Snapshot, LoadErrors> {
    match origin {
        Origin::Files(cfg) => Snapshot::build(&PolicyInputs::read(cfg)?),
        Origin::Embedded(inputs) => Snapshot::build(inputs),
    }
}
