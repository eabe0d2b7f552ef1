//! Connection places of a listener: at most `total` connections at once,
//! of which at most `per_source` from one IP address while half the places
//! or more are taken, so that one client (or a few) cannot take every place
//! and shut the others out. Below that, a source may go beyond its share
//! (the API server behind one address, SNAT, a burst of reviews): it can
//! never take the half that is kept for the others.
//!
//! The accept loop first waits for a [`Vacancy`] (a place of the total;
//! beyond it connections wait in the listen backlog, as before any place
//! is free), accepts, and then claims the vacancy for the peer's address:
//! a source already holding `per_source` places gets its vacancy back, and
//! the loop closes that connection at once (its fd is back before the next
//! accept) and keeps the vacancy for the next one. A [`Place`] is given
//! back when dropped.
//!
//! Sources are whole addresses (an IPv4 address mapped into IPv6 counts as
//! the IPv4 one): pods and nodes have one address each, and a prefix would
//! put a legitimate client in the same count as its neighbours.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The places of one listener.
pub struct Places {
    total: Arc<Semaphore>,
    size: u32,
    per_source: usize,
    /// Places held per source; a source holding none has no entry.
    held: Mutex<HashMap<IpAddr, usize>>,
}

/// A place of the total, not yet given to a source.
pub struct Vacancy {
    permit: OwnedSemaphorePermit,
}

/// A connection's place; given back when dropped.
pub struct Place {
    places: Arc<Places>,
    source: IpAddr,
    _permit: OwnedSemaphorePermit,
}

impl Places {
    /// `total` places, at most `per_source` of them for one address.
    pub fn new(total: usize, per_source: usize) -> Arc<Places> {
        let size = u32::try_from(total).unwrap_or(u32::MAX);
        Arc::new(Places {
            total: Arc::new(Semaphore::new(size as usize)),
            size,
            per_source,
            held: Mutex::new(HashMap::new()),
        })
    }

    /// Waits for a free place of the total. Cancel safe.
    pub async fn vacancy(&self) -> Vacancy {
        // The semaphore is never closed.
        let permit = match self.total.clone().acquire_owned().await {
            Ok(p) => p,
            Err(_) => std::future::pending().await,
        };
        Vacancy { permit }
    }

    /// Places held now by `source`.
    #[cfg(test)]
    fn held_by(&self, source: IpAddr) -> usize {
        let held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        held.get(&source.to_canonical()).copied().unwrap_or(0)
    }

    /// Waits until every place is free again, at most `within`; whether
    /// they all are.
    pub async fn all_free(&self, within: Duration) -> bool {
        tokio::time::timeout(within, self.total.acquire_many(self.size))
            .await
            .is_ok_and(|p| p.is_ok())
    }
}

impl Vacancy {
    /// This place for a connection from `source`, unless the source holds
    /// its share already and at most half the places would be left free:
    /// then the vacancy comes back, for another.
    pub fn claim(self, places: &Arc<Places>, source: IpAddr) -> Result<Place, Vacancy> {
        let source = source.to_canonical();
        let mut held = places.held.lock().unwrap_or_else(PoisonError::into_inner);
        let n = held.entry(source).or_insert(0);
        let pressed = places.total.available_permits() <= places.size as usize / 2;
        if *n >= places.per_source && pressed {
            if *n == 0 {
                held.remove(&source);
            }
            return Err(self);
        }
        *n += 1;
        Ok(Place {
            places: places.clone(),
            source,
            _permit: self.permit,
        })
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        let mut held = self
            .places
            .held
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(n) = held.get_mut(&self.source) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                held.remove(&self.source);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("address")
    }

    async fn take(places: &Arc<Places>, source: &str) -> Place {
        match places.vacancy().await.claim(places, ip(source)) {
            Ok(p) => p,
            Err(_) => panic!("{source} refused"),
        }
    }

    #[tokio::test]
    async fn a_source_gets_its_share_and_others_the_rest() {
        let places = Places::new(5, 2);
        let a = ip("10.0.0.1");
        let mut kept = vec![
            take(&places, "10.0.0.1").await,
            take(&places, "10.0.0.1").await,
        ];
        // A third for `a` (also as an IPv4-mapped IPv6 address): refused,
        // and the vacancy is still there for another source.
        let Err(v) = places.vacancy().await.claim(&places, a) else {
            panic!("over a's share");
        };
        let Err(v) = v.claim(&places, ip("::ffff:10.0.0.1")) else {
            panic!("the same source");
        };
        let Ok(b) = v.claim(&places, ip("10.0.0.2")) else {
            panic!("b refused");
        };
        kept.push(b);
        kept.push(take(&places, "10.0.0.3").await);
        kept.push(take(&places, "10.0.0.4").await);
        assert_eq!(places.held_by(a), 2);
        // The total is taken: the next waits.
        let next = tokio::time::timeout(Duration::from_millis(20), places.vacancy()).await;
        assert!(next.is_err());
        // One of `a`'s comes back: `a` may have one more.
        drop(kept.remove(0));
        assert_eq!(places.held_by(a), 1);
        kept.push(take(&places, "10.0.0.1").await);
        drop(kept);
        assert_eq!(places.held_by(a), 0);
        assert!(places.held.lock().expect("lock").is_empty());
        assert!(places.all_free(Duration::from_secs(1)).await);
    }

    /// Beyond its share, a source is let in while more than half the
    /// places would stay free: never into the half kept for the others.
    #[tokio::test]
    async fn a_source_goes_beyond_its_share_only_while_most_places_are_free() {
        let places = Places::new(10, 2);
        let mut kept = Vec::new();
        for _ in 0..4 {
            kept.push(take(&places, "10.0.0.1").await);
        }
        // A fifth would leave 5 of 10 free: refused.
        assert!(places
            .vacancy()
            .await
            .claim(&places, ip("10.0.0.1"))
            .is_err());
        for n in 2..7 {
            kept.push(take(&places, &format!("10.0.0.{n}")).await);
        }
        assert_eq!(places.held_by(ip("10.0.0.1")), 4);
        drop(kept);
        assert!(places.held.lock().expect("lock").is_empty());
    }
}
