//! The installed table and the runtime changes to it.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::ffi::{CStr, CString};

use nftnl::{Chain, ChainType, Hook, MsgType, Policy, ProtoFamily, Rule, Table};

use crate::config::{Config, ConfigError};
use crate::error::{Error, Result};
use crate::flow::{Direction, FlowKey, Translation};
use crate::nl::expr::{self, Expr};
use crate::nl::set::{Elem, NftSet, SetSpec};
use crate::nl::txn::{NlSocket, Txn};
use crate::occupancy::{Changes, Occupancy};
use crate::rules::{self, ChainId, FamilyLayout, RuleSpec};

/// How packets are handed to the queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum QueueMode {
    /// The nft `queue` expression (`CONFIG_NFT_QUEUE`).
    Native,
    /// The xtables `NFQUEUE` target (revision 3) through nft_compat.
    Compat,
}

/// rackd's table, installed in the network namespace of the thread that called
/// [`Ruleset::install`]. Dropping it removes the table (best effort; use [`Ruleset::remove`]
/// to see errors).
#[derive(Debug)]
pub struct Ruleset {
    sock: NlSocket,
    table: CString,
    mode: QueueMode,
    /// The queue verdicts of the per-flow rules, kept to re-add them.
    verdicts: rules::QueueVerdicts,
    /// What the per-flow sets and maps hold, and so which per-flow rules are in place.
    occupancy: RefCell<Occupancy>,
    installed: bool,
}

fn chain_of<'a>(table: &'a Table, id: ChainId) -> Chain<'a> {
    let mut chain = Chain::new(id.name(), table);
    match id {
        ChainId::Pre => {
            chain.set_hook(Hook::PreRouting, -300);
            chain.set_type(ChainType::Filter);
        }
        ChainId::Out => {
            chain.set_hook(Hook::Out, -150);
            chain.set_type(ChainType::Route);
        }
        // Regular chains: no hook, and the kernel refuses a policy on them.
        ChainId::PreFlows | ChainId::OutFlows => return chain,
    }
    chain.set_policy(Policy::Accept);
    chain
}

fn add_rule(txn: &mut Txn, chain: &Chain<'_>, spec: &RuleSpec) {
    let mut rule = Rule::new(chain);
    for e in &spec.exprs {
        rule.add_expr(e);
    }
    // Comments are short constants, far below the userdata limit.
    let comment = CString::new(format!("rackd: {}", spec.comment)).unwrap_or_default();
    let _ = rule.set_comment(&comment);
    let label = format!(
        "rule in chain {}: {}",
        spec.chain.name().to_string_lossy(),
        spec.comment
    );
    txn.add(&rule, MsgType::Add, label);
}

/// Adds "replace table": creating it if absent makes the delete that follows always valid.
fn replace_table(txn: &mut Txn, table: &Table, label: &str) {
    txn.add(table, MsgType::Add, label);
    txn.add(table, MsgType::Del, label);
}

impl Ruleset {
    /// Installs the table, replacing any table of the same name (a crashed daemon's) in the
    /// same atomic batch.
    pub fn install(cfg: &Config) -> Result<Self> {
        cfg.validate()?;
        let table_name = CString::new(cfg.table.as_str())
            .map_err(|_| ConfigError::TableName(cfg.table.clone()))?;
        let (sets, eligible) = rules::sets(cfg)?;
        let sock = NlSocket::open("install")?;
        let mode = match cfg.mode {
            Some(mode) => {
                probe(&sock, &table_name, mode)?;
                mode
            }
            None => choose_mode(&sock, &table_name)?,
        };

        let table = Table::new(&table_name, ProtoFamily::Inet);
        let label = format!("table inet {}", cfg.table);
        let mut txn = Txn::new();
        replace_table(&mut txn, &table, &label);
        txn.add(&table, MsgType::Add, &label);
        let chains = ChainId::ALL.map(|id| chain_of(&table, id));
        for chain in &chains {
            txn.add(
                chain,
                MsgType::Add,
                format!("chain {}", chain.get_name().to_string_lossy()),
            );
        }
        let set_objs: Vec<_> = sets
            .iter()
            .zip(1..)
            .map(|(s, id)| NftSet::definition(&table_name, ProtoFamily::Inet, &s.spec, id))
            .collect();
        let elem_objs: Vec<_> = sets
            .iter()
            .map(|s| {
                NftSet::with_elems(
                    &table_name,
                    ProtoFamily::Inet,
                    s.spec.name,
                    s.elems.iter().cloned(),
                )
            })
            .collect();
        for ((init, def), elems) in sets.iter().zip(&set_objs).zip(&elem_objs) {
            let name = init.spec.name.to_string_lossy();
            txn.add(def, MsgType::Add, format!("set {name}"));
            if !init.elems.is_empty() {
                txn.add_elems(elems, MsgType::Add, &format!("elements of set {name}"));
            }
        }
        for spec in rules::rules(cfg, &eligible, mode) {
            let chain = &chains[ChainId::ALL
                .iter()
                .position(|c| *c == spec.chain)
                .unwrap_or(0)];
            add_rule(&mut txn, chain, &spec);
        }
        txn.commit(&sock, "install")?;
        Ok(Self {
            sock,
            table: table_name,
            mode,
            verdicts: rules::queue_verdicts(cfg, mode),
            occupancy: RefCell::new(Occupancy::default()),
            installed: true,
        })
    }

    /// The queueing mechanism in use.
    pub fn mode(&self) -> QueueMode {
        self.mode
    }

    /// The table's name.
    pub fn table_name(&self) -> &CStr {
        &self.table
    }

    /// Starts queueing the packets whose 4-tuple (as seen at the hook, after any
    /// translation) equals one of `flows`; each key is one direction. Adding a present key
    /// is not an error.
    pub fn queue_flows(&self, flows: &[FlowKey]) -> Result<()> {
        self.change_flows(flows, false, MsgType::Add, "queue flows")
    }

    /// Stops queueing `flows`. Every key must be present, or nothing changes.
    pub fn unqueue_flows(&self, flows: &[FlowKey]) -> Result<()> {
        self.change_flows(flows, false, MsgType::Del, "unqueue flows")
    }

    /// Like [`Ruleset::queue_flows`], but the packets are never let through unqueued: while no
    /// reader is bound (the daemon died) they are dropped, even with `queue.bypass`. For flows
    /// only the daemon can carry correctly — whose packets it rewrites.
    pub fn queue_flows_strictly(&self, flows: &[FlowKey]) -> Result<()> {
        self.change_flows(flows, true, MsgType::Add, "queue flows strictly")
    }

    /// Stops queueing flows queued with [`Ruleset::queue_flows_strictly`].
    pub fn unqueue_flows_strictly(&self, flows: &[FlowKey]) -> Result<()> {
        self.change_flows(flows, true, MsgType::Del, "unqueue strictly queued flows")
    }

    fn change_flows(
        &self,
        flows: &[FlowKey],
        strict: bool,
        ty: MsgType,
        op: &'static str,
    ) -> Result<()> {
        let mut by_set: BTreeMap<&'static CStr, Vec<Elem>> = BTreeMap::new();
        for key in flows {
            let layout = FamilyLayout::of(key.family()?);
            let set = if strict {
                &layout.strict
            } else {
                &layout.flows
            };
            by_set
                .entry(set.name)
                .or_default()
                .push(Elem::key(key.encode()));
        }
        self.commit_elems(by_set, ty, op)
    }

    /// Installs in-kernel translations: packets of `key` travelling in `direction` get the
    /// addresses and ports of the translation. An existing entry with a different
    /// translation must be removed first (the kernel answers `EEXIST`).
    pub fn add_translations(&self, entries: &[(Direction, FlowKey, Translation)]) -> Result<()> {
        let mut by_set: BTreeMap<&'static CStr, Vec<Elem>> = BTreeMap::new();
        for (direction, key, to) in entries {
            let family = key.family()?;
            if crate::flow::family_of(to.src, to.dst)? != family {
                return Err(Error::MixedFamilies {
                    src: key.src,
                    dst: to.src,
                });
            }
            let map = FamilyLayout::of(family).xlate(*direction);
            let elem = Elem {
                key: key.encode(),
                data: Some(to.encode()),
                interval_end: false,
            };
            by_set.entry(map.name).or_default().push(elem);
        }
        self.commit_elems(by_set, MsgType::Add, "add translations")
    }

    /// Removes translations. Every entry must be present, or nothing changes.
    pub fn remove_translations(&self, entries: &[(Direction, FlowKey)]) -> Result<()> {
        let mut by_set: BTreeMap<&'static CStr, Vec<Elem>> = BTreeMap::new();
        for (direction, key) in entries {
            let map: &SetSpec = FamilyLayout::of(key.family()?).xlate(*direction);
            by_set
                .entry(map.name)
                .or_default()
                .push(Elem::key(key.encode()));
        }
        self.commit_elems(by_set, MsgType::Del, "remove translations")
    }

    /// One batch with the element changes of every set touched and, when they fill an empty
    /// set or empty one, the new per-flow rules: packets see either the old elements and
    /// rules or the new ones, never a mix.
    fn commit_elems(&self, by_set: Changes, ty: MsgType, op: &'static str) -> Result<()> {
        if by_set.is_empty() {
            return Ok(());
        }
        let mut occupancy = self.occupancy.borrow_mut();
        let objs: Vec<_> = by_set
            .iter()
            .map(|(name, elems)| {
                let set =
                    NftSet::with_elems(&self.table, ProtoFamily::Inet, name, elems.iter().cloned());
                (name, set)
            })
            .collect();
        let mut txn = Txn::new();
        for (name, set) in &objs {
            txn.add_elems(
                set,
                ty,
                &format!("elements of set {}", name.to_string_lossy()),
            );
        }
        let (now, next) = (occupancy.nonempty(), occupancy.after(&by_set, ty));
        let table = Table::new(&self.table, ProtoFamily::Inet);
        let chains = ChainId::BASE.map(|base| (base, chain_of(&table, base.flows())));
        for (base, chain) in &chains {
            let before = rules::flow_rules(*base, &self.verdicts, |s| now.contains(s));
            let after = rules::flow_rules(*base, &self.verdicts, |s| next.contains(s));
            if before != after || occupancy.rules_unknown() {
                // A rule delete without a handle flushes the chain.
                let name = chain.get_name().to_string_lossy();
                txn.add(
                    &Rule::new(chain),
                    MsgType::Del,
                    format!("flush of chain {name}"),
                );
                for spec in &after {
                    add_rule(&mut txn, chain, spec);
                }
            }
        }
        match txn.commit(&self.sock, op) {
            Ok(()) => {
                occupancy.apply(&by_set, ty);
                Ok(())
            }
            Err(e) => {
                // A rejected batch was rolled back as a whole; other failures leave the
                // outcome unknown.
                if !matches!(e, Error::Rejected { .. }) {
                    occupancy.lose();
                }
                Err(e)
            }
        }
    }

    /// Removes the table and everything in it.
    pub fn remove(mut self) -> Result<()> {
        self.installed = false;
        delete_table(&self.sock, &self.table, "remove")
    }
}

impl Drop for Ruleset {
    fn drop(&mut self) {
        if self.installed {
            // Fail open: a daemon going away must not leave its rules behind.
            let _ = delete_table(&self.sock, &self.table, "remove on drop");
        }
    }
}

fn delete_table(sock: &NlSocket, name: &CStr, op: &'static str) -> Result<()> {
    let table = Table::new(name, ProtoFamily::Inet);
    let mut txn = Txn::new();
    txn.add(
        &table,
        MsgType::Del,
        format!("table inet {}", name.to_string_lossy()),
    );
    txn.commit(sock, op)
}

/// Removes a table left behind by a daemon that did not exit cleanly; `Ok` also when there
/// was none. Runs in the calling thread's network namespace.
pub fn remove_stale(table: &str) -> Result<()> {
    let name = CString::new(table).map_err(|_| ConfigError::TableName(table.into()))?;
    let sock = NlSocket::open("remove stale table")?;
    let table = Table::new(&name, ProtoFamily::Inet);
    let mut txn = Txn::new();
    replace_table(
        &mut txn,
        &table,
        &format!("table inet {}", name.to_string_lossy()),
    );
    txn.commit(&sock, "remove stale table")
}

/// The queue expression a mode uses, with throw-away parameters.
fn probe_expr(mode: QueueMode) -> Expr {
    match mode {
        QueueMode::Native => expr::queue_native(0, 1, 1),
        QueueMode::Compat => expr::queue_compat(0, 1, 1),
    }
}

/// Checks whether the kernel accepts a mode's queue expression: a batch that creates a
/// scratch table with one such rule and deletes it again. The batch leaves nothing behind
/// either way, and fails as a whole when the expression is unknown.
pub(crate) fn probe(sock: &NlSocket, table: &CStr, mode: QueueMode) -> Result<()> {
    let name = CString::new(format!(
        "{}-probe-{}",
        table.to_string_lossy(),
        std::process::id()
    ))
    .map_err(|_| ConfigError::TableName(table.to_string_lossy().into_owned()))?;
    let scratch = Table::new(&name, ProtoFamily::Inet);
    let chain = Chain::new(c"probe", &scratch);
    let mut rule = Rule::new(&chain);
    rule.add_expr(&probe_expr(mode));
    let mut txn = Txn::new();
    let label = format!("scratch table inet {}", name.to_string_lossy());
    txn.add(&scratch, MsgType::Add, &label);
    txn.add(&chain, MsgType::Add, "scratch chain probe");
    txn.add(
        &rule,
        MsgType::Add,
        format!("probe rule with the {mode:?} queue expression"),
    );
    txn.add(&scratch, MsgType::Del, &label);
    txn.commit(sock, "probe queue mode")
}

/// Probes whether the kernel has the native expression or only the compat target.
pub fn probe_queue_mode(mode: QueueMode) -> Result<()> {
    let sock = NlSocket::open("probe queue mode")?;
    probe(&sock, c"rackd", mode)
}

fn choose_mode(sock: &NlSocket, table: &CStr) -> Result<QueueMode> {
    let native = match probe(sock, table, QueueMode::Native) {
        Ok(()) => return Ok(QueueMode::Native),
        Err(e) => e,
    };
    match probe(sock, table, QueueMode::Compat) {
        Ok(()) => Ok(QueueMode::Compat),
        Err(compat) => Err(Error::NoQueueMode {
            native: Box::new(native),
            compat: Box::new(compat),
        }),
    }
}
