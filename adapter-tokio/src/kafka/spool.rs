//! The Kafka sink's on-disk spool: events wait here, in order, until Kafka acknowledges them.
//!
//! One [redb](https://docs.rs/redb) file, `spool.redb` in the configured directory, holds one
//! table from a sequence number to an encoded [`EventRecord`]. New events get the next number;
//! the sink reads the ones not yet sent in number order, and removes each when Kafka
//! acknowledges it, so a restart (or a crash) replays what was left, oldest first.
//!
//! Durability follows [`FsyncPolicy`]: with `Always` every batch of appended events is committed
//! with [`Durability::Immediate`] (fsync) before it is sent, and [`Spool::sync`] makes removals
//! durable at the end of each feeder round. With `EveryMs(n)` commits are [`Durability::None`],
//! which redb keeps in the process's memory only, and [`Spool::sync`] commits durably when `n`
//! ms have passed since the last time and at close: a power loss, a crash or a SIGKILL of the
//! process loses what was appended since the last durable commit, and sends again what was
//! removed since (at-least-once). docs/kafka.md states the bounds.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use activity_core::event::EventKind;
use bytes::Bytes;
use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};

use crate::config::{DropPolicy, FsyncPolicy, SpoolConfig};
use crate::events::EventRecord;

/// The table: sequence number to encoded record.
const EVENTS: TableDefinition<'_, u64, &[u8]> = TableDefinition::new("events");

/// The bytes of an encoded record before its subject: kind (1), ts (8), subject length (4).
const HEADER_LEN: usize = 13;

/// Why the spool failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SpoolError {
    /// The directory could not be created.
    #[error("{}: cannot create the spool directory: {source}", path.display())]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// redb failed.
    #[error("{}: {source}", path.display())]
    Storage {
        /// The spool file.
        path: PathBuf,
        /// redb's error.
        source: Box<redb::Error>,
    },
    /// A stored record could not be decoded (the file is not ours, or damaged).
    #[error("{}: record {key} is damaged", path.display())]
    Damaged {
        /// The spool file.
        path: PathBuf,
        /// The record's sequence number.
        key: u64,
    },
}

/// The spool: events in sequence order, with a cursor of the next one to send.
pub struct Spool {
    db: Database,
    path: PathBuf,
    fsync: FsyncPolicy,
    max_bytes: u64,
    /// Bytes of encoded records stored.
    bytes: u64,
    /// Records stored.
    len: u64,
    /// The sequence number of the next appended record.
    next_key: u64,
    /// The sequence number of the next record to send.
    cursor: u64,
    /// When the last immediate commit happened.
    last_sync: Instant,
    /// Whether commits since the last immediate commit are not yet synced.
    dirty: bool,
}

impl Spool {
    /// Opens (or creates) `spool.redb` in `config.dir`; every stored event is unsent again.
    pub fn open(config: &SpoolConfig) -> Result<Spool, SpoolError> {
        std::fs::create_dir_all(&config.dir).map_err(|source| SpoolError::CreateDir {
            path: config.dir.clone(),
            source,
        })?;
        let path = config.dir.join("spool.redb");
        let db = Database::create(&path).map_err(|e| storage(&path, e))?;
        let mut spool = Spool {
            db,
            path,
            fsync: config.fsync,
            max_bytes: config.max_bytes,
            bytes: 0,
            len: 0,
            next_key: 0,
            cursor: 0,
            last_sync: Instant::now(),
            dirty: false,
        };
        spool.scan().map_err(|e| storage(&spool.path, e))?;
        Ok(spool)
    }

    /// Counts what the file holds and sets the cursor to its first record.
    fn scan(&mut self) -> Result<(), redb::Error> {
        let txn = self.db.begin_write()?;
        // Creates the table on first use.
        txn.open_table(EVENTS)?;
        txn.commit()?;
        let txn = self.db.begin_read()?;
        let table = txn.open_table(EVENTS)?;
        let mut first = None;
        for entry in table.iter()? {
            let (key, value) = entry?;
            first.get_or_insert(key.value());
            self.next_key = key.value() + 1;
            self.len += 1;
            self.bytes += value.value().len() as u64;
        }
        self.cursor = first.unwrap_or(self.next_key);
        Ok(())
    }

    /// The path of the spool file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Records stored (sent or not).
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the spool holds no record.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Bytes of encoded records stored.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Whether records wait to be sent.
    pub fn has_unsent(&self) -> bool {
        self.cursor < self.next_key && !self.is_empty()
    }

    /// Appends `records` in order; when the byte limit is reached, `policy` says which events
    /// go. Returns how many events were dropped.
    pub fn append(
        &mut self,
        records: &[EventRecord],
        policy: DropPolicy,
    ) -> Result<u64, SpoolError> {
        self.try_append(records, policy)
            .map_err(|e| storage(&self.path, e))
    }

    fn try_append(
        &mut self,
        records: &[EventRecord],
        policy: DropPolicy,
    ) -> Result<u64, redb::Error> {
        let mut txn = self.db.begin_write()?;
        let sync = match self.fsync {
            FsyncPolicy::Always => true,
            FsyncPolicy::EveryMs(ms) => self.last_sync.elapsed() >= Duration::from_millis(ms),
        };
        txn.set_durability(if sync {
            Durability::Immediate
        } else {
            Durability::None
        })?;
        let mut dropped = 0;
        {
            let mut table = txn.open_table(EVENTS)?;
            let mut buf = Vec::new();
            for record in records {
                encode(record, &mut buf);
                let size = buf.len() as u64;
                while self.bytes + size > self.max_bytes
                    && policy == DropPolicy::DropOldest
                    && self.cursor < self.next_key
                {
                    // The oldest event not yet sent goes (sent ones are in the producer).
                    let key = self.cursor;
                    self.cursor += 1;
                    if let Some(old) = table.remove(key)? {
                        self.bytes -= old.value().len() as u64;
                        self.len -= 1;
                        dropped += 1;
                    }
                }
                if self.bytes + size > self.max_bytes {
                    dropped += 1;
                    continue;
                }
                table.insert(self.next_key, buf.as_slice())?;
                self.next_key += 1;
                self.bytes += size;
                self.len += 1;
            }
        }
        txn.commit()?;
        if sync {
            self.last_sync = Instant::now();
            self.dirty = false;
        } else {
            self.dirty = true;
        }
        Ok(dropped)
    }

    /// Up to `max` records not yet sent, oldest first, with their sequence numbers; they count
    /// as sent from now on.
    pub fn take_unsent(&mut self, max: usize) -> Result<Vec<(u64, EventRecord)>, SpoolError> {
        let read = || -> Result<Vec<(u64, Vec<u8>)>, redb::Error> {
            let txn = self.db.begin_read()?;
            let table = txn.open_table(EVENTS)?;
            let mut out = Vec::new();
            for entry in table.range(self.cursor..)?.take(max) {
                let (key, value) = entry?;
                out.push((key.value(), value.value().to_vec()));
            }
            Ok(out)
        };
        let entries = read().map_err(|e| storage(&self.path, e))?;
        let mut records = Vec::with_capacity(entries.len());
        for (key, bytes) in entries {
            self.cursor = key + 1;
            match decode(&bytes) {
                Some(record) => records.push((key, record)),
                None => {
                    return Err(SpoolError::Damaged {
                        path: self.path.clone(),
                        key,
                    });
                }
            }
        }
        if records.is_empty() {
            self.cursor = self.next_key;
        }
        Ok(records)
    }

    /// Makes every stored record unsent again (after the producer that held them was replaced).
    pub fn rewind(&mut self) -> Result<(), SpoolError> {
        let first = || -> Result<Option<u64>, redb::Error> {
            let txn = self.db.begin_read()?;
            let table = txn.open_table(EVENTS)?;
            Ok(table.first()?.map(|(key, _)| key.value()))
        };
        let first = first().map_err(|e| storage(&self.path, e))?;
        self.cursor = first.unwrap_or(self.next_key);
        Ok(())
    }

    /// Removes the records with sequence numbers `keys` (acknowledged by Kafka, or refused for
    /// good).
    pub fn remove(&mut self, keys: &[u64]) -> Result<(), SpoolError> {
        if keys.is_empty() {
            return Ok(());
        }
        let mut remove = || -> Result<(), redb::Error> {
            let mut txn = self.db.begin_write()?;
            txn.set_durability(Durability::None)?;
            {
                let mut table = txn.open_table(EVENTS)?;
                for &key in keys {
                    if let Some(old) = table.remove(key)? {
                        self.bytes -= old.value().len() as u64;
                        self.len -= 1;
                    }
                }
            }
            txn.commit()?;
            self.dirty = true;
            Ok(())
        };
        remove().map_err(|e| storage(&self.path, e))
    }

    /// Makes every commit so far durable if the policy's interval has passed (or `force`).
    pub fn sync(&mut self, force: bool) -> Result<(), SpoolError> {
        let due = match self.fsync {
            FsyncPolicy::Always => true,
            FsyncPolicy::EveryMs(ms) => self.last_sync.elapsed() >= Duration::from_millis(ms),
        };
        if !self.dirty || !(due || force) {
            return Ok(());
        }
        let sync = || -> Result<(), redb::Error> {
            let mut txn = self.db.begin_write()?;
            txn.set_durability(Durability::Immediate)?;
            txn.commit()?;
            Ok(())
        };
        sync().map_err(|e| storage(&self.path, e))?;
        self.dirty = false;
        self.last_sync = Instant::now();
        Ok(())
    }
}

/// A [`SpoolError::Storage`] for the file at `path`.
fn storage(path: &Path, e: impl Into<redb::Error>) -> SpoolError {
    SpoolError::Storage {
        path: path.to_owned(),
        source: Box::new(e.into()),
    }
}

/// Encodes `record` into `buf` (cleared first): kind index, ts (LE), subject length (LE),
/// subject, JSON.
fn encode(record: &EventRecord, buf: &mut Vec<u8>) {
    buf.clear();
    buf.push(record.kind as u8);
    buf.extend_from_slice(&record.ts.to_le_bytes());
    // Subjects are MQTT client ids (at most 65,535 bytes): they fit in a u32.
    let len = u32::try_from(record.subject.len()).unwrap_or(u32::MAX);
    buf.extend_from_slice(&len.to_le_bytes());
    buf.extend_from_slice(record.subject.as_bytes());
    buf.extend_from_slice(&record.json);
}

/// Decodes what [`encode`] wrote; `None` if it is not such a record.
fn decode(bytes: &[u8]) -> Option<EventRecord> {
    let header = bytes.get(..HEADER_LEN)?;
    let kind = *EventKind::ALL.get(usize::from(header[0]))?;
    let ts = u64::from_le_bytes(header[1..9].try_into().ok()?);
    let len = usize::try_from(u32::from_le_bytes(header[9..13].try_into().ok()?)).ok()?;
    let rest = &bytes[HEADER_LEN..];
    let subject = std::str::from_utf8(rest.get(..len)?).ok()?.to_owned();
    let json = Bytes::copy_from_slice(rest.get(len..)?);
    Some(EventRecord {
        kind,
        subject,
        ts,
        json,
        event_seq: 0,
        session_seq: None,
        retained_topic: None,
        ack_key: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(n: u64) -> EventRecord {
        EventRecord {
            kind: EventKind::ALL[usize::try_from(n % 9).unwrap()],
            subject: format!("client-{n}"),
            ts: 1_700_000_000_000 + n,
            json: Bytes::from(format!("{{\"n\":{n}}}")),
            event_seq: 0,
            session_seq: None,
            retained_topic: None,
            ack_key: None,
        }
    }

    fn config(dir: &Path, max_bytes: u64, fsync: FsyncPolicy) -> SpoolConfig {
        SpoolConfig {
            dir: dir.to_owned(),
            max_bytes,
            fsync,
        }
    }

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "activity-spool-{name}-{}-{:?}",
            std::process::id(),
            Instant::now()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn records_round_trip() {
        let mut buf = Vec::new();
        for n in 0..12 {
            let r = record(n);
            encode(&r, &mut buf);
            let back = decode(&buf).unwrap();
            assert_eq!(
                (back.kind, back.subject, back.ts, back.json),
                (r.kind, r.subject, r.ts, r.json)
            );
        }
        assert!(decode(&buf[..5]).is_none());
        buf[0] = 9;
        assert!(decode(&buf).is_none());
    }

    #[test]
    fn replays_in_order_after_reopen() {
        let dir = temp_dir("reopen");
        for fsync in [FsyncPolicy::Always, FsyncPolicy::EveryMs(60_000)] {
            let _ = std::fs::remove_dir_all(&dir);
            {
                let mut spool = Spool::open(&config(&dir, 1 << 20, fsync)).unwrap();
                let records: Vec<_> = (0..10).map(record).collect();
                assert_eq!(spool.append(&records, DropPolicy::DropOldest).unwrap(), 0);
                let sent = spool.take_unsent(4).unwrap();
                assert_eq!(
                    sent.iter().map(|(k, _)| *k).collect::<Vec<_>>(),
                    [0, 1, 2, 3]
                );
                spool.remove(&[0, 1]).unwrap();
                assert_eq!(spool.len(), 8);
                spool.sync(true).unwrap();
            }
            let mut spool = Spool::open(&config(&dir, 1 << 20, fsync)).unwrap();
            assert_eq!(spool.len(), 8);
            let subjects: Vec<String> = spool
                .take_unsent(100)
                .unwrap()
                .into_iter()
                .map(|(_, r)| r.subject)
                .collect();
            let expected: Vec<String> = (2..10).map(|n| format!("client-{n}")).collect();
            assert_eq!(subjects, expected);
            assert!(!spool.has_unsent());
            spool.append(&[record(10)], DropPolicy::DropOldest).unwrap();
            assert_eq!(spool.take_unsent(10).unwrap()[0].0, 10);
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn rewind_makes_every_stored_record_unsent() {
        let dir = temp_dir("rewind");
        let mut spool = Spool::open(&config(&dir, 1 << 20, FsyncPolicy::Always)).unwrap();
        let records: Vec<_> = (0..5).map(record).collect();
        spool.append(&records, DropPolicy::DropOldest).unwrap();
        assert_eq!(spool.take_unsent(3).unwrap().len(), 3);
        spool.remove(&[0]).unwrap();
        spool.rewind().unwrap();
        let keys: Vec<u64> = spool
            .take_unsent(10)
            .unwrap()
            .iter()
            .map(|(k, _)| *k)
            .collect();
        assert_eq!(keys, [1, 2, 3, 4]);
        drop(spool);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn byte_limit_drops_by_policy() {
        let dir = temp_dir("limit");
        let size = {
            let mut buf = Vec::new();
            encode(&record(0), &mut buf);
            buf.len() as u64
        };
        let mut spool = Spool::open(&config(&dir, size * 3, FsyncPolicy::Always)).unwrap();
        let records: Vec<_> = (0..5).map(record).collect();
        assert_eq!(spool.append(&records, DropPolicy::DropNewest).unwrap(), 2);
        let kept: Vec<u64> = spool
            .take_unsent(10)
            .unwrap()
            .iter()
            .map(|(_, r)| r.ts % 100)
            .collect();
        assert_eq!(kept, [0, 1, 2]);
        spool.remove(&[0, 1, 2]).unwrap();
        assert_eq!(spool.bytes(), 0);
        assert_eq!(spool.append(&records, DropPolicy::DropOldest).unwrap(), 2);
        let kept: Vec<u64> = spool
            .take_unsent(10)
            .unwrap()
            .iter()
            .map(|(_, r)| r.ts % 100)
            .collect();
        assert_eq!(kept, [2, 3, 4]);
        drop(spool);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
