//! Per-message bookkeeping shared by the webhook senders and the WebSocket subscribers:
//! when each message was sent and acknowledged, and how many subscribers saw its delta.
//! Lock-free on the hot path: slots live in lazily allocated fixed-size chunks indexed by
//! the message sequence number.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

const CHUNK_BITS: u32 = 16;
const CHUNK_LEN: usize = 1 << CHUNK_BITS;
const CHUNK_MASK: u64 = (CHUNK_LEN as u64) - 1;
/// 4096 chunks of 65,536 slots: 268 M messages, far beyond any single run.
const MAX_CHUNKS: usize = 4096;
/// Set on `sent` for messages of the measured phase (not warmup).
const MEASURED: u64 = 1 << 63;

/// The state of one message. Timestamps are nanoseconds since the tracker origin plus one,
/// so zero means "not yet".
#[derive(Default)]
pub struct Slot {
    sent: AtomicU64,
    acked: AtomicU64,
    deliveries: AtomicU32,
}

/// What the end-of-run audit found about delta delivery.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct DeliveryAudit {
    /// Measured messages whose webhook was acknowledged.
    pub acked: u64,
    /// Acknowledged messages that reached fewer subscribers than were connected.
    pub under_delivered: u64,
    /// Acknowledged messages no subscriber saw at all.
    pub never_delivered: u64,
    /// Deliveries beyond one per connected subscriber (duplicates).
    pub duplicates: u64,
}

pub struct Tracker {
    origin: Instant,
    chunks: Box<[OnceLock<Box<[Slot]>>]>,
}

impl Tracker {
    pub fn new(origin: Instant) -> Self {
        Self {
            origin,
            chunks: (0..MAX_CHUNKS).map(|_| OnceLock::new()).collect(),
        }
    }

    fn locate(seq: u64) -> Option<(usize, usize)> {
        let chunk = usize::try_from(seq >> CHUNK_BITS).ok()?;
        let index = usize::try_from(seq & CHUNK_MASK).ok()?;
        (chunk < MAX_CHUNKS).then_some((chunk, index))
    }

    fn slot(&self, seq: u64) -> Option<&Slot> {
        let (chunk, index) = Self::locate(seq)?;
        self.chunks.get(chunk)?.get()?.get(index)
    }

    fn slot_or_alloc(&self, seq: u64) -> Option<&Slot> {
        let (chunk, index) = Self::locate(seq)?;
        self.chunks
            .get(chunk)?
            .get_or_init(|| (0..CHUNK_LEN).map(|_| Slot::default()).collect())
            .get(index)
    }

    fn encode(&self, at: Instant) -> u64 {
        let nanos = at.saturating_duration_since(self.origin).as_nanos();
        u64::try_from(nanos).unwrap_or(u64::MAX >> 2) + 1
    }

    fn decode(&self, stamp: u64) -> Option<Instant> {
        let stamp = stamp & !MEASURED;
        (stamp != 0).then(|| self.origin + Duration::from_nanos(stamp - 1))
    }

    /// Records the instant the webhook carrying `seq` went out.
    pub fn mark_sent(&self, seq: u64, at: Instant, measured: bool) {
        if let Some(slot) = self.slot_or_alloc(seq) {
            let flag = if measured { MEASURED } else { 0 };
            slot.sent.store(self.encode(at) | flag, Ordering::Release);
        }
    }

    /// Send instant of `seq` and whether it belongs to the measured phase.
    pub fn sent(&self, seq: u64) -> Option<(Instant, bool)> {
        let stamp = self.slot(seq)?.sent.load(Ordering::Acquire);
        Some((self.decode(stamp)?, stamp & MEASURED != 0))
    }

    pub fn mark_acked(&self, seq: u64, at: Instant) {
        if let Some(slot) = self.slot(seq) {
            slot.acked.store(self.encode(at), Ordering::Release);
        }
    }

    pub fn acked(&self, seq: u64) -> Option<Instant> {
        self.decode(self.slot(seq)?.acked.load(Ordering::Acquire))
    }

    /// Counts one subscriber receiving the delta of `seq`; returns the count before.
    pub fn add_delivery(&self, seq: u64) -> u32 {
        self.slot(seq)
            .map_or(0, |slot| slot.deliveries.fetch_add(1, Ordering::Relaxed))
    }

    /// Nanoseconds since the origin, for atomically kept "latest instant" values.
    pub fn nanos_since_origin(&self, at: Instant) -> u64 {
        self.encode(at) - 1
    }

    pub fn instant_at(&self, nanos: u64) -> Instant {
        self.origin + Duration::from_nanos(nanos)
    }

    /// Walks sequence numbers `0..issued` and checks, for measured acknowledged messages,
    /// that each reached every one of `subscribers` exactly once.
    pub fn audit(&self, issued: u64, subscribers: u32) -> DeliveryAudit {
        let mut audit = DeliveryAudit::default();
        for seq in 0..issued {
            let Some(slot) = self.slot(seq) else { continue };
            let measured = slot.sent.load(Ordering::Acquire) & MEASURED != 0;
            if !measured || slot.acked.load(Ordering::Acquire) == 0 {
                continue;
            }
            audit.acked += 1;
            let seen = slot.deliveries.load(Ordering::Relaxed);
            if seen == 0 {
                audit.never_delivered += 1;
            }
            if seen < subscribers {
                audit.under_delivered += 1;
            }
            audit.duplicates += u64::from(seen.saturating_sub(subscribers));
        }
        audit
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_instants_and_flags() {
        let origin = Instant::now();
        let tracker = Tracker::new(origin);
        let sent = origin + Duration::from_micros(1500);
        tracker.mark_sent(70_000, sent, true);
        tracker.mark_sent(3, origin, false);
        assert_eq!(tracker.sent(70_000), Some((sent, true)));
        assert_eq!(tracker.sent(3), Some((origin, false)));
        assert_eq!(tracker.sent(4), None);
        assert_eq!(tracker.sent(200_000), None);
        assert_eq!(tracker.acked(70_000), None);
        let acked = sent + Duration::from_millis(2);
        tracker.mark_acked(70_000, acked);
        assert_eq!(tracker.acked(70_000), Some(acked));
    }

    #[test]
    fn audit_counts_missing_and_duplicate_deliveries() {
        let origin = Instant::now();
        let tracker = Tracker::new(origin);
        for seq in 0..4 {
            tracker.mark_sent(seq, origin, seq != 0);
            tracker.mark_acked(seq, origin);
        }
        // seq 0 is warmup and ignored; 1 complete; 2 missing one; 3 duplicated.
        for _ in 0..2 {
            tracker.add_delivery(1);
        }
        tracker.add_delivery(2);
        for _ in 0..3 {
            tracker.add_delivery(3);
        }
        let audit = tracker.audit(10, 2);
        assert_eq!(
            audit,
            DeliveryAudit {
                acked: 3,
                under_delivered: 1,
                never_delivered: 0,
                duplicates: 1,
            }
        );
    }
}
