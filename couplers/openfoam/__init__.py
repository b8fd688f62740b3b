"""deepkin chemistry for OpenFOAM (ESI v1912, as Debian ships it).

- ``src/``: the C++ chemistry solver ``deepkin`` (one request per rank and time step) and the
  ``deepkinChemistryTime`` utility that times a case's chemistry; built by :mod:`.build`.
- :mod:`.mechanism`: a model's embedded mechanism as OpenFOAM ``reactions`` and thermo files.
- :mod:`.export`: rewrites a case's thermo, reactions, chemistry and ``libs`` entries.
- :mod:`.cases`: ready-to-run chemFoam and 1D premixed-flame (reactingFoam) cases.
- :mod:`.foam`: running OpenFOAM applications, writing and reading its dictionaries and fields.
- :mod:`.results`: ignition delays and flame speeds from a run's output.
- :mod:`.states`: every cell's state at each written time, for the ``solver_states`` source.
- :mod:`.flame_runs`: a flame case run end to end (deepkin or ODE chemistry, cached by its
  parameters) and its figures: flame speed, peak and burnt-gas T, heat release by T band.
"""
