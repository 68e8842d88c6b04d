"""Randomized fault runs (``make chaos``): the chain ingest -> train -> precompute -> publish run through the
real job launcher with seeded faults injected at random points, then checked against invariants.

Modules: ``proxy`` (HTTP fault proxy in front of the object store), ``world`` (the servers and the
generated data one fault run works on), ``worker`` (the process that runs task attempts the way an
Airflow worker does), ``faults`` (the seeded plan), ``invariants`` (the checks), ``harness`` (the loop and
the report). See docs/chaos.md.
"""
