"""Peer selection: the peers an announce returns, and their order.

The policy, applied to the swarm minus the requesting peer:

1. Classes. A leecher that has little data (less than a quarter of the
   content) gets the seeders first and then the other leechers, because it
   has almost nothing to trade and a seeder has every piece it lacks. A
   seeder gets only leechers, because two seeders have nothing to send each
   other. Any other leecher gets seeders and leechers as one class.
2. Location. Within a class, peers whose `location` label shares a longer
   prefix with the requester's come first: `dc1/rack7` prefers `dc1/rack7`,
   then the rest of `dc1`, then other datacenters. Prefixes are compared by
   `/`-separated components, so `dc1` and `dc10` share nothing.
3. Chance. Peers with the same class and the same prefix length come in a
   random order, so every announce spreads the load over different peers.

The list stops at `numwant` peers.
"""

from __future__ import annotations

import random

from tracker.swarms import Peer, Swarm

# A leecher with less than this fraction of the content is served seeders first.
LITTLE_DATA_FRACTION = 0.25


def select_peers(swarm: Swarm, requester: Peer, numwant: int, rng: random.Random) -> list[Peer]:
    """Return up to `numwant` peers of `swarm` for `requester`, in the order of the policy above."""
    if numwant <= 0:
        return []

    if requester.is_seeder:
        classes: list[tuple[bool, ...]] = [(False,)]
    elif has_little_data(requester, swarm.size):
        classes = [(True,), (False,)]
    else:
        classes = [(True, False)]

    selected: list[Peer] = []
    for seeder_states in classes:
        need = numwant - len(selected)
        if need <= 0:
            break
        selected.extend(_select_class(swarm, requester, seeder_states, need, rng))
    return selected


def has_little_data(peer: Peer, size: int) -> bool:
    """Tell whether a leecher has less than LITTLE_DATA_FRACTION of a `size`-byte content."""
    if peer.is_seeder:
        return False
    if size <= 0:
        return peer.downloaded == 0
    return size - peer.left < size * LITTLE_DATA_FRACTION


def shared_prefix_length(first: tuple[str, ...], second: tuple[str, ...]) -> int:
    """Count the leading location components that two locations have in common."""
    length = 0
    for left, right in zip(first, second):
        if left != right:
            break
        length += 1
    return length


def _select_class(
    swarm: Swarm, requester: Peer, seeder_states: tuple[bool, ...], need: int, rng: random.Random
) -> list[Peer]:
    # Bucket the groups (one per seeder state and location) by how much of
    # the requester's location they share. A swarm has far fewer locations
    # than peers, so this loop stays short.
    buckets: dict[int, list[dict[bytes, Peer]]] = {}
    for (is_seeder, location), group in swarm.groups.items():
        if is_seeder in seeder_states:
            prefix = shared_prefix_length(location, requester.location)
            buckets.setdefault(prefix, []).append(group)

    selected: list[Peer] = []
    for prefix in sorted(buckets, reverse=True):
        pool = [peer for group in buckets[prefix] for peer in group.values() if peer is not requester]
        need_here = need - len(selected)
        if len(pool) > need_here:
            selected.extend(rng.sample(pool, need_here))
            break
        rng.shuffle(pool)
        selected.extend(pool)
    return selected
