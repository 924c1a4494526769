"""The only layer that talks to the kernel: ctypes syscalls, the mount API,
netlink (pyroute2), nftables and cgroupfs. Everything above calls these."""
