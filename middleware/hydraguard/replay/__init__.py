"""``hydraguard replay``: run logged traffic through a policy's own decision code, offline."""
