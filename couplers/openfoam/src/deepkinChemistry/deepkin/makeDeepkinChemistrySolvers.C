/*---------------------------------------------------------------------------*\
    deepkin: chemistry from the deepkin chemistry-step service for OpenFOAM

    Registers `chemistryType { solver deepkin; method standard; }` for the thermo types of
    gas-phase reacting cases (janaf thermo, Sutherland transport, perfect gas; sensible
    enthalpy or internal energy; psi- and rho-based thermo), the same table entries that
    OpenFOAM's own `ode` solver adds for them.
\*---------------------------------------------------------------------------*/

#include "deepkin.H"

#include "StandardChemistryModel.H"
#include "psiReactionThermo.H"
#include "rhoReactionThermo.H"
#include "thermoPhysicsTypes.H"

// * * * * * * * * * * * * * * * * * * * * * * * * * * * * * * * * * * * * * //

#define makeDeepkinChemistrySolver(Comp, Thermo)                               \
                                                                               \
    typedef deepkin<StandardChemistryModel<Comp, Thermo>>                      \
        deepkin##Comp##Thermo;                                                 \
                                                                               \
    defineTemplateTypeNameAndDebugWithName                                     \
    (                                                                          \
        deepkin##Comp##Thermo,                                                 \
        ("deepkin<" + word(StandardChemistryModel<Comp, Thermo>::typeName_())  \
        + "<" + word(Comp::typeName_()) + "," + Thermo::typeName() + ">>")     \
        .c_str(),                                                              \
        0                                                                      \
    );                                                                         \
                                                                               \
    BasicChemistryModel<Comp>::                                                \
        addthermoConstructorToTable<deepkin##Comp##Thermo>                     \
        adddeepkin##Comp##Thermo##thermoConstructorToBasicChemistryModel##Comp \
##Table_;


namespace Foam
{
    makeDeepkinChemistrySolver(psiReactionThermo, gasHThermoPhysics);
    makeDeepkinChemistrySolver(psiReactionThermo, gasEThermoPhysics);
    makeDeepkinChemistrySolver(rhoReactionThermo, gasHThermoPhysics);
    makeDeepkinChemistrySolver(rhoReactionThermo, gasEThermoPhysics);
}

// ************************************************************************* //
