//! Reading the kernel's TCP sockets through `NETLINK_SOCK_DIAG` (being written).
