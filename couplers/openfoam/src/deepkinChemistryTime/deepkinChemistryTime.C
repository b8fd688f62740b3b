/*---------------------------------------------------------------------------*\
    deepkin: chemistry from the deepkin chemistry-step service for OpenFOAM
-------------------------------------------------------------------------------
Application
    deepkinChemistryTime

Description
    Wall time of one chemistry step of a case: reads the mesh and the fields of one time,
    builds the chemistry that constant/chemistryProperties selects (deepkin, ode, ...) and
    times chemistry.solve(deltaT) on those fields, which is what a solver pays per time step
    (solve computes the reaction rates; it does not change the fields, so every call sees the
    same cells). -warmup untimed calls first (default 1; a deepkin model file wants 2, since
    libtorch optimises its graph on the second call, which takes ~0.3 s), then -repeat timed
    calls; in parallel every rank starts together and the slowest rank's time is reported.

Usage
    deepkinChemistryTime -case CASE [-time 0.001 | -latestTime] [-deltaT 1e-6] [-repeat 5]
        [-warmup 1] [-parallel]

    Prints, last line:
        chemistry time: cells N, ranks R, deltaT D s, repeat K, mean M s, min m s per step

\*---------------------------------------------------------------------------*/

#include "fvCFD.H"
#include "psiReactionThermo.H"
#include "BasicChemistryModel.H"
#include "timeSelector.H"

#include <chrono>

// * * * * * * * * * * * * * * * * * * * * * * * * * * * * * * * * * * * * * //

int main(int argc, char *argv[])
{
    argList::addNote
    (
        "Wall time of one chemistry step (chemistry.solve(deltaT)) on the"
        " fields of one time of a case"
    );
    timeSelector::addOptions(true, false);
    argList::addOption("deltaT", "s", "Chemistry step (default: controlDict deltaT)");
    argList::addOption("repeat", "N", "Timed calls after the untimed ones (default 5)");
    argList::addOption("warmup", "N", "Untimed calls first (default 1)");

    #include "setRootCase.H"
    #include "createTime.H"

    instantList timeDirs = timeSelector::select0(runTime, args);
    runTime.setTime(timeDirs.last(), timeDirs.size() - 1);

    #include "createMesh.H"

    const scalar deltaT =
        args.lookupOrDefault<scalar>("deltaT", runTime.deltaTValue());
    const label repeat = args.lookupOrDefault<label>("repeat", 5);
    const label warmup = args.lookupOrDefault<label>("warmup", 1);
    if (repeat < 1 || warmup < 0 || !(deltaT > 0))
    {
        FatalErrorInFunction
            << "deepkinChemistryTime: -repeat must be >= 1, -warmup >= 0 and -deltaT > 0"
            << exit(FatalError);
    }

    Info<< "Reading thermophysical properties at time " << runTime.timeName()
        << nl << endl;
    autoPtr<psiReactionThermo> pThermo(psiReactionThermo::New(mesh));
    psiReactionThermo& thermo = pThermo();

    autoPtr<BasicChemistryModel<psiReactionThermo>> pChemistry
    (
        BasicChemistryModel<psiReactionThermo>::New(thermo)
    );
    BasicChemistryModel<psiReactionThermo>& chemistry = pChemistry();

    for (label i = 0; i < warmup; ++i)
    {
        chemistry.solve(deltaT);
    }

    scalar total = 0;
    scalar fastest = GREAT;
    for (label i = 0; i < repeat; ++i)
    {
        if (Pstream::parRun())
        {
            // Every rank starts together: the step takes as long as the slowest
            label token = 0;
            reduce(token, sumOp<label>());
        }
        const auto start = std::chrono::steady_clock::now();
        chemistry.solve(deltaT);
        const scalar seconds = returnReduce
        (
            std::chrono::duration<double>
            (
                std::chrono::steady_clock::now() - start
            ).count(),
            maxOp<scalar>()
        );
        total += seconds;
        fastest = min(fastest, seconds);
    }

    const label nCells = returnReduce(mesh.nCells(), sumOp<label>());
    Info<< "chemistry time: cells " << nCells
        << ", ranks " << Pstream::nProcs()
        << ", deltaT " << deltaT << " s, repeat " << repeat
        << ", mean " << total/repeat << " s, min " << fastest
        << " s per step" << endl;

    return 0;
}


// ************************************************************************* //
