/*---------------------------------------------------------------------------*\
    deepkin: chemistry from the deepkin chemistry-step service for OpenFOAM
\*---------------------------------------------------------------------------*/

#include "deepkin.H"
#include "deepkin_client.h"
#include "localEulerDdtScheme.H"
#include "OSspecific.H"
#include "PstreamReduceOps.H"

#include <chrono>
#include <cmath>
#include <cstdlib>

// * * * * * * * * * * * * * * * Private Member Functions  * * * * * * * * * * //

template<class ChemistryModel>
Foam::string Foam::deepkin<ChemistryModel>::lastError() const
{
    char why[1024];
    deepkin_errmsg(client_, why, sizeof why);
    return string(why);
}


template<class ChemistryModel>
void Foam::deepkin<ChemistryModel>::open()
{
    const dictionary& dict = coeffsDict_;

    inProcess_ = dict.found("modelFile");
    // In-process the species are still matched by name without it; the service needs it
    const string sha
    (
        inProcess_
      ? dict.lookupOrDefault<string>("mechanismSha256", "")
      : dict.get<string>("mechanismSha256")
    );
    int status = DEEPKIN_OK;
    if (inProcess_)
    {
        if (dict.found("url") || dict.found("urls"))
        {
            FatalIOErrorInFunction(dict)
                << "deepkinCoeffs: modelFile (in-process) and url/urls (the service) are both"
                << " set; keep one" << exit(FatalIOError);
        }
        fileName file(dict.get<fileName>("modelFile"));
        file.expand();
        if (!file.isAbsolute())
        {
            file = this->time().globalPath()/file;
        }
        url_ = file;
        model_ = dict.lookupOrDefault<word>("model", file.nameLessExt());
        const label threads
        (
            dict.lookupOrDefault<label>("threads", 1)
        );
        if (threads < 0)
        {
            FatalIOErrorInFunction(dict)
                << "deepkinCoeffs.threads: must be >= 0 (0: libtorch's default), got "
                << threads << exit(FatalIOError);
        }
        if (!isFile(file))
        {
            FatalErrorInFunction
                << "deepkin: deepkinCoeffs.modelFile " << file.c_str()
                << " does not exist (write it with `deepkin export MODEL -o FILE`)"
                << exit(FatalError);
        }
        // "file://" keeps the C library from reading the path as a URL
        status = deepkin_open
        (
            ("file://" + file).c_str(), model_.c_str(), "", sha.c_str(), 60, &client_
        );
        if (status == DEEPKIN_OK && threads > 0)
        {
            status = deepkin_set_threads(client_, int(threads));
        }
    }
    else
    {
        List<string> urls;
        if (dict.found("urls"))
        {
            dict.readEntry("urls", urls);
        }
        else
        {
            urls.setSize(1);
            dict.readEntry("url", urls[0]);
        }
        if (urls.empty())
        {
            FatalIOErrorInFunction(dict)
                << "deepkinCoeffs.urls: the list is empty" << exit(FatalIOError);
        }
        url_ = urls[Pstream::myProcNo() % urls.size()];

        dict.readEntry("model", model_);
        string token(dict.lookupOrDefault<string>("token", ""));
        if (token.empty())
        {
            token = getEnv("DEEPKIN_TOKEN");
        }
        const scalar timeout(dict.lookupOrDefault<scalar>("timeout", 60));
        if (!(timeout > 0))
        {
            FatalIOErrorInFunction(dict)
                << "deepkinCoeffs.timeout: must be > 0 s, got " << timeout
                << exit(FatalIOError);
        }

        status = deepkin_open
        (
            url_.c_str(), model_.c_str(), token.c_str(), sha.c_str(), timeout,
            &client_
        );
    }
    if (status != DEEPKIN_OK)
    {
        FatalErrorInFunction
            << "deepkin: cannot use model '" << model_ << "' "
            << (inProcess_ ? "from file " : "at ") << url_.c_str()
            << " (deepkinCoeffs): " << lastError().c_str() << exit(FatalError);
    }
    modelDeltaT_ = deepkin_dt(client_);

    // Species by name: the model's columns for OpenFOAM's species
    const label nModel = deepkin_n_species(client_);
    wordList modelSpecies(nModel);
    HashTable<label> modelIndex;
    for (label k = 0; k < nModel; ++k)
    {
        char name[256];
        deepkin_species_name(client_, int(k), name, sizeof name);
        modelSpecies[k] = word(name);
        modelIndex.insert(modelSpecies[k], k);
    }

    const PtrList<volScalarField>& Y = this->Y_;
    column_.setSize(Y.size());
    wordList missing, extra;
    HashTable<label> caseIndex;
    forAll(Y, i)
    {
        caseIndex.insert(Y[i].name(), i);
        const auto iter = modelIndex.cfind(Y[i].name());
        if (iter.found())
        {
            column_[i] = *iter;
        }
        else
        {
            extra.append(Y[i].name());
            column_[i] = -1;
        }
    }
    for (const word& name : modelSpecies)
    {
        if (!caseIndex.found(name))
        {
            missing.append(name);
        }
    }
    if (!missing.empty() || !extra.empty())
    {
        auto names = [](const wordList& list)
        {
            std::string text;
            for (const word& name : list)
            {
                text += (text.empty() ? "" : " ") + name;
            }
            return text.empty() ? std::string("none") : text;
        };
        FatalErrorInFunction
            << "deepkin: the case's species differ from those of model '"
            << model_ << "': the case lacks " << names(missing).c_str()
            << " and has " << names(extra).c_str() << " that the model lacks"
            << " (write the case's thermo from the model with `deepkin"
            << " openfoam export " << model_ << " CASE`)"
            << exit(FatalError);
    }

    char modelSha[80];
    deepkin_mechanism_sha256(client_, modelSha, sizeof modelSha);
    if (inProcess_)
    {
        odeSolver();  // odeCoeffs read (and any error in it reported) now, not mid-run
    }
    Info<< "deepkin: model " << model_
        << (inProcess_ ? " in-process from " : " at ") << url_.c_str() << " ("
        << nModel << " species, dt " << modelDeltaT_ << " s, mechanism "
        << string(modelSha).substr(0, 12).c_str() << "...)"
        << (inProcess_ ? "; fallback cells by ode " : "")
        << (inProcess_ ? odeSolver().type().c_str() : "")
        << (Pstream::parRun() && !inProcess_ ? " [rank 0; urls spread over ranks]" : "")
        << endl;
}


template<class ChemistryModel>
Foam::ODESolver& Foam::deepkin<ChemistryModel>::odeSolver() const
{
    if (!odeSolver_.valid())
    {
        if (!this->found("odeCoeffs"))
        {
            FatalIOErrorInFunction(*this)
                << "deepkin: the in-process mode (deepkinCoeffs.modelFile) steps the cells"
                << " outside the model's domain with OpenFOAM's ODE chemistry: add odeCoeffs"
                << " { solver seulex; absTol 1e-12; relTol 1e-4; } to chemistryProperties"
                << exit(FatalIOError);
        }
        // The chemistry model itself is the ODE system, as for the `ode` chemistry solver
        odeSolver_.reset
        (
            ODESolver::New
            (
                const_cast<deepkin<ChemistryModel>&>(*this),
                this->subDict("odeCoeffs")
            ).ptr()
        );
        cTp_.setSize(this->nEqns());
    }
    return *odeSolver_;
}


template<class ChemistryModel>
void Foam::deepkin<ChemistryModel>::odeSolve
(
    scalarField& c,
    scalar& T,
    scalar& p,
    scalar& deltaT,
    scalar& subDeltaT
) const
{
    ODESolver& solver = odeSolver();
    const label nSpecie = this->nSpecie();
    for (label i = 0; i < nSpecie; ++i)
    {
        cTp_[i] = c[i];
    }
    cTp_[nSpecie] = T;
    cTp_[nSpecie + 1] = p;

    solver.solve(0, deltaT, cTp_, subDeltaT);

    for (label i = 0; i < nSpecie; ++i)
    {
        c[i] = max(0.0, cTp_[i]);
    }
    T = cTp_[nSpecie];
    p = cTp_[nSpecie + 1];
}


template<class ChemistryModel>
Foam::label Foam::deepkin<ChemistryModel>::solveFallback
(
    const scalarField& rho,
    const scalarField& T,
    const scalarField& p,
    const scalar deltaT
)
{
    // The loop of StandardChemistryModel::solve, for the flagged cells only
    const PtrList<volScalarField>& Y = this->Y_;
    const label nSpecie = Y.size();
    scalarField c(nSpecie), c0(nSpecie);
    label stepped = 0;
    forAll(rho, celli)
    {
        if (flags_[celli] != DEEPKIN_CELL_FALLBACK || T[celli] <= this->Treact_)
        {
            continue;
        }
        scalar Ti = T[celli];
        scalar pi = p[celli];
        for (label i = 0; i < nSpecie; ++i)
        {
            c[i] = rho[celli]*Y[i][celli]/this->specieThermo_[i].W();
            c0[i] = c[i];
        }
        scalar timeLeft = deltaT;
        while (timeLeft > SMALL)
        {
            scalar dt = timeLeft;
            odeSolve(c, Ti, pi, dt, this->deltaTChem_[celli]);
            timeLeft -= dt;
        }
        this->deltaTChem_[celli] =
            min(this->deltaTChem_[celli], this->deltaTChemMax_);
        for (label i = 0; i < nSpecie; ++i)
        {
            this->RR_[i][celli] =
                (c[i] - c0[i])*this->specieThermo_[i].W()/deltaT;
        }
        ++stepped;
    }
    return stepped;
}


template<class ChemistryModel>
Foam::label Foam::deepkin<ChemistryModel>::substeps(const scalar deltaT) const
{
    const scalar ratio = deltaT/modelDeltaT_;
    const label n = label(std::lround(ratio));
    if (n < 1 || std::abs(ratio - n) > 1e-6*ratio)
    {
        FatalErrorInFunction
            << "deepkin: deltaT = " << deltaT << " s is not a whole multiple of"
            << " the dt of model '" << model_ << "' (" << modelDeltaT_ << " s): set"
            << " deltaT in system/controlDict to k*" << modelDeltaT_
            << " s and adjustTimeStep off" << exit(FatalError);
    }
    return n;
}


template<class ChemistryModel>
void Foam::deepkin<ChemistryModel>::step
(
    const label n,
    const scalar deltaT
) const
{
    const label nSteps = substeps(deltaT);
    advanced_.resize(states_.size());
    const int status = deepkin_step
    (
        client_, long(n), states_.data(), nSteps*modelDeltaT_,
        advanced_.data()
    );
    if (status != DEEPKIN_OK)
    {
        FatalErrorInFunction
            << "deepkin: step of " << n << " cells on rank "
            << Pstream::myProcNo() << " failed: " << lastError().c_str()
            << exit(FatalError);
    }
    if (inProcess_)
    {
        flags_.resize(size_t(n));
        if (n > 0 && deepkin_last_flags(client_, long(n), flags_.data()) != DEEPKIN_OK)
        {
            FatalErrorInFunction
                << "deepkin: no cell flags after the step of " << n << " cells"
                << exit(FatalError);
        }
    }
}


// * * * * * * * * * * * * * * * * Constructors  * * * * * * * * * * * * * * //

template<class ChemistryModel>
Foam::deepkin<ChemistryModel>::deepkin
(
    typename ChemistryModel::reactionThermo& thermo
)
:
    chemistrySolver<ChemistryModel>(thermo),
    coeffsDict_(this->subDict("deepkinCoeffs")),
    inProcess_(false),
    client_(nullptr),
    modelDeltaT_(0)
{
    if (fv::localEulerDdt::enabled(this->mesh()))
    {
        FatalErrorInFunction
            << "deepkin: local time stepping (ddtSchemes localEuler) is not"
            << " supported: the deepkin step advances every cell by one deltaT"
            << exit(FatalError);
    }
    if (this->chemistry())
    {
        open();
    }
}


// * * * * * * * * * * * * * * * * Destructor  * * * * * * * * * * * * * * * //

template<class ChemistryModel>
Foam::deepkin<ChemistryModel>::~deepkin()
{
    deepkin_close(client_);
}


// * * * * * * * * * * * * * * * Member Functions  * * * * * * * * * * * * * //

template<class ChemistryModel>
Foam::scalar Foam::deepkin<ChemistryModel>::solve(const scalar deltaT)
{
    this->correct();  // basicChemistryModel: follows mesh changes

    if (!this->chemistry_)
    {
        return GREAT;
    }

    const auto start = std::chrono::steady_clock::now();

    tmp<volScalarField> trho(this->thermo().rho());
    const scalarField& rho = trho();
    const scalarField& T = this->thermo().T();
    const scalarField& p = this->thermo().p();
    const PtrList<volScalarField>& Y = this->Y_;
    const label nSpecie = Y.size();
    const label width = 2 + nSpecie;
    const label n = rho.size();

    // Gather: [T, p, Y in the model's order], Y clipped at 0 and normalised
    states_.resize(size_t(n)*width);
    for (label celli = 0; celli < n; ++celli)
    {
        double* row = states_.data() + size_t(celli)*width;
        row[0] = T[celli];
        row[1] = p[celli];
        double sum = 0;
        for (label i = 0; i < nSpecie; ++i)
        {
            const double Yi = max(Y[i][celli], 0.0);
            row[2 + column_[i]] = Yi;
            sum += Yi;
        }
        if (sum > 0)
        {
            for (label k = 0; k < nSpecie; ++k)
            {
                row[2 + k] /= sum;
            }
        }
    }

    step(n, deltaT);

    // Scatter: RR = rho (Y_new - Y_sent)/deltaT; in-process, the fallback cells came back as
    // sent, and OpenFOAM's ODE steps them below
    for (label celli = 0; celli < n; ++celli)
    {
        const double* sent = states_.data() + size_t(celli)*width;
        const double* got = advanced_.data() + size_t(celli)*width;
        const bool reacting = T[celli] > this->Treact_;
        if (inProcess_ && reacting && flags_[celli] == DEEPKIN_CELL_FALLBACK)
        {
            continue;
        }
        for (label i = 0; i < nSpecie; ++i)
        {
            const label k = 2 + column_[i];
            this->RR_[i][celli] =
                reacting ? rho[celli]*(got[k] - sent[k])/deltaT : 0.0;
        }
        this->deltaTChem_[celli] = min(deltaT, this->deltaTChemMax_);
    }
    long cells, frozen, fallback, substeps;
    deepkin_last_counts(client_, &cells, &frozen, &fallback, &substeps);

    double odeSeconds = 0;
    if (inProcess_ && fallback > 0)
    {
        const auto odeStart = std::chrono::steady_clock::now();
        solveFallback(rho, T, p, deltaT);
        odeSeconds = std::chrono::duration<double>
        (
            std::chrono::steady_clock::now() - odeStart
        ).count();
    }

    const double seconds = std::chrono::duration<double>
    (
        std::chrono::steady_clock::now() - start
    ).count();
    const label total = returnReduce(label(cells), sumOp<label>());
    const label totalFrozen = returnReduce(label(frozen), sumOp<label>());
    const label totalFallback = returnReduce(label(fallback), sumOp<label>());
    const scalar slowest = returnReduce(seconds, maxOp<scalar>());
    Info<< "deepkin: cells " << total << ", frozen " << totalFrozen
        << ", fallback " << totalFallback << ", substeps " << substeps
        << ", chemistry " << slowest << " s";
    if (inProcess_)
    {
        Info<< " (in-process; fallback cells by ode "
            << returnReduce(odeSeconds, maxOp<scalar>()) << " s)";
    }
    Info<< endl;

    return deltaT;
}


template<class ChemistryModel>
Foam::scalar Foam::deepkin<ChemistryModel>::solve(const scalarField& deltaT)
{
    FatalErrorInFunction
        << "deepkin: local time stepping (a deltaT per cell) is not supported:"
        << " the deepkin step advances every cell by one deltaT" << exit(FatalError);
    return GREAT;
}


template<class ChemistryModel>
void Foam::deepkin<ChemistryModel>::solve
(
    scalarField& c,
    scalar& T,
    scalar& p,
    scalar& deltaT,
    scalar& subDeltaT
) const
{
    const PtrList<volScalarField>& Y = this->Y_;
    const label nSpecie = Y.size();
    const label width = 2 + nSpecie;

    // c [kmol/m3] -> Y at the cell's (constant) density, and back
    scalar rho = 0;
    for (label i = 0; i < nSpecie; ++i)
    {
        rho += max(c[i], 0.0)*this->specieThermo_[i].W();
    }
    states_.assign(width, 0.0);
    states_[0] = T;
    states_[1] = p;
    for (label i = 0; i < nSpecie; ++i)
    {
        states_[2 + column_[i]] =
            rho > 0 ? max(c[i], 0.0)*this->specieThermo_[i].W()/rho : 0;
    }

    step(1, deltaT);

    if (inProcess_ && flags_[0] == DEEPKIN_CELL_FALLBACK)
    {
        odeSolve(c, T, p, deltaT, subDeltaT);
        return;
    }

    T = advanced_[0];
    for (label i = 0; i < nSpecie; ++i)
    {
        c[i] = rho*advanced_[2 + column_[i]]/this->specieThermo_[i].W();
    }
    subDeltaT = deltaT;
}


// ************************************************************************* //
