"""Reliability suite: faults, crashes, hostile input, secrets and resource bounds."""
