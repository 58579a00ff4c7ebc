//! Checkpoint hook for rackd (client library and C ABI): being built, see issue 9.
