"""The runtime: the decision loop and everything that touches the world (shared memory,
clock, control socket, metrics, systemd, ArqonBus)."""
