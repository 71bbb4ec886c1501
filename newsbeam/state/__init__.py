"""State of scheduled incremental runs (``--state``): the lock, the ids each
committed run wrote, and feeds' HTTP caches."""
