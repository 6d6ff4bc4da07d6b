"""Command-line entry points: `p2p-fetch` and the servers, and the single-machine composition."""
