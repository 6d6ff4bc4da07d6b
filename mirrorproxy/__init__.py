"""p2p-mirror: the host daemon, a registry mirror whose blobs come through the swarm."""
