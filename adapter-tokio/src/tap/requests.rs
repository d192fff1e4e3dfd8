//! The relay engine's memory of forwarded requests on the heap (see [`RequestStore`]).

use std::collections::HashMap;

use activity_core::server::{RequestStore, StoreFull};

/// Most requests of one relayed connection awaiting the upstream's answer (SUBSCRIBEs,
/// UNSUBSCRIBEs, and QoS 2 publishes the engine answered itself awaiting their PUBREL); one
/// more closes the connection (a flood the upstream would never be asked to answer).
pub const MAX_PENDING_REQUESTS: usize = 64;

/// A [`RequestStore`] on the heap, of up to [`MAX_PENDING_REQUESTS`] requests (the CONNECT is
/// kept alone, before any other).
#[derive(Debug, Default)]
pub(super) struct HeapRequestStore {
    requests: HashMap<u16, Vec<u8>>,
}

impl RequestStore for HeapRequestStore {
    fn keep(&mut self, id: u16, packet: &[u8]) -> Result<(), StoreFull> {
        if let Some(kept) = self.requests.get_mut(&id) {
            kept.clear();
            kept.extend_from_slice(packet);
            return Ok(());
        }
        if self.requests.len() >= MAX_PENDING_REQUESTS {
            return Err(StoreFull);
        }
        self.requests.insert(id, packet.to_vec());
        Ok(())
    }

    fn request(&self, id: u16) -> Option<&[u8]> {
        self.requests.get(&id).map(Vec::as_slice)
    }

    fn remove(&mut self, id: u16) -> bool {
        self.requests.remove(&id).is_some()
    }

    fn clear(&mut self) {
        self.requests.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_the_connect_and_max_pending_requests() {
        let mut store = HeapRequestStore::default();
        store.keep(0, b"connect").unwrap();
        store.remove(0);
        for id in 1..=u16::try_from(MAX_PENDING_REQUESTS).unwrap() {
            store.keep(id, b"subscribe").unwrap();
        }
        assert_eq!(store.keep(1000, b"one more"), Err(StoreFull));
        store.keep(1, b"replaced").unwrap();
        assert_eq!(store.request(1), Some(&b"replaced"[..]));
        assert!(store.remove(1));
        store.keep(1000, b"room again").unwrap();
        store.clear();
        assert_eq!(store.request(1000), None);
    }
}
