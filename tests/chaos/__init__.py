"""Seeded fault injection over a Redis site of three relay processes and a federated relay
(issue 13 item 9; docs/reliability.md, "Faults at random"). One engine for the suite's
60-second seed (test_chaos.py) and the long runs of ``scripts/chaos``: ``cluster`` starts and
breaks the parts, ``workload`` drives the agents, ``faults`` picks the faults from the seed,
``invariants`` checks that nothing acknowledged was lost, ``engine`` ties them together."""
