"""Helpers of the tests only (they are not part of the installed packages). What the benchmarks
share with the tests lives in the packages: a live server (``service.live_server``), the load
generator (``service.load_generator``), the header flood (``service.header_flood``), random-weight
model files (``kinetics.model.synthetic``) and OpenFOAM flame runs (``couplers.openfoam.flame_runs``).

- ``SHARED_TOKEN``: the bearer token of the tests' shared h2 server (``conftest.h2_server``).
- ``tests.helpers.models``: ``write_test_model``, a small random-weight h2o2 model file (on top of
  ``kinetics.model.synthetic.write_random_model``), and ``rewrite_model_file`` (a model file edited
  by hand, its checksums remade or not).
- ``tests.helpers.openfoam``: the installed OpenFOAM (or a skip, or a failure under
  ``DEEPKIN_REQUIRE_OPENFOAM=1``), the built chemistry library, cases written by the real CLI.
- ``tests.helpers.flame_runs``: the OpenFOAM flame runs with the tests' token.
- ``tests.helpers.hostile``: ``hostile_cases`` (requests the service must refuse, with the status
  and message each must get), ``gzip_bomb`` and ``stall`` (a connection that stops sending).
- ``tests.helpers.toolchain``: ``need`` (a compiler on PATH, or a skip/failure) and ``build``
  (one compiler call), for the tests that compile the C client library.
"""

SHARED_TOKEN = "example-token"
