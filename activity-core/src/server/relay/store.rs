//! What a relay remembers of the client's requests until the upstream answers them.

use crate::server::StoreFull;

/// What a [`Relay`](super::Relay) remembers of the client's requests until the upstream answers them, keyed
/// by packet id (0 for the CONNECT): the bytes of a forwarded CONNECT, SUBSCRIBE or
/// UNSUBSCRIBE, or no bytes for a QoS 2 PUBLISH the engine answered itself, until its PUBREL.
///
/// A full store hands the request back as [`StoreFull`]: the engine then closes the
/// connection (quota exceeded), so its capacity is the most requests a client may have
/// awaiting an answer.
pub trait RequestStore {
    /// Keeps `packet` under `id`, replacing what was kept under it.
    fn keep(&mut self, id: u16, packet: &[u8]) -> Result<(), StoreFull>;
    /// What is kept under `id`.
    fn request(&self, id: u16) -> Option<&[u8]>;
    /// Forgets `id`; whether something was kept under it.
    fn remove(&mut self, id: u16) -> bool;
    /// Forgets everything (the connection ends).
    fn clear(&mut self);
}

/// A [`RequestStore`] with no heap: up to `N` requests of at most `BYTES` bytes each.
///
/// Its size is about `N * (BYTES + 16)` bytes.
#[derive(Debug)]
pub struct FixedRequestStore<const N: usize, const BYTES: usize> {
    entries: heapless::Vec<(u16, heapless::Vec<u8, BYTES>), N>,
}

impl<const N: usize, const BYTES: usize> FixedRequestStore<N, BYTES> {
    /// An empty store.
    pub const fn new() -> Self {
        FixedRequestStore {
            entries: heapless::Vec::new(),
        }
    }
}

impl<const N: usize, const BYTES: usize> Default for FixedRequestStore<N, BYTES> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize, const BYTES: usize> RequestStore for FixedRequestStore<N, BYTES> {
    fn keep(&mut self, id: u16, packet: &[u8]) -> Result<(), StoreFull> {
        let bytes = heapless::Vec::from_slice(packet).map_err(|_| StoreFull)?;
        match self.entries.iter_mut().find(|(key, _)| *key == id) {
            Some((_, kept)) => *kept = bytes,
            None => self.entries.push((id, bytes)).map_err(|_| StoreFull)?,
        }
        Ok(())
    }

    fn request(&self, id: u16) -> Option<&[u8]> {
        self.entries
            .iter()
            .find(|(key, _)| *key == id)
            .map(|(_, bytes)| bytes.as_slice())
    }

    fn remove(&mut self, id: u16) -> bool {
        match self.entries.iter().position(|(key, _)| *key == id) {
            Some(at) => {
                self.entries.swap_remove(at);
                true
            }
            None => false,
        }
    }

    fn clear(&mut self) {
        self.entries.clear();
    }
}
