//! Who may hold a connection: `ordinary` places, a `reserve` for short requests once those are
//! all taken, and at most `per_address` places (of both) for one client address, so that one
//! client cannot hold the port however many sockets it opens.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlaceKind {
    /// Keep-alive, pipelining, event streams: what a connection is.
    Ordinary,
    /// One short request, then closed; no event stream.
    Reserve,
}

pub struct Places {
    taken: Mutex<Taken>,
    freed: Notify,
    ordinary: usize,
    reserve: usize,
    per_address: usize,
}

#[derive(Default)]
struct Taken {
    ordinary: usize,
    reserve: usize,
    by_address: HashMap<IpAddr, usize>,
}

/// Why a connection got no place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoPlace {
    /// Its address holds its share already.
    AddressShare,
    /// Every place is taken.
    Full,
}

impl Places {
    pub fn new(ordinary: usize, reserve: usize, per_address: usize) -> Arc<Self> {
        Arc::new(Self {
            taken: Mutex::new(Taken::default()),
            freed: Notify::new(),
            ordinary: ordinary.max(1),
            reserve,
            per_address: per_address.max(1),
        })
    }

    fn taken(&self) -> std::sync::MutexGuard<'_, Taken> {
        self.taken.lock().expect("connection places")
    }

    /// Until some place is free: past that, new connections wait in the kernel's backlog rather
    /// than take the process's last file handles.
    pub async fn room(&self) {
        loop {
            let freed = self.freed.notified();
            {
                let taken = self.taken();
                if taken.ordinary < self.ordinary || taken.reserve < self.reserve {
                    return;
                }
            }
            freed.await;
        }
    }

    /// A place for a connection from `address`: an ordinary one while any is free, else one of
    /// the reserve.
    pub fn take(self: &Arc<Self>, address: IpAddr) -> Result<Place, NoPlace> {
        let mut taken = self.taken();
        let held = taken.by_address.get(&address).copied().unwrap_or(0);
        if held >= self.per_address {
            return Err(NoPlace::AddressShare);
        }
        let kind = if taken.ordinary < self.ordinary {
            taken.ordinary += 1;
            PlaceKind::Ordinary
        } else if taken.reserve < self.reserve {
            taken.reserve += 1;
            PlaceKind::Reserve
        } else {
            return Err(NoPlace::Full);
        };
        *taken.by_address.entry(address).or_default() += 1;
        Ok(Place {
            places: self.clone(),
            address,
            kind,
        })
    }
}

/// A connection's place, given back when it closes.
pub struct Place {
    places: Arc<Places>,
    address: IpAddr,
    pub kind: PlaceKind,
}

impl Drop for Place {
    fn drop(&mut self) {
        let mut taken = self.places.taken();
        match self.kind {
            PlaceKind::Ordinary => taken.ordinary -= 1,
            PlaceKind::Reserve => taken.reserve -= 1,
        }
        if let Some(held) = taken.by_address.get_mut(&self.address) {
            *held -= 1;
            if *held == 0 {
                taken.by_address.remove(&self.address);
            }
        }
        drop(taken);
        self.places.freed.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_gets_its_share_then_the_reserve_serves_the_others() {
        let places = Places::new(2, 1, 2);
        let a: IpAddr = [10, 0, 0, 1].into();
        let b: IpAddr = [10, 0, 0, 2].into();
        let first = places.take(a).expect("a place");
        let _second = places.take(a).expect("a place");
        assert_eq!(places.take(a).err(), Some(NoPlace::AddressShare));
        let reserve = places.take(b).expect("the reserve");
        assert_eq!(reserve.kind, PlaceKind::Reserve);
        assert_eq!(places.take(b).err(), Some(NoPlace::Full));
        drop(first);
        assert_eq!(places.take(b).expect("freed").kind, PlaceKind::Ordinary);
    }
}
