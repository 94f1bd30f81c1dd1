"""Run in a subprocess: `lora-pipeline report JOB`, then print the peak RSS and the time."""
import json
import sys
import time

from peak_memory import peak_rss_mib

from pipeline.cli import main

start = time.monotonic()
code = main(["--config", sys.argv[2], "report", sys.argv[1]])
print(json.dumps({"exit": code, "seconds": round(time.monotonic() - start, 1),
                  "rss_peak_mib": round(peak_rss_mib())}))
