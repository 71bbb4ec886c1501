"""Exit codes of every ``newsbeam`` command and the one line a failure is shown as, defined once.

  0  done (a run committed its data; some sources may have failed: see the summary)
  1  the pipeline, the sink or the command failed; nothing of this run is visible
  2  bad configuration (unknown flag value, missing --output, bad feed list, missing credentials)
  3  nothing could be read: every source failed
  4  another run holds the lock (--state folder, or a compaction of the dataset)
"""
EXIT_OK = 0
EXIT_FAILED = 1
EXIT_CONFIG = 2
EXIT_NOTHING_READ = 3
EXIT_LOCKED = 4


def first_line(error: BaseException) -> str:
    """An error as the one line a command shows (DuckDB, pyiceberg and others add detail below it)."""
    return (str(error).strip().splitlines() or [type(error).__name__])[0]
