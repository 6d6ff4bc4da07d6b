"""Types shared by the servers and the CLI: the values that cross an HTTP boundary.

This package imports nothing from the other packages of p2p-fetch, so every
one of them may import it.
"""
