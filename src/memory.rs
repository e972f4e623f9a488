//! The process's own memory: what it holds (`/proc/self/status`) and giving back what a
//! flood left behind (hash tables that never shrink, the allocator's free lists).

/// The decimal number after `name` on its line of a `/proc` key-value file
/// (`/proc/self/status`, `/proc/thread-self/io`), its unit left off.
pub fn proc_field(text: &str, name: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// One `kB` field of `/proc/self/status` (`"VmRSS:"`, `"RssAnon:"`, …) in bytes; 0 when
/// absent or unreadable.
pub fn self_status_bytes(status: &str, name: &str) -> u64 {
    proc_field(status, name).map_or(0, |kb| kb * 1024)
}

/// Resident set size and its peak, in bytes, from `/proc/self/status`.
pub fn rss_bytes() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    (
        self_status_bytes(&status, "VmRSS:"),
        self_status_bytes(&status, "VmHWM:"),
    )
}

/// Maps and sets with room for fewer entries than this are not worth shrinking.
const SHRINK_ABOVE: usize = 16_384;

/// Room for many more entries than it holds: under a quarter full, and big enough to
/// matter.
fn sparse(capacity: usize, len: usize) -> bool {
    capacity > SHRINK_ABOVE && capacity > 4 * len
}

/// Gives back a map's buckets once it is under a quarter full. A `HashMap` never shrinks
/// on its own, so a flood's peak would stay for the life of the process: the conntrack
/// tracker's table, the DNS attribution's pending flows, the writer's live flows and the
/// detector's each reach tens of MiB in a flood and keep few entries after it. Shrinking
/// copies the remaining entries once; call it between ticks, not per event.
pub fn shrink_map<K: Eq + std::hash::Hash, V, S: std::hash::BuildHasher>(
    map: &mut std::collections::HashMap<K, V, S>,
) -> bool {
    let sparse = sparse(map.capacity(), map.len());
    if sparse {
        map.shrink_to(2 * map.len());
    }
    sparse
}

/// [`shrink_map`] for the dense maps that hold per-flow state.
pub fn shrink_index_map<K: Eq + std::hash::Hash, V, S: std::hash::BuildHasher>(
    map: &mut indexmap::IndexMap<K, V, S>,
) -> bool {
    let sparse = sparse(map.capacity(), map.len());
    if sparse {
        map.shrink_to(2 * map.len());
    }
    sparse
}

/// [`shrink_map`] for a set.
pub fn shrink_set<K: Eq + std::hash::Hash, S: std::hash::BuildHasher>(
    set: &mut std::collections::HashSet<K, S>,
) -> bool {
    let sparse = sparse(set.capacity(), set.len());
    if sparse {
        set.shrink_to(2 * set.len());
    }
    sparse
}

/// Allocations from this size up get their own mapping, returned to the kernel when
/// freed: the per-flow tables (tracker, writer, detection) and a flood's batches are
/// vectors of megabytes.
#[cfg(target_env = "gnu")]
const MMAP_THRESHOLD: i32 = 256 << 10;

/// Makes a flood's memory come back after it. glibc raises its mmap threshold to the
/// size of every mapped block freed (up to 32 MiB), so after the first flood the tables'
/// big vectors land in the heap, and one small live block between their freed pages
/// keeps them resident. A fixed threshold turns that adjustment off. (musl's allocator
/// maps large blocks and returns them on its own.)
pub fn configure_allocator() {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only sets glibc's allocator parameters.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
    }
}

/// Hands the heap's free memory back to the kernel (glibc keeps freed small blocks in
/// its arenas; musl's allocator returns them on its own). Called after a flood's maps
/// were shrunk.
pub fn release_free_heap() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only walks glibc's own heap; 0 keeps no padding.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sparse_maps_give_back_their_buckets_full_ones_keep_them() {
        let mut map: std::collections::HashMap<u32, [u8; 64]> =
            (0..100_000).map(|i| (i, [0; 64])).collect();
        let peak = map.capacity();
        shrink_map(&mut map);
        assert_eq!(map.capacity(), peak, "full: kept");
        map.retain(|k, _| *k < 1_000);
        shrink_map(&mut map);
        assert!(map.capacity() < peak / 16, "{} of {peak}", map.capacity());
        assert_eq!(map.len(), 1_000);
        let mut small: std::collections::HashSet<u32> = (0..10_000).collect();
        small.retain(|k| *k < 10);
        let cap = small.capacity();
        shrink_set(&mut small);
        assert_eq!(small.capacity(), cap, "small tables are left alone");
    }
}
