"""Helpers of the tests, also used by the benchmarks (which run from a checkout and put its root on
``sys.path``); they are not part of the installed packages.

- ``tests.helpers.live_server``: ``LiveServer`` (``deepkin serve`` in a subprocess on 127.0.0.1,
  ready when it answers) and ``free_port``.
- ``tests.helpers.models``: ``write_test_model``, a small random-weight h2o2 model file (on top of
  ``kinetics.synthetic.write_random_model``).
- ``tests.helpers.load``: ``run_load``, a bounded load generator for the binary step endpoint, and
  ``uniform_states``.
- ``tests.helpers.openfoam``: the installed OpenFOAM (or a skip, or a failure under
  ``DEEPKIN_REQUIRE_OPENFOAM=1``), the built chemistry library, cases written by the real CLI.
- ``tests.helpers.hostile``: ``hostile_cases`` (requests the service must refuse, with the status
  and message each must get), ``gzip_bomb``, ``stall`` (a connection that stops sending),
  ``memory_of`` (resident and peak memory of the server process), and the header flood
  (``HeaderFlood``, ``MemoryWatch``, ``steps_beside_flood``).
- ``tests.helpers.toolchain``: ``need`` (a compiler on PATH, or a skip/failure) and ``build``
  (one compiler call), for the tests that compile the C client library.
"""
