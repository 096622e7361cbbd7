"""`make bench`: throughput, latency and memory of erp-relay on this machine, against bare aiohttp baselines.

Entry point: `python -m bench.run` (see `bench/run.py`). Everything talks to 127.0.0.1 only, every loop is
bounded in count and time, and each measured process runs on its own core where the machine has two.
"""
