//! Kernel uapi constants (`linux/netfilter/nf_tables.h`, `linux/netfilter.h`) as the `u32`
//! attribute values libnftnl takes. Kept here because not all of them exist in `libc`.

pub(crate) const NFT_REG_VERDICT: u32 = 0;
/// First 32-bit data register; `NFT_REG32_00 + n` is the n-th 4-byte slot.
pub(crate) const NFT_REG32_00: u32 = 8;

pub(crate) const NFT_PAYLOAD_NETWORK_HEADER: u32 = 1;
pub(crate) const NFT_PAYLOAD_TRANSPORT_HEADER: u32 = 2;
pub(crate) const NFT_PAYLOAD_CSUM_NONE: u32 = 0;
pub(crate) const NFT_PAYLOAD_CSUM_INET: u32 = 1;
pub(crate) const NFT_PAYLOAD_L4CSUM_PSEUDOHDR: u32 = 1;

pub(crate) const NFT_CMP_EQ: u32 = 0;
pub(crate) const NFT_CMP_NEQ: u32 = 1;
pub(crate) const NFT_LOOKUP_F_INV: u32 = 1;

pub(crate) const NFT_META_MARK: u32 = 3;
pub(crate) const NFT_META_NFPROTO: u32 = 15;
pub(crate) const NFT_META_L4PROTO: u32 = 16;

pub(crate) const NF_ACCEPT: i32 = 1;
pub(crate) const NFT_JUMP: i32 = -3;

pub(crate) const NFT_SET_INTERVAL: u32 = 0x4;
pub(crate) const NFT_SET_MAP: u32 = 0x8;
pub(crate) const NFT_SET_ELEM_INTERVAL_END: u32 = 0x1;

/// Queue flags, shared by the native expression and the xtables target (v3).
pub(crate) const QUEUE_FLAG_BYPASS: u16 = 0x1;
pub(crate) const QUEUE_FLAG_CPU_FANOUT: u16 = 0x2;

pub(crate) const NFPROTO_IPV4: u8 = 2;
pub(crate) const NFPROTO_IPV6: u8 = 10;
pub(crate) const IPPROTO_TCP: u8 = 6;

/// nftables userspace data types (`enum datatypes` in nftables), used for set key/data types
/// so that `nft list` prints elements readably. The kernel ignores them.
pub(crate) const TYPE_IPADDR: u32 = 7;
pub(crate) const TYPE_IP6ADDR: u32 = 8;
pub(crate) const TYPE_INET_SERVICE: u32 = 13;
const TYPE_BITS: u32 = 6;

/// Type id of a concatenation, as nftables encodes it.
pub(crate) fn concat_type(types: &[u32]) -> u32 {
    types.iter().fold(0, |acc, t| (acc << TYPE_BITS) | t)
}
