"""The peak resident memory of this process, in MiB.

Read from /proc (VmHWM), which starts afresh with the process: ``getrusage``'s ru_maxrss
may carry the figure of the parent it was forked from (a big pytest process).
"""

import re
from pathlib import Path


def peak_rss_mib() -> float:
    status = Path("/proc/self/status").read_text()
    match = re.search(r"^VmHWM:\s+(\d+) kB", status, re.M)
    return int(match.group(1)) / 1024 if match else 0.0
