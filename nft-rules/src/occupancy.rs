//! Which of the runtime sets and maps hold elements, mirrored in user space.
//!
//! [`crate::Ruleset`] is the only writer of its table's sets, so it knows their keys without
//! asking the kernel, and can tell before a batch is sent whether the batch empties a set or
//! fills an empty one, and so whether the batch must also change the per-flow rules.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::ffi::CStr;

use nftnl::MsgType;

use crate::nl::set::Elem;

/// Element changes of one batch, per set.
pub(crate) type Changes = BTreeMap<&'static CStr, Vec<Elem>>;

/// Which sets are non-empty. `All` stands for "unknown": every set may hold elements.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Nonempty {
    Sets(BTreeSet<&'static CStr>),
    All,
}

impl Nonempty {
    pub(crate) fn contains(&self, set: &CStr) -> bool {
        match self {
            Nonempty::Sets(sets) => sets.contains(set),
            Nonempty::All => true,
        }
    }
}

/// The keys of every set that batches have changed.
#[derive(Debug, Default)]
pub(crate) struct Occupancy {
    keys: BTreeMap<&'static CStr, HashSet<Vec<u8>>>,
    /// A batch's outcome was unknown (its acknowledgements were lost): from then on the
    /// mirror is not trusted and every set counts as non-empty.
    lost: bool,
    /// Whether the per-flow chains may differ from what the mirror implies (after an
    /// unknown outcome, until a batch rewrites them).
    rules_stale: bool,
}

impl Occupancy {
    pub(crate) fn nonempty(&self) -> Nonempty {
        if self.lost {
            return Nonempty::All;
        }
        Nonempty::Sets(
            self.keys
                .iter()
                .filter(|(_, keys)| !keys.is_empty())
                .map(|(name, _)| *name)
                .collect(),
        )
    }

    /// The non-empty sets after `changes` applied as `ty`, if the kernel accepts the batch.
    /// (It refuses the whole batch when a removed key is absent, or an added key is present
    /// with other map data; then nothing changes and this prediction does not matter.)
    pub(crate) fn after(&self, changes: &Changes, ty: MsgType) -> Nonempty {
        let Nonempty::Sets(mut sets) = self.nonempty() else {
            return Nonempty::All;
        };
        for (name, elems) in changes {
            let present = self.keys.get(name);
            let len = present.map_or(0, HashSet::len);
            let left = match ty {
                MsgType::Add => len + elems.len(),
                MsgType::Del => {
                    let gone: HashSet<&Vec<u8>> = elems
                        .iter()
                        .map(|e| &e.key)
                        .filter(|k| present.is_some_and(|p| p.contains(*k)))
                        .collect();
                    len - gone.len()
                }
            };
            if left == 0 {
                sets.remove(name);
            } else {
                sets.insert(name);
            }
        }
        Nonempty::Sets(sets)
    }

    /// Whether the next batch must rewrite the per-flow chains whatever it changes.
    pub(crate) fn rules_unknown(&self) -> bool {
        self.rules_stale
    }

    /// Records a batch the kernel accepted (it rewrote the per-flow chains if they were
    /// unknown).
    pub(crate) fn apply(&mut self, changes: &Changes, ty: MsgType) {
        self.rules_stale = false;
        for (name, elems) in changes {
            let keys = self.keys.entry(name).or_default();
            for e in elems {
                match ty {
                    MsgType::Add => keys.insert(e.key.clone()),
                    MsgType::Del => keys.remove(&e.key),
                };
            }
        }
    }

    /// Records a batch whose outcome is unknown.
    pub(crate) fn lose(&mut self) {
        self.lost = true;
        self.rules_stale = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn changes(set: &'static CStr, keys: &[u8]) -> Changes {
        [(set, keys.iter().map(|k| Elem::key(vec![*k])).collect())].into()
    }

    #[test]
    fn first_add_and_last_removal_change_emptiness() {
        let mut o = Occupancy::default();
        assert!(!o.nonempty().contains(c"flows4"));
        let add = changes(c"flows4", &[1, 2]);
        assert!(o.after(&add, MsgType::Add).contains(c"flows4"));
        o.apply(&add, MsgType::Add);
        // Adding a present key (allowed) and removing one of two keep the set non-empty.
        let again = changes(c"flows4", &[1]);
        assert_eq!(o.after(&again, MsgType::Add), o.nonempty());
        o.apply(&again, MsgType::Add);
        assert!(o.after(&again, MsgType::Del).contains(c"flows4"));
        let both = changes(c"flows4", &[1, 2, 2]);
        assert_eq!(o.after(&both, MsgType::Del), Nonempty::Sets([].into()));
        o.apply(&both, MsgType::Del);
        assert!(!o.nonempty().contains(c"flows4"));
    }

    #[test]
    fn unknown_outcome_makes_every_set_count_as_nonempty() {
        let mut o = Occupancy::default();
        o.lose();
        let del = changes(c"flows6", &[1]);
        assert_eq!(o.after(&del, MsgType::Del), Nonempty::All);
        assert!(o.nonempty().contains(c"xlate_in4"));
        assert!(o.rules_unknown(), "the next batch must rewrite the chains");
        o.apply(&del, MsgType::Del);
        assert!(!o.rules_unknown());
        assert_eq!(o.nonempty(), Nonempty::All, "the mirror stays untrusted");
    }
}
