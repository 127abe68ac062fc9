//! Client session leases. A session lives while its client renews it (`keepalive`) within
//! the TTL; an expired session's open files are released by the reaper. The lease clock is
//! in memory only: after a master restart every persisted session gets a fresh lease, so
//! clients that were alive keep their open files across the restart. Pure over an injected
//! `now: Instant`, table-tested.

use common::SessionId;
use std::collections::HashMap;
use std::time::{Duration, Instant};

#[derive(Debug)]
pub struct Leases {
    ttl: Duration,
    deadlines: HashMap<SessionId, Instant>,
}

impl Leases {
    pub fn new(ttl: Duration) -> Leases {
        Leases {
            ttl,
            deadlines: HashMap::new(),
        }
    }

    /// Starts (or restores, at master start) a lease of one TTL from `now`.
    pub fn grant(&mut self, session: SessionId, now: Instant) {
        self.deadlines.insert(session, now + self.ttl);
    }

    /// Extends a live lease; false when the session is unknown or already expired.
    pub fn renew(&mut self, session: SessionId, now: Instant) -> bool {
        match self.deadlines.get_mut(&session) {
            Some(deadline) if *deadline > now => {
                *deadline = now + self.ttl;
                true
            }
            _ => false,
        }
    }

    pub fn contains(&self, session: SessionId) -> bool {
        self.deadlines.contains_key(&session)
    }

    pub fn remove(&mut self, session: SessionId) -> bool {
        self.deadlines.remove(&session).is_some()
    }

    /// Removes and returns every session whose lease ran out at `now`, in id order.
    pub fn take_expired(&mut self, now: Instant) -> Vec<SessionId> {
        let mut expired: Vec<SessionId> = self
            .deadlines
            .iter()
            .filter(|(_, deadline)| **deadline <= now)
            .map(|(&s, _)| s)
            .collect();
        expired.sort();
        for s in &expired {
            self.deadlines.remove(s);
        }
        expired
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lease_table() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        // (renewals at ms offsets, checked at) -> expired
        let table: &[(&[u64], u64, bool)] = &[
            (&[], 999, false),
            (&[], 1_000, true),
            (&[500], 1_499, false),
            (&[500], 1_500, true),
            (&[500, 1_400], 2_300, false),
            // A renewal after expiry does not revive the session.
            (&[1_200], 1_300, true),
        ];
        for &(renewals, at, want_expired) in table {
            let mut leases = Leases::new(ms(1_000));
            leases.grant(SessionId(1), t0);
            for &r in renewals {
                let alive = leases.renew(SessionId(1), t0 + ms(r));
                assert_eq!(
                    alive,
                    r < 1_000 || renewals.iter().any(|&p| p < r && p + 1_000 > r)
                );
            }
            let expired = leases.take_expired(t0 + ms(at));
            assert_eq!(
                expired == [SessionId(1)],
                want_expired,
                "{renewals:?} at {at}"
            );
            assert_eq!(leases.contains(SessionId(1)), !want_expired);
        }
    }

    #[test]
    fn unknown_sessions_do_not_renew() {
        let mut leases = Leases::new(Duration::from_secs(1));
        assert!(!leases.renew(SessionId(5), Instant::now()));
        leases.grant(SessionId(5), Instant::now());
        assert!(leases.remove(SessionId(5)));
        assert!(!leases.remove(SessionId(5)));
    }
}
