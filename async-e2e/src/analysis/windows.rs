//! When an observer (a consumer, or Envoy's filter) switched to a sandbox
//! change: from its decisions about the sandbox's key over time, each
//! either "forked" or not.
//!
//! For change `k`, look at the decisions made from its start until the
//! next change starts. The last one with the old view and the first new
//! one after it bound the moment the observer settled on the new table;
//! views that flip more than once in between are counted (an Envoy's
//! workers each have their own key cache, so they may differ for a while;
//! one consumer client must never flap).

use crate::ledger::{Action, Change};

/// One observer's switch to one change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Switch {
    /// The last decision with the old view after the change started.
    pub last_old_us: Option<u64>,
    /// The first decision with the new view after `last_old_us`: from then
    /// on, until the next change, every decision has the new view.
    pub settled_us: Option<u64>,
    /// View flips after the first one, before settling.
    pub flaps: usize,
}

/// The view a change leads to: forked after a creation.
pub fn new_view(change: &Change) -> bool {
    change.action == Action::Create
}

/// `observations`: `(time, forked)` of one observer's decisions about the
/// sandbox's key, in any order. One [`Switch`] per change.
pub fn switches(observations: &[(u64, bool)], changes: &[Change]) -> Vec<Switch> {
    let mut sorted = observations.to_vec();
    sorted.sort_unstable();
    changes
        .iter()
        .enumerate()
        .map(|(k, change)| {
            let until = changes.get(k + 1).map_or(u64::MAX, |next| next.started_us);
            let during: Vec<(u64, bool)> = sorted
                .iter()
                .copied()
                .filter(|(at, _)| *at >= change.started_us && *at < until)
                .collect();
            switch(&during, new_view(change))
        })
        .collect()
}

fn switch(during: &[(u64, bool)], new: bool) -> Switch {
    let last_old_us = during
        .iter()
        .rev()
        .find(|(_, view)| *view != new)
        .map(|(at, _)| *at);
    let settled_us = during
        .iter()
        .find(|(at, view)| *view == new && last_old_us.is_none_or(|old| *at > old))
        .map(|(at, _)| *at);
    let flips = during.windows(2).filter(|pair| match pair {
        [a, b] => a.1 != b.1,
        _ => false,
    });
    // A first decision already new counts as the one expected flip.
    let starts_new = during.first().is_some_and(|(_, view)| *view == new);
    let expected = usize::from(!starts_new);
    Switch {
        last_old_us,
        settled_us,
        flaps: flips.count().saturating_sub(expected),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(action: Action, started_us: u64) -> Change {
        Change {
            action,
            version: 1,
            started_us,
            done_us: started_us,
            resumed_us: started_us,
            phase_after: 1,
        }
    }

    #[test]
    fn a_clean_switch_per_change() {
        let changes = [change(Action::Create, 100), change(Action::Delete, 200)];
        let seen = [
            (50, false),
            (110, false),
            (120, true),
            (150, true),
            (210, true),
            (230, false),
        ];
        let s = switches(&seen, &changes);
        assert_eq!(
            s[0],
            Switch {
                last_old_us: Some(110),
                settled_us: Some(120),
                flaps: 0
            }
        );
        assert_eq!(
            s[1],
            Switch {
                last_old_us: Some(210),
                settled_us: Some(230),
                flaps: 0
            }
        );
    }

    #[test]
    fn flaps_are_counted_and_settling_is_after_the_last_old_view() {
        let changes = [change(Action::Create, 100)];
        let seen = [
            (110, true),
            (120, false),
            (130, true),
            (140, false),
            (150, true),
        ];
        let s = switches(&seen, &changes);
        assert_eq!(
            s[0],
            Switch {
                last_old_us: Some(140),
                settled_us: Some(150),
                flaps: 4
            }
        );
        let never = switches(&[(110, false)], &changes);
        assert_eq!(never[0].settled_us, None);
    }
}
