//! nf_tables expressions as plain data, turned into `nftnl_expr` objects in one place.
//!
//! The nftnl crate covers only part of the expression attributes this crate needs (payload
//! writes with checksum flags, lookups into data registers, the xtables target, `queue`), so
//! every expression is described here as a name plus typed attributes and built by a single
//! [`Expression`] implementation. Constructors mirror what `nft --debug=netlink` prints.

use std::ffi::{c_void, CStr};
use std::ptr::NonNull;

use nftnl::expr::Expression;
use nftnl::nftnl_sys as sys;
use nftnl::Rule;

use super::consts::*;

/// One attribute value of an expression.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Value {
    U32(u32),
    Bytes(Vec<u8>),
    /// Bytes libnftnl takes ownership of (it frees them with the expression) instead of
    /// copying: the xtables target info.
    HandedOver(Vec<u8>),
    Str(&'static CStr),
}

/// An expression: its kernel name and attributes, in the order they are set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Expr {
    name: &'static CStr,
    attrs: Vec<(u32, Value)>,
}

impl Expr {
    fn new(name: &'static CStr) -> Self {
        Self {
            name,
            attrs: Vec::new(),
        }
    }

    fn u32(mut self, attr: u32, value: u32) -> Self {
        self.attrs.push((attr, Value::U32(value)));
        self
    }

    fn bytes(mut self, attr: u32, value: &[u8]) -> Self {
        self.attrs.push((attr, Value::Bytes(value.to_vec())));
        self
    }

    fn handed_over(mut self, attr: u32, value: &[u8]) -> Self {
        self.attrs.push((attr, Value::HandedOver(value.to_vec())));
        self
    }

    fn str(mut self, attr: u32, value: &'static CStr) -> Self {
        self.attrs.push((attr, Value::Str(value)));
        self
    }

    /// The kernel name of this expression (`payload`, `lookup`, ...).
    #[cfg(test)]
    pub(crate) fn name(&self) -> &'static CStr {
        self.name
    }
}

impl Expression for Expr {
    fn to_expr(&self, _rule: &Rule) -> NonNull<sys::nftnl_expr> {
        // SAFETY: `nftnl_expr_alloc` takes a NUL-terminated name and returns an owned object or
        // NULL; NULL means allocation failure, handled like Rust's own allocator does (abort).
        let raw = unsafe { sys::nftnl_expr_alloc(self.name.as_ptr()) };
        let Some(expr) = NonNull::new(raw) else {
            std::process::abort();
        };
        for (attr, value) in &self.attrs {
            let attr = *attr as u16;
            // SAFETY: `expr` is a live object we own. libnftnl copies most values (strings
            // are strdup'ed, data memcpy'ed), so those buffers only need to live for the call;
            // a handed-over buffer is a fresh malloc'ed copy whose ownership passes to the
            // expression, which frees it with free(3).
            unsafe {
                match value {
                    Value::U32(v) => sys::nftnl_expr_set_u32(expr.as_ptr(), attr, *v),
                    Value::Str(s) => {
                        sys::nftnl_expr_set_str(expr.as_ptr(), attr, s.as_ptr());
                    }
                    Value::Bytes(b) => {
                        let ptr = b.as_ptr().cast::<c_void>();
                        sys::nftnl_expr_set(expr.as_ptr(), attr, ptr, b.len() as u32);
                    }
                    Value::HandedOver(b) => {
                        let copy = libc::malloc(b.len().max(1)).cast::<u8>();
                        if copy.is_null() {
                            std::process::abort();
                        }
                        std::ptr::copy_nonoverlapping(b.as_ptr(), copy, b.len());
                        sys::nftnl_expr_set(expr.as_ptr(), attr, copy.cast(), b.len() as u32);
                    }
                }
            }
        }
        expr
    }
}

/// Where a payload offset is counted from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Base {
    Network = NFT_PAYLOAD_NETWORK_HEADER as isize,
    Transport = NFT_PAYLOAD_TRANSPORT_HEADER as isize,
}

/// How a payload write keeps checksums right.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Csum {
    /// Update the Internet checksum at this offset (same base) incrementally.
    Inet { offset: u32 },
    /// No checksum in this header (IPv6).
    None,
}

/// `meta load <key> => reg`.
pub(crate) fn meta_load(key: u32, dreg: u32) -> Expr {
    Expr::new(c"meta")
        .u32(sys::NFTNL_EXPR_META_KEY, key)
        .u32(sys::NFTNL_EXPR_META_DREG, dreg)
}

/// `payload load len @ base + offset => reg`.
pub(crate) fn payload_load(base: Base, offset: u32, len: u32, dreg: u32) -> Expr {
    Expr::new(c"payload")
        .u32(sys::NFTNL_EXPR_PAYLOAD_BASE, base as u32)
        .u32(sys::NFTNL_EXPR_PAYLOAD_OFFSET, offset)
        .u32(sys::NFTNL_EXPR_PAYLOAD_LEN, len)
        .u32(sys::NFTNL_EXPR_PAYLOAD_DREG, dreg)
}

/// `payload write reg => len @ base + offset`, fixing the header checksum and, when
/// `pseudo_header` is set, the TCP/UDP checksum that covers this field through the
/// pseudo-header (addresses).
pub(crate) fn payload_write(
    base: Base,
    offset: u32,
    len: u32,
    sreg: u32,
    csum: Csum,
    pseudo_header: bool,
) -> Expr {
    let (csum_type, csum_offset) = match csum {
        Csum::Inet { offset } => (NFT_PAYLOAD_CSUM_INET, offset),
        Csum::None => (NFT_PAYLOAD_CSUM_NONE, 0),
    };
    let flags = if pseudo_header {
        NFT_PAYLOAD_L4CSUM_PSEUDOHDR
    } else {
        0
    };
    Expr::new(c"payload")
        .u32(sys::NFTNL_EXPR_PAYLOAD_SREG, sreg)
        .u32(sys::NFTNL_EXPR_PAYLOAD_BASE, base as u32)
        .u32(sys::NFTNL_EXPR_PAYLOAD_OFFSET, offset)
        .u32(sys::NFTNL_EXPR_PAYLOAD_LEN, len)
        .u32(sys::NFTNL_EXPR_PAYLOAD_CSUM_TYPE, csum_type)
        .u32(sys::NFTNL_EXPR_PAYLOAD_CSUM_OFFSET, csum_offset)
        .u32(sys::NFTNL_EXPR_PAYLOAD_FLAGS, flags)
}

/// `cmp eq|neq reg data`.
pub(crate) fn cmp(op: u32, sreg: u32, data: &[u8]) -> Expr {
    Expr::new(c"cmp")
        .u32(sys::NFTNL_EXPR_CMP_SREG, sreg)
        .u32(sys::NFTNL_EXPR_CMP_OP, op)
        .bytes(sys::NFTNL_EXPR_CMP_DATA, data)
}

/// `bitwise reg = (reg & mask) ^ 0`.
pub(crate) fn and_mask(reg: u32, mask: &[u8]) -> Expr {
    Expr::new(c"bitwise")
        .u32(sys::NFTNL_EXPR_BITWISE_SREG, reg)
        .u32(sys::NFTNL_EXPR_BITWISE_DREG, reg)
        .u32(sys::NFTNL_EXPR_BITWISE_LEN, mask.len() as u32)
        .bytes(sys::NFTNL_EXPR_BITWISE_MASK, mask)
        .bytes(sys::NFTNL_EXPR_BITWISE_XOR, &vec![0; mask.len()])
}

/// `lookup reg set NAME [dreg]`, matching when the key is (or, `invert`, is not) in the set.
pub(crate) fn lookup(set: &'static CStr, sreg: u32, dreg: Option<u32>, invert: bool) -> Expr {
    let mut e = Expr::new(c"lookup")
        .str(sys::NFTNL_EXPR_LOOKUP_SET, set)
        .u32(sys::NFTNL_EXPR_LOOKUP_SREG, sreg);
    if let Some(dreg) = dreg {
        e = e.u32(sys::NFTNL_EXPR_LOOKUP_DREG, dreg);
    }
    if invert {
        e = e.u32(sys::NFTNL_EXPR_LOOKUP_FLAGS, NFT_LOOKUP_F_INV);
    }
    e
}

/// `immediate reg 0 <verdict>` (accept, drop, ...).
pub(crate) fn verdict(code: i32) -> Expr {
    Expr::new(c"immediate")
        .u32(sys::NFTNL_EXPR_IMM_DREG, NFT_REG_VERDICT)
        .u32(sys::NFTNL_EXPR_IMM_VERDICT, code as u32)
}

/// `jump <chain>`: evaluate a regular chain, then continue after this rule.
pub(crate) fn jump(chain: &'static CStr) -> Expr {
    Expr::new(c"immediate")
        .u32(sys::NFTNL_EXPR_IMM_DREG, NFT_REG_VERDICT)
        .u32(sys::NFTNL_EXPR_IMM_VERDICT, NFT_JUMP as u32)
        .str(sys::NFTNL_EXPR_IMM_CHAIN, chain)
}

/// `counter`.
pub(crate) fn counter() -> Expr {
    Expr::new(c"counter")
}

/// The native `queue` expression (`CONFIG_NFT_QUEUE`).
pub(crate) fn queue_native(num: u16, total: u16, flags: u16) -> Expr {
    Expr::new(c"queue")
        .u32(sys::NFTNL_EXPR_QUEUE_NUM, num.into())
        .u32(sys::NFTNL_EXPR_QUEUE_TOTAL, total.into())
        .u32(sys::NFTNL_EXPR_QUEUE_FLAGS, flags.into())
}

/// The xtables `NFQUEUE` target, revision 3, through nft_compat.
///
/// Its info block is `struct xt_NFQ_info_v3 { u16 queuenum, queues_total, flags }` in host
/// byte order (6 bytes, as measured to work; see DESIGN.md §4).
pub(crate) fn queue_compat(num: u16, total: u16, flags: u16) -> Expr {
    let mut info = [0u8; 6];
    info[0..2].copy_from_slice(&num.to_ne_bytes());
    info[2..4].copy_from_slice(&total.to_ne_bytes());
    info[4..6].copy_from_slice(&flags.to_ne_bytes());
    Expr::new(c"target")
        .str(sys::NFTNL_EXPR_TG_NAME, c"NFQUEUE")
        .u32(sys::NFTNL_EXPR_TG_REV, 3)
        .handed_over(sys::NFTNL_EXPR_TG_INFO, &info)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compat_info_is_host_order_and_padded() {
        let e = queue_compat(0x0102, 4, QUEUE_FLAG_BYPASS);
        let info = e
            .attrs
            .iter()
            .find(|(a, _)| *a == sys::NFTNL_EXPR_TG_INFO)
            .unwrap();
        let mut want = vec![];
        want.extend_from_slice(&0x0102u16.to_ne_bytes());
        want.extend_from_slice(&4u16.to_ne_bytes());
        want.extend_from_slice(&1u16.to_ne_bytes());
        assert_eq!(info.1, Value::HandedOver(want));
    }

    #[test]
    fn address_write_asks_for_pseudo_header_update() {
        let e = payload_write(Base::Network, 12, 4, 8, Csum::Inet { offset: 10 }, true);
        assert!(e
            .attrs
            .contains(&(sys::NFTNL_EXPR_PAYLOAD_FLAGS, Value::U32(1))));
        assert!(e
            .attrs
            .contains(&(sys::NFTNL_EXPR_PAYLOAD_CSUM_TYPE, Value::U32(1))));
        assert!(e
            .attrs
            .contains(&(sys::NFTNL_EXPR_PAYLOAD_CSUM_OFFSET, Value::U32(10))));
    }
}
