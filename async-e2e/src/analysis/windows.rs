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
//!
//! An observer may decide nothing with the new view before the next change
//! starts: a consumer behind on its backlog (a stall of a loaded machine)
//! decides its last messages of the phase from the old table and its next
//! ones only after the next change. Its switch then shows at its first
//! decision after the next change started, if that decision still has this
//! change's view; if it already has the next change's view, this change
//! was never seen in its decisions and stays unsettled.

use crate::ledger::{Action, Change};

/// One observer's switch to one change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Switch {
    /// The last decision with the old view after the change started.
    pub last_old_us: Option<u64>,
    /// The first decision with the new view after `last_old_us`: from then
    /// on, until the next change, every decision has the new view. Past
    /// the next change's start when the observer decided nothing with the
    /// new view before it (see the module's notes).
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
            let next = sorted.iter().copied().find(|(at, _)| *at >= until);
            switch(&during, next, new_view(change))
        })
        .collect()
}

/// `during`: the decisions from the change's start to the next change's;
/// `next`: the first decision after that.
fn switch(during: &[(u64, bool)], next: Option<(u64, bool)>, new: bool) -> Switch {
    let last_old_us = during
        .iter()
        .rev()
        .find(|(_, view)| *view != new)
        .map(|(at, _)| *at);
    let settled_us = during
        .iter()
        .find(|(at, view)| *view == new && last_old_us.is_none_or(|old| *at > old))
        .map(|(at, _)| *at)
        .or_else(|| next.filter(|(_, view)| *view == new).map(|(at, _)| at));
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

    #[test]
    fn a_consumer_behind_settles_at_its_first_decision_after_the_next_change() {
        let changes = [change(Action::Create, 100), change(Action::Delete, 200)];
        // Old views only before the deletion, then the creation's view.
        let behind = switches(
            &[(110, false), (120, false), (230, true), (250, false)],
            &changes,
        );
        assert_eq!(
            behind[0],
            Switch {
                last_old_us: Some(120),
                settled_us: Some(230),
                flaps: 0
            }
        );
        assert_eq!(behind[1].last_old_us, Some(230));
        assert_eq!(behind[1].settled_us, Some(250));
        // Nothing at all before the deletion: the same.
        let idle = switches(&[(230, true), (250, false)], &changes);
        assert_eq!(idle[0].settled_us, Some(230));
        // Straight to the deletion's view: the creation never showed.
        let skipped = switches(&[(110, false), (230, false)], &changes);
        assert_eq!(skipped[0].settled_us, None);
        assert_eq!(skipped[1].settled_us, Some(230));
        // The last change has no next one to look at.
        let last = switches(&[(210, true)], &changes);
        assert_eq!(last[1].settled_us, None);
    }
}
