"""Oracles: implementations that only the tests use, kept to check the library against.

- :mod:`_oracles.dense_assembly`: the candidate assembly in the dense layout (``logit_bias`` and
  ``targets`` f32[B, C]) — the library builds only the sparse layout
  (:func:`xmr.kernels.assembly.assemble_candidates_sparse`), which must densify to it bit for bit;
- :mod:`_oracles.correction`: the sampled-logit correction with copies of sampled ids kept as
  separate columns (TensorFlow's convention) — the library collapses duplicates into one column,
  which must give the same loss and gradient.

Each has a Numba kernel and a vectorised numpy reference (``_ref``); the tests in
``tests/kernels/`` hold them equal, so an oracle cannot drift either.
"""
