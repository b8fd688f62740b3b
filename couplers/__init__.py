"""Couplers: the C client library of the service's binary wire (``couplers/c``, with a Fortran
module in ``couplers/fortran``) and the CFD codes that use it (``couplers/openfoam``)."""
