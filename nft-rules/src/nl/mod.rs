//! The netlink layer: expressions, sets and batches over libnftnl. All `unsafe` of the crate
//! lives in this module.

pub(crate) mod consts;
pub(crate) mod expr;
pub(crate) mod reply;
pub(crate) mod set;
pub(crate) mod txn;
