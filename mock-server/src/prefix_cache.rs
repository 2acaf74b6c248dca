//! A prefix-cache model, as vLLM's automatic prefix caching works: a prompt's tokens are cut into
//! blocks of [`BLOCK`] tokens, each block hashed together with every block before it, and the
//! leading blocks whose hashes a recent prompt left in the cache are not prefilled again. The cache
//! holds at most `capacity` blocks and forgets the least recently used. The last token is always
//! computed, so a prompt never hits in full (as in vLLM).
//!
//! Hits are reported as `usage.prompt_tokens_details.cached_tokens` and cut the prefill cost, so a
//! client's cache-busting (or its absence) shows in what it measures.

use std::collections::{BTreeMap, HashMap};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Mutex;

/// Tokens per cache block (vLLM's default block size).
pub const BLOCK: usize = 16;

/// The cache: block hash → last use, and last use → block hash for eviction.
pub struct PrefixCache {
    capacity: usize,
    inner: Mutex<Lru>,
}

#[derive(Default)]
struct Lru {
    tick: u64,
    by_hash: HashMap<u64, u64>,
    by_tick: BTreeMap<u64, u64>,
}

impl Lru {
    fn touch(&mut self, h: u64) {
        self.tick += 1;
        if let Some(old) = self.by_hash.insert(h, self.tick) {
            self.by_tick.remove(&old);
        }
        self.by_tick.insert(self.tick, h);
    }

    fn evict_to(&mut self, capacity: usize) {
        while self.by_hash.len() > capacity {
            let Some((_, h)) = self.by_tick.pop_first() else {
                break;
            };
            self.by_hash.remove(&h);
        }
    }
}

/// Chained hashes of the whole blocks of `ids`: each covers its block and all before it.
fn block_hashes(ids: &[u32]) -> impl Iterator<Item = u64> + '_ {
    ids.chunks_exact(BLOCK).scan(0u64, |prev, block| {
        let mut h = DefaultHasher::new();
        prev.hash(&mut h);
        block.hash(&mut h);
        *prev = h.finish();
        Some(*prev)
    })
}

impl PrefixCache {
    /// A cache of `capacity` blocks.
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity,
            inner: Mutex::new(Lru::default()),
        }
    }

    /// Looks the prompt `ids` up, then stores its blocks; returns how many of its tokens hit.
    pub fn lookup_and_insert(&self, ids: &[u32]) -> u64 {
        if ids.is_empty() {
            return 0;
        }
        // The last token is always computed: at most the whole blocks before it can hit.
        let hashes: Vec<u64> = block_hashes(&ids[..ids.len() - 1]).collect();
        let mut lru = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let hits = hashes
            .iter()
            .take_while(|h| lru.by_hash.contains_key(h))
            .count();
        for h in hashes {
            lru.touch(h);
        }
        lru.evict_to(self.capacity);
        (hits * BLOCK) as u64
    }

    /// Blocks held.
    pub fn len(&self) -> usize {
        self.inner.lock().map_or(0, |l| l.by_hash.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_prefixes_hit_by_whole_blocks_and_the_cache_stays_bounded() {
        let c = PrefixCache::new(8);
        let a: Vec<u32> = (0..50).collect();
        assert_eq!(c.lookup_and_insert(&a), 0, "cold");
        // The same prompt again: 49 tokens before the last, so 3 whole blocks hit.
        assert_eq!(c.lookup_and_insert(&a), 48);
        // Same first 20 tokens, then different: one block hits.
        let mut b: Vec<u32> = (0..20).collect();
        b.extend(1000..1040);
        assert_eq!(c.lookup_and_insert(&b), 16);
        // A different first token changes every chained hash after it.
        let mut d = a.clone();
        d[0] = 99;
        assert_eq!(c.lookup_and_insert(&d), 0);
        assert!(c.len() <= 8);
        assert_eq!(c.lookup_and_insert(&[]), 0);
    }

    #[test]
    fn cached_tokens_are_not_prefilled() {
        let p = crate::PromptTokens {
            count: 50,
            cached: Some(48),
        };
        assert_eq!(p.to_prefill(), 2);
        let none = crate::PromptTokens {
            count: 50,
            cached: None,
        };
        assert_eq!(none.to_prefill(), 50);
    }
}
