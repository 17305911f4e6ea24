"""What several test files share, imported plainly (`tests/` is on sys.path through
pytest's `pythonpath`): dataset fixtures written in the real on-disk layouts, the MANO
stand-in, the brute-force reference of the evaluation protocol, small shard sets and the
trainer's stand-in network."""
