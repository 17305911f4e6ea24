"""Dataset readers and the synthetic dataset.

`obman` and `dexycb` read the real datasets in their on-disk layouts and turn every sample into
a task for `gsdf_data.prepare.prepare_pairs` (they are readers only: SDF sampling and shards
happen there). `synth` generates the project's own ObMan-style hand-object dataset from the
hand model and the objects of `objects`.
"""
