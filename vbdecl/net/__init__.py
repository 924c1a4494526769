"""Networking logic that needs no kernel: address management (ipam) and the
shared network state (bridge users, address leases, ip_forward users)."""
