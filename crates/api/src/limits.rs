//! Caps on what one client, and everybody together, may hold open at once.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;

/// The peer's address, when the server recorded it (tests driving the router directly have
/// none).
#[derive(Debug, Clone, Copy)]
pub struct ClientAddr(pub Option<IpAddr>);

impl<S: Send + Sync> FromRequestParts<S> for ClientAddr {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(ClientAddr(
            parts
                .extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map(|c| c.0.ip()),
        ))
    }
}

/// Counts concurrent holders in total and per address; a slot is returned when its permit
/// drops, however the request ends.
#[derive(Debug, Clone)]
pub struct Gate {
    inner: Arc<Mutex<GateState>>,
    total_max: usize,
    per_addr_max: usize,
}

#[derive(Debug, Default)]
struct GateState {
    total: usize,
    by_addr: HashMap<Option<IpAddr>, usize>,
}

/// Why a slot was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// This address holds its share.
    Addr,
    /// Everybody together holds all slots.
    Total,
}

#[derive(Debug)]
pub struct Permit {
    gate: Gate,
    addr: Option<IpAddr>,
}

impl Gate {
    pub fn new(total_max: usize, per_addr_max: usize) -> Self {
        Self {
            inner: Arc::default(),
            total_max: total_max.max(1),
            per_addr_max: per_addr_max.max(1),
        }
    }

    pub fn try_acquire(&self, addr: Option<IpAddr>) -> Result<Permit, Refused> {
        let mut s = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let mine = s.by_addr.get(&addr).copied().unwrap_or(0);
        if mine >= self.per_addr_max {
            return Err(Refused::Addr);
        }
        if s.total >= self.total_max {
            return Err(Refused::Total);
        }
        s.total += 1;
        *s.by_addr.entry(addr).or_default() += 1;
        Ok(Permit {
            gate: self.clone(),
            addr,
        })
    }

    pub fn in_use(&self) -> usize {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).total
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut s = self.gate.inner.lock().unwrap_or_else(|e| e.into_inner());
        s.total -= 1;
        if let Some(n) = s.by_addr.get_mut(&self.addr) {
            *n -= 1;
            if *n == 0 {
                s.by_addr.remove(&self.addr);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_per_address_and_in_total_and_frees_on_drop() {
        let gate = Gate::new(3, 2);
        let a = Some(IpAddr::from([10, 0, 0, 1]));
        let b = Some(IpAddr::from([10, 0, 0, 2]));
        let a1 = gate.try_acquire(a).unwrap();
        let _a2 = gate.try_acquire(a).unwrap();
        assert_eq!(gate.try_acquire(a).unwrap_err(), Refused::Addr);
        let b1 = gate.try_acquire(b).unwrap();
        assert_eq!(gate.try_acquire(b).unwrap_err(), Refused::Total);
        drop(a1);
        assert_eq!(gate.in_use(), 2);
        let _b2 = gate.try_acquire(b).unwrap();
        drop(b1);
        assert!(gate.try_acquire(a).is_ok());
    }
}
