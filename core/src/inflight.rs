//! Coalescing of RouteService lookups on one worker: concurrent requests for
//! one routing key share one call. The first request (the owner) makes the
//! call; later ones wait for its answer. Requests are named by their
//! proxy-wasm context id.

use crate::random_state::HashMap;

/// What a request should do about a key it must look up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Joined {
    /// Nobody is asking yet: make the call.
    Owner,
    /// A call is in flight: wait for it.
    Waiter,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Call {
    owner: u32,
    waiters: Vec<u32>,
}

#[derive(Debug, Clone, Default)]
pub struct InFlight {
    calls: HashMap<String, Call>,
}

impl InFlight {
    pub fn join(&mut self, key: &str, context_id: u32) -> Joined {
        match self.calls.get_mut(key) {
            Some(call) => {
                call.waiters.push(context_id);
                Joined::Waiter
            }
            None => {
                let call = Call {
                    owner: context_id,
                    waiters: Vec::new(),
                };
                self.calls.insert(key.to_owned(), call);
                Joined::Owner
            }
        }
    }

    /// The owner's call could not be made: forget it, and return the waiters
    /// (there are none unless the host answered asynchronously).
    pub fn cancel(&mut self, key: &str) -> Vec<u32> {
        self.calls
            .remove(key)
            .map(|c| c.waiters)
            .unwrap_or_default()
    }

    /// The call for `key` answered: the waiters to resume.
    pub fn complete(&mut self, key: &str) -> Vec<u32> {
        self.cancel(key)
    }

    /// A request ended. A waiter just leaves; an owner's call dies with its
    /// request (the host cancels it), so its waiters are returned to be
    /// resumed without an answer.
    pub fn leave(&mut self, context_id: u32) -> Vec<u32> {
        let owned = self
            .calls
            .iter()
            .find(|(_, call)| call.owner == context_id)
            .map(|(key, _)| key.clone());
        if let Some(key) = owned {
            return self.cancel(&key);
        }
        for call in self.calls.values_mut() {
            call.waiters.retain(|&w| w != context_id);
        }
        Vec::new()
    }

    /// The key whose call `context_id` owns, if any.
    pub fn owned_by(&self, context_id: u32) -> Option<&str> {
        self.calls
            .iter()
            .find(|(_, call)| call.owner == context_id)
            .map(|(key, _)| key.as_str())
    }

    pub fn contains(&self, key: &str) -> bool {
        self.calls.contains_key(key)
    }

    pub fn len(&self) -> usize {
        self.calls.len()
    }

    pub fn is_empty(&self) -> bool {
        self.calls.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    #[test]
    fn one_call_per_key() {
        let mut f = InFlight::default();
        assert_eq!(f.join("k", 1), Joined::Owner);
        assert_eq!(f.join("k", 2), Joined::Waiter);
        assert_eq!(f.join("k", 3), Joined::Waiter);
        assert_eq!(f.join("other", 4), Joined::Owner);
        assert_eq!(f.complete("k"), vec![2, 3]);
        assert_eq!(f.join("k", 5), Joined::Owner);
        assert_eq!(f.len(), 2);
    }

    #[test]
    fn a_waiter_leaving_is_forgotten() {
        let mut f = InFlight::default();
        f.join("k", 1);
        f.join("k", 2);
        f.join("k", 3);
        assert!(f.leave(2).is_empty());
        assert_eq!(f.complete("k"), vec![3]);
    }

    #[test]
    fn an_owner_leaving_releases_its_waiters() {
        let mut f = InFlight::default();
        f.join("k", 1);
        f.join("k", 2);
        assert_eq!(f.owned_by(1), Some("k"));
        assert_eq!(f.owned_by(2), None);
        assert_eq!(f.leave(1), vec![2]);
        assert!(f.is_empty());
        assert!(f.complete("k").is_empty());
    }
}
