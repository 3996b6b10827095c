//! Which partition a provider thread belongs to.

use xxhash_rust::xxh3::xxh3_64;

/// The partition of the thread `thread` of channel `channel` (the channel's id bytes):
/// known from the webhook alone, before any conversation exists, and the same on every
/// node and every release (xxh3 is specified, unlike std's hasher): stored data and
/// running nodes depend on it, so it never changes for a given number of partitions.
pub fn partition_of(channel: &[u8], thread: &str, partitions: u16) -> u16 {
    let mut key = Vec::with_capacity(channel.len() + 1 + thread.len());
    key.extend_from_slice(channel);
    // A separator, so that ("ab", "c") and ("a", "bc") are different keys.
    key.push(0);
    key.extend_from_slice(thread.as_bytes());
    let p = xxh3_64(&key) % u64::from(partitions.max(1));
    u16::try_from(p).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Golden values, computed independently (Python's `xxhash` package, xxh3_64 of the
    /// same bytes): a change here moves threads between partitions in running clusters.
    #[test]
    fn partitions_are_stable() {
        let channel = [7u8; 16];
        assert_eq!(partition_of(&channel, "15551234567", 64), 27);
        assert_eq!(partition_of(&channel, "15551234568", 64), 41);
        assert_eq!(partition_of(&[1u8; 16], "<a@b.example>", 64), 4);
        assert_eq!(partition_of(&channel, "", 64), 46);
        assert_eq!(partition_of(&channel, "15551234567", 7), 4);
        assert_eq!(partition_of(b"ab", "c", 1024), 845);
        assert_eq!(partition_of(b"a", "bc", 1024), 927);
    }

    #[test]
    fn every_partition_is_used_and_none_past_the_count() {
        let mut seen = [0u32; 16];
        for i in 0..16_000 {
            let p = partition_of(&[3u8; 16], &format!("lead-{i}"), 16);
            seen[usize::from(p)] += 1;
        }
        // 1,000 expected each: a fair hash stays well within ±20 %.
        assert!(seen.iter().all(|&n| (800..1200).contains(&n)), "{seen:?}");
        assert_eq!(
            partition_of(b"x", "y", 0),
            0,
            "no partitions is one partition"
        );
    }
}
