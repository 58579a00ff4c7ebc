//! Named sets and maps with the attributes nftnl's own `Set` cannot express (map data,
//! concatenated keys, interval flags) and batches of their elements.

use std::cell::Cell;
use std::ffi::{c_void, CStr};
use std::os::raw::c_char;
use std::ptr::NonNull;

use nftnl::nftnl_sys as sys;
use nftnl::{MsgType, NlMsg, ProtoFamily};

use super::consts::*;

/// The shape of a named set or map: what its keys (and values) are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SetSpec {
    pub(crate) name: &'static CStr,
    /// nftables data type of each key field, for display.
    pub(crate) key_types: &'static [u32],
    /// Length of each key field in bytes before padding to 4.
    pub(crate) key_fields: &'static [u8],
    /// Map data: nftables types and padded total length, or `None` for a plain set.
    pub(crate) data: Option<(&'static [u32], u32)>,
    pub(crate) interval: bool,
}

impl SetSpec {
    /// Key length in bytes: a single field as it is; in a concatenation each field
    /// occupies whole 32-bit registers.
    pub(crate) fn key_len(&self) -> u32 {
        match self.key_fields {
            [single] => (*single).into(),
            fields => fields.iter().map(|&l| padded(l.into())).sum(),
        }
    }
}

/// Rounds a field length up to the 4-byte register slot it occupies.
pub(crate) fn padded(len: u32) -> u32 {
    len.div_ceil(4) * 4
}

/// One element: a key, its map value, and whether it ends an interval.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Elem {
    pub(crate) key: Vec<u8>,
    pub(crate) data: Option<Vec<u8>>,
    pub(crate) interval_end: bool,
}

impl Elem {
    pub(crate) fn key(key: Vec<u8>) -> Self {
        Self {
            key,
            data: None,
            interval_end: false,
        }
    }
}

/// An owned `nftnl_set` filled from a [`SetSpec`] (and, for element batches, its elements).
pub(crate) struct NftSet {
    set: NonNull<sys::nftnl_set>,
    family: ProtoFamily,
}

impl std::fmt::Debug for NftSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NftSet")
            .field("family", &self.family)
            .finish_non_exhaustive()
    }
}

impl NftSet {
    fn alloc(table: &CStr, family: ProtoFamily, name: &CStr) -> Self {
        // SAFETY: plain allocation; NULL only on allocation failure, where we abort like std.
        let Some(set) = NonNull::new(unsafe { sys::nftnl_set_alloc() }) else {
            std::process::abort();
        };
        // SAFETY: `set` is live and owned; libnftnl copies the strings.
        unsafe {
            sys::nftnl_set_set_u32(set.as_ptr(), sys::NFTNL_SET_FAMILY as u16, family as u32);
            sys::nftnl_set_set_str(set.as_ptr(), sys::NFTNL_SET_TABLE as u16, table.as_ptr());
            sys::nftnl_set_set_str(set.as_ptr(), sys::NFTNL_SET_NAME as u16, name.as_ptr());
        }
        Self { set, family }
    }

    /// The set object for creating it (`NFT_MSG_NEWSET`).
    /// `id` must be unique among the sets created in one batch (the kernel requires one).
    pub(crate) fn definition(table: &CStr, family: ProtoFamily, spec: &SetSpec, id: u32) -> Self {
        let this = Self::alloc(table, family, spec.name);
        let mut flags = 0;
        if spec.interval {
            flags |= NFT_SET_INTERVAL;
        }
        if spec.data.is_some() {
            flags |= NFT_SET_MAP;
        }
        let s = this.set.as_ptr();
        // SAFETY: `s` is live and owned; attribute ids match their value types.
        // (No field description for concatenations: only interval sets need one, and the
        // kernel rejects it on hash sets.)
        unsafe {
            sys::nftnl_set_set_u32(s, sys::NFTNL_SET_ID as u16, id);
            sys::nftnl_set_set_u32(s, sys::NFTNL_SET_FLAGS as u16, flags);
            let key_type = concat_type(spec.key_types);
            sys::nftnl_set_set_u32(s, sys::NFTNL_SET_KEY_TYPE as u16, key_type);
            sys::nftnl_set_set_u32(s, sys::NFTNL_SET_KEY_LEN as u16, spec.key_len());
            if let Some((types, len)) = spec.data {
                sys::nftnl_set_set_u32(s, sys::NFTNL_SET_DATA_TYPE as u16, concat_type(types));
                sys::nftnl_set_set_u32(s, sys::NFTNL_SET_DATA_LEN as u16, len);
            }
        }
        this
    }

    /// The set with `elems` attached, for adding or deleting them (see [`ElemsMsgs`]).
    pub(crate) fn with_elems(
        table: &CStr,
        family: ProtoFamily,
        name: &CStr,
        elems: impl IntoIterator<Item = Elem>,
    ) -> Self {
        let this = Self::alloc(table, family, name);
        for elem in elems {
            // SAFETY: allocation as above; on success ownership of `e` passes to the set.
            let Some(e) = NonNull::new(unsafe { sys::nftnl_set_elem_alloc() }) else {
                std::process::abort();
            };
            // SAFETY: `e` is live; key/data buffers are copied by libnftnl; then `e` is
            // handed to the set, which frees it with itself.
            unsafe {
                let (k, klen) = (elem.key.as_ptr().cast::<c_void>(), elem.key.len() as u32);
                sys::nftnl_set_elem_set(e.as_ptr(), sys::NFTNL_SET_ELEM_KEY as u16, k, klen);
                if let Some(data) = &elem.data {
                    let (d, dlen) = (data.as_ptr().cast::<c_void>(), data.len() as u32);
                    sys::nftnl_set_elem_set(e.as_ptr(), sys::NFTNL_SET_ELEM_DATA as u16, d, dlen);
                }
                if elem.interval_end {
                    let flags = NFT_SET_ELEM_INTERVAL_END;
                    sys::nftnl_set_elem_set_u32(
                        e.as_ptr(),
                        sys::NFTNL_SET_ELEM_FLAGS as u16,
                        flags,
                    );
                }
                sys::nftnl_set_elem_add(this.set.as_ptr(), e.as_ptr());
            }
        }
        this
    }
}

impl Drop for NftSet {
    fn drop(&mut self) {
        // SAFETY: we own the set (and through it its elements); freed exactly once.
        unsafe { sys::nftnl_set_free(self.set.as_ptr()) };
    }
}

// SAFETY: the set definition message is bounded by the few attributes set above, far below
// the maximum message size the batch reserves.
unsafe impl NlMsg for NftSet {
    unsafe fn write(&self, buf: *mut c_void, seq: u32, msg_type: MsgType) {
        let (ty, flags) = match msg_type {
            MsgType::Add => (libc::NFT_MSG_NEWSET, libc::NLM_F_CREATE | libc::NLM_F_ACK),
            MsgType::Del => (libc::NFT_MSG_DELSET, libc::NLM_F_ACK),
        };
        // SAFETY: the caller guarantees `buf` has room for a maximum-size message.
        unsafe {
            let hdr = sys::nftnl_nlmsg_build_hdr(
                buf.cast::<c_char>(),
                ty as u16,
                self.family as u16,
                flags as u16,
                seq,
            );
            sys::nftnl_set_nlmsg_build_payload(hdr, self.set.as_ptr());
        }
    }
}

/// The element messages of one set: libnftnl packs as many elements into each message as
/// fit, so a large batch of elements becomes a handful of messages.
pub(crate) struct ElemsMsgs<'a> {
    set: &'a NftSet,
    iter: NonNull<sys::nftnl_set_elems_iter>,
    more: Cell<bool>,
}

impl<'a> ElemsMsgs<'a> {
    pub(crate) fn new(set: &'a NftSet) -> Self {
        // SAFETY: `set` outlives the iterator (lifetime 'a); NULL means allocation failure.
        let raw = unsafe { sys::nftnl_set_elems_iter_create(set.set.as_ptr()) };
        let Some(iter) = NonNull::new(raw) else {
            std::process::abort();
        };
        Self {
            set,
            iter,
            more: Cell::new(true),
        }
    }

    /// Whether another message is needed for the remaining elements.
    pub(crate) fn has_more(&self) -> bool {
        // SAFETY: the iterator is live; `cur` only reads its position.
        self.more.get() && !unsafe { sys::nftnl_set_elems_iter_cur(self.iter.as_ptr()) }.is_null()
    }
}

impl Drop for ElemsMsgs<'_> {
    fn drop(&mut self) {
        // SAFETY: created in `new`, destroyed once; the set itself is not freed here.
        unsafe { sys::nftnl_set_elems_iter_destroy(self.iter.as_ptr()) };
    }
}

// SAFETY: libnftnl stops adding elements before the nested attribute would exceed the
// 64 KiB netlink attribute limit, which is within the maximum message size.
unsafe impl NlMsg for ElemsMsgs<'_> {
    unsafe fn write(&self, buf: *mut c_void, seq: u32, msg_type: MsgType) {
        let (ty, flags) = match msg_type {
            MsgType::Add => (
                libc::NFT_MSG_NEWSETELEM,
                libc::NLM_F_CREATE | libc::NLM_F_ACK,
            ),
            MsgType::Del => (libc::NFT_MSG_DELSETELEM, libc::NLM_F_ACK),
        };
        // SAFETY: the caller guarantees `buf` has room for a maximum-size message; the
        // iterator belongs to `self.set`, which is alive.
        let ret = unsafe {
            let hdr = sys::nftnl_nlmsg_build_hdr(
                buf.cast::<c_char>(),
                ty as u16,
                self.set.family as u16,
                flags as u16,
                seq,
            );
            sys::nftnl_set_elems_nlmsg_build_payload_iter(hdr, self.iter.as_ptr())
        };
        self.more.set(ret > 0);
    }
}
