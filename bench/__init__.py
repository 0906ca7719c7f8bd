"""Benchmarks of luci-app-wormhole (`make bench`, or `python3 -m bench.run`).

Not tests: nothing here asserts a time. Each module measures one cost users feel
against a baseline taken in the same run, and returns rows for one table:

  apply_latency  1. how long a change takes to be live in the kernel
  connections    2. whether open connections survive applies
  conn_rate      3. whether new connections slow down as entries grow; bulk throughput
  plugin_cost    4. how sluggish the LuCI page is (the rpcd plugin)
  footprint      5. package sizes and generated rules per entry

docs/PERFORMANCE.md holds the latest table, the machine and how to read it.
"""
