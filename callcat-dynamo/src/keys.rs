//! Key and index attribute encoding shared by the stores.

use chrono::{DateTime, Utc};
use uuid::Uuid;

/// Encodes epoch milliseconds as a fixed-width string whose byte order is the
/// numeric order, negative values included (sign bit flipped, 20 digits).
pub(crate) fn ms_key(ms: i64) -> String {
    format!("{:020}", (ms as u64) ^ (1u64 << 63))
}

/// `<ms_key>#<id>`: the sort key of every time-ordered index. UUIDs in their
/// hyphenated lower-case form sort like their bytes, so ties break by id.
pub(crate) fn time_id_key(at: DateTime<Utc>, id: &impl std::fmt::Display) -> String {
    format!("{}#{}", ms_key(at.timestamp_millis()), id)
}

/// The `time_id_key` of a cursor position (epoch ms and id already known).
pub(crate) fn time_id_key_ms(ms: i64, id: &impl std::fmt::Display) -> String {
    format!("{}#{}", ms_key(ms), id)
}

/// The smallest string above `key` and below every longer sort key that follows it:
/// ids are fixed-width, so appending `~` (above every hex digit and `-`) gives an
/// exclusive lower bound usable in `BETWEEN`.
pub(crate) fn just_after(key: &str) -> String {
    format!("{key}~")
}

/// The shard (0..shards) of an id: its random low 64 bits modulo the shard count.
pub(crate) fn shard_of(id: Uuid, shards: u32) -> u32 {
    let b = id.as_bytes();
    let mut low = [0u8; 8];
    low.copy_from_slice(&b[8..16]);
    (u64::from_be_bytes(low) % u64::from(shards.max(1))) as u32
}

/// Escapes `#` in an owner key (which already escapes `%` and `/`), so it can
/// be followed by `#` and another part without ambiguity.
pub(crate) fn owner_part(owner_key: &str) -> String {
    owner_key.replace('#', "%23")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ms_keys_sort_like_numbers() {
        let values = [i64::MIN, -86_400_000, -1, 0, 1, 1_700_000_000_000, i64::MAX];
        let keys: Vec<String> = values.iter().map(|v| ms_key(*v)).collect();
        let mut sorted = keys.clone();
        sorted.sort();
        assert_eq!(keys, sorted);
        assert!(keys.iter().all(|k| k.len() == 20));
    }

    #[test]
    fn just_after_is_between_a_key_and_its_successors() {
        let at = DateTime::from_timestamp_millis(1_700_000_000_000).expect("valid");
        let a = Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_00ff);
        let b = Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0100);
        let ka = time_id_key(at, &a);
        let kb = time_id_key(at, &b);
        let next_ms = time_id_key(at + chrono::TimeDelta::milliseconds(1), &a);
        assert!(ka < just_after(&ka));
        assert!(just_after(&ka) < kb);
        assert!(just_after(&kb) < next_ms);
    }

    #[test]
    fn shards_spread_and_stay_in_range() {
        let mut counts = [0u32; 8];
        for _ in 0..800 {
            let s = shard_of(Uuid::now_v7(), 8);
            counts[s as usize] += 1;
        }
        assert!(counts.iter().all(|c| *c > 40), "{counts:?}");
        assert_eq!(shard_of(Uuid::now_v7(), 1), 0);
    }

    #[test]
    fn owner_part_is_unambiguous() {
        let a = format!("{}#{}", owner_part("t/u#x"), "y");
        let b = format!("{}#{}", owner_part("t/u"), "x#y");
        assert_ne!(a, b);
    }
}
