"""The only layer that talks to the kernel: raw syscalls (a small C extension), the mount API,
netlink (pyroute2), nftables and cgroupfs. Everything above calls these."""
