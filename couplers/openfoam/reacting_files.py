"""The system/ and constant/ files a laminar ``reactingFoam`` case needs besides its mesh, fields
and chemistry: controlDict (fixed deltaT), fvSchemes, fvSolution, decomposeParDict,
turbulenceProperties and combustionProperties. Shared by the 1D flames (:mod:`cases`) and the 2D
counterflow flame (:mod:`counterflow`); the schemes are those of OpenFOAM's laminar flame
tutorials, with the linear solvers converged fully (relTol 0) so that two chemistry models meet
the same flow solution."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from couplers.openfoam.foam import write_foam_file


@dataclass(frozen=True)
class ReactingSolverSettings:
    """What differs between our reactingFoam cases.

    ``non_orthogonal``: the Laplacian and surface-normal gradient correction (``corrected`` or
    ``orthogonal``); ``p_tolerance`` / ``transport_tolerance``: absolute tolerances of the
    pressure and of the U, h and Yi solvers; ``subdomains``: the (x, y, z) split for
    ``decomposePar`` (method simple)."""

    non_orthogonal: str = "corrected"
    p_tolerance: float = 1e-10
    transport_tolerance: float = 1e-12
    momentum_predictor: bool = True
    subdomains: tuple[int, int, int] = (1, 1, 1)


def write_reacting_files(out: Path, dt_s: float, steps: int, write_every: int,
                         settings: ReactingSolverSettings) -> None:
    """Write the case's controlDict (``steps`` fixed steps of ``dt_s`` seconds, fields every
    ``write_every`` steps), fvSchemes, fvSolution, decomposeParDict, turbulenceProperties and
    combustionProperties under ``out``."""
    write_foam_file(out / "system" / "controlDict", f"""application     reactingFoam;

startFrom       startTime;

startTime       0;

stopAt          endTime;

endTime         {steps * dt_s:.17g};

deltaT          {dt_s:.17g};

adjustTimeStep  off;

writeControl    timeStep;

writeInterval   {write_every};

purgeWrite      0;

writeFormat     ascii;

writePrecision  12;

writeCompression off;

timeFormat      general;

timePrecision   12;

runTimeModifiable no;
""")
    correction = settings.non_orthogonal
    write_foam_file(out / "system" / "fvSchemes", f"""ddtSchemes
{{
    default         Euler;
}}

gradSchemes
{{
    default         Gauss linear;
}}

divSchemes
{{
    default         none;
    div(phi,U)      Gauss limitedLinearV 1;
    div(phi,Yi_h)   Gauss limitedLinear 1;
    div(phi,K)      Gauss limitedLinear 1;
    div(phid,p)     Gauss limitedLinear 1;
    div(((rho*nuEff)*dev2(T(grad(U))))) Gauss linear;
}}

laplacianSchemes
{{
    default         Gauss linear {correction};
}}

interpolationSchemes
{{
    default         linear;
}}

snGradSchemes
{{
    default         {correction};
}}
""")
    predictor = "yes" if settings.momentum_predictor else "no"
    write_foam_file(out / "system" / "fvSolution", f"""solvers
{{
    "rho.*"
    {{
        solver          diagonal;
    }}

    p
    {{
        solver          PCG;
        preconditioner  DIC;
        tolerance       {settings.p_tolerance:g};
        relTol          0;
    }}

    pFinal
    {{
        $p;
    }}

    "(U|h|Yi)"
    {{
        solver          PBiCGStab;
        preconditioner  DILU;
        tolerance       {settings.transport_tolerance:g};
        relTol          0;
    }}

    "(U|h|Yi)Final"
    {{
        $U;
    }}
}}

PIMPLE
{{
    momentumPredictor {predictor};
    nOuterCorrectors  1;
    nCorrectors       2;
    nNonOrthogonalCorrectors 0;
}}
""")
    nx, ny, nz = settings.subdomains
    write_foam_file(out / "system" / "decomposeParDict", f"""numberOfSubdomains {nx * ny * nz};

method          simple;

coeffs
{{
    n               ({nx} {ny} {nz});
}}
""")
    write_foam_file(out / "constant" / "turbulenceProperties", "simulationType  laminar;\n")
    write_foam_file(out / "constant" / "combustionProperties", """combustionModel laminar;

active          true;

laminarCoeffs
{
}
""")
