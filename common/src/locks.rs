//! Async locks by key (a pod or container ID, a digest), made on demand and
//! dropped once no one holds or waits for them: calls on one object run one
//! at a time, and concurrent pulls that need the same blob take turns.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// One async mutex per key, for as long as someone holds or waits for it.
#[derive(Debug, Default)]
pub struct KeyedLocks {
    map: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl KeyedLocks {
    fn entry(&self, key: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        map.retain(|_, l| Arc::strong_count(l) > 1);
        map.entry(key.to_string()).or_default().clone()
    }

    pub async fn lock(&self, key: &str) -> tokio::sync::OwnedMutexGuard<()> {
        self.entry(key).lock_owned().await
    }

    /// The lock if no one holds it right now.
    pub fn try_lock(&self, key: &str) -> Option<tokio::sync::OwnedMutexGuard<()>> {
        self.entry(key).try_lock_owned().ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn try_lock_fails_only_while_held() {
        let l = KeyedLocks::default();
        let g = l.lock("a").await;
        assert!(l.try_lock("a").is_none());
        assert!(l.try_lock("b").is_some());
        drop(g);
        assert!(l.try_lock("a").is_some());
    }
}
