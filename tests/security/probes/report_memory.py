"""Run in a subprocess: `lora-pipeline report JOB`, then print the peak RSS and the time."""
import json
import resource
import sys
import time

from pipeline.cli import main

start = time.monotonic()
code = main(["--config", sys.argv[2], "report", sys.argv[1]])
print(json.dumps({"exit": code, "seconds": round(time.monotonic() - start, 1),
                  "rss_peak_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)}))
