! deepkin_step.f90 - a deepkin chemistry step from Fortran through the C client library: from the
! service, or in-process from a model file of `deepkin export` (same handle, same calls).
!
! The service (libcurl only):
!   cc -O2 -c -Icouplers/c couplers/c/deepkin_client.c
!   gfortran -O2 -o deepkin_step_f couplers/fortran/deepkin_client.f90 examples/fortran/deepkin_step.f90 \
!       deepkin_client.o -lcurl
!   ./deepkin_step_f http://127.0.0.1:8000 h2-air [TOKEN]
!
! In-process (libtorch of the torch wheel; TORCH=$(python -c "import torch, os;
! print(os.path.dirname(torch.__file__))"), ABI=$(python -c "import torch;
! print(int(torch._C._GLIBCXX_USE_CXX11_ABI))")):
!   c++ -std=c++20 -O2 -D_GLIBCXX_USE_CXX11_ABI=$ABI -I$TORCH/include \
!       -I$TORCH/include/torch/csrc/api/include -c couplers/c/deepkin_local.cpp
!   cc -O2 -DDEEPKIN_WITH_LIBTORCH -Icouplers/c -c couplers/c/deepkin_client.c
!   gfortran -O2 -o deepkin_step_f couplers/fortran/deepkin_client.f90 examples/fortran/deepkin_step.f90 \
!       deepkin_client.o deepkin_local.o -L$TORCH/lib -Wl,-rpath,$TORCH/lib -Wl,--no-as-needed \
!       -ltorch -ltorch_cpu -lc10 -lstdc++ -lcurl
!   deepkin export h2-air -o h2-air.pt
!   ./deepkin_step_f h2-air.pt h2-air
!
! Opens the model, advances 4 stoichiometric hydrogen/air cells at 1 atm (1000 to 1600 K) by one
! model step and prints their temperatures, water mass fractions and the counts; in-process also
! each cell's flag: 0 stepped by the networks, 1 frozen, 2 left unstepped for the caller's own
! chemistry (the service steps those with Cantera). Exit status 0 when every check passed.
program deepkin_step_f
    use, intrinsic :: iso_c_binding, only: c_ptr, c_int, c_long, c_double, c_signed_char, c_null_char
    use deepkin_client
    implicit none
    integer, parameter :: n_cells = 4
    character(len=512) :: url, model, token
    character(len=1024) :: why
    character(len=64) :: name
    type(c_ptr) :: client
    integer(c_int) :: status, ns, k, i_h2, i_o2, i_n2, i_h2o
    integer(c_long) :: cells, frozen, fallback, substeps
    real(c_double), allocatable :: states(:, :), advanced(:, :)
    integer(c_signed_char) :: flags(n_cells)
    character(len=*), parameter :: meaning(0:2) = [character(len=26) :: 'stepped by the networks', &
        'frozen: as given', 'not stepped: yours to step']
    logical :: have_flags
    integer :: c, failures

    if (command_argument_count() < 2) then
        write (*, '(a)') 'usage: deepkin_step_f URL|MODEL_FILE MODEL [TOKEN]'
        stop 2
    end if
    call get_command_argument(1, url)
    call get_command_argument(2, model)
    token = ''
    if (command_argument_count() > 2) call get_command_argument(3, token)

    status = deepkin_open(trim(url)//c_null_char, trim(model)//c_null_char, trim(token)//c_null_char, &
                          c_null_char, 30.0_c_double, client)
    if (status /= DEEPKIN_OK) call fail('open')

    ns = deepkin_n_species(client)
    i_h2 = -1; i_o2 = -1; i_n2 = -1; i_h2o = -1
    do k = 0, ns - 1
        status = deepkin_species_name(client, k, name, len(name, kind=c_int))
        select case (name(1:index(name, c_null_char) - 1))
        case ('H2'); i_h2 = k
        case ('O2'); i_o2 = k
        case ('N2'); i_n2 = k
        case ('H2O'); i_h2o = k
        end select
    end do
    if (min(i_h2, i_o2, i_n2, i_h2o) < 0) then
        write (*, '(a)') 'error: the model has no H2, O2, N2 or H2O'
        stop 1
    end if
    write (*, '(a,i0,a,es9.2,a)') 'species ', ns, ', dt ', deepkin_dt(client), ' s'

    ! states(:, c) is cell c: T (K), P (Pa), then the mass fractions (row index 3 + 0-based k)
    allocate (states(2 + ns, n_cells), advanced(2 + ns, n_cells))
    states = 0
    do c = 1, n_cells
        states(1, c) = 1000.0_c_double + 200.0_c_double*(c - 1)
        states(2, c) = 101325.0_c_double
        states(3 + i_h2, c) = 0.0285_c_double
        states(3 + i_o2, c) = 0.2264_c_double
        states(3 + i_n2, c) = 0.7451_c_double
    end do
    status = deepkin_step(client, int(n_cells, c_long), states, 0.0_c_double, advanced)
    if (status /= DEEPKIN_OK) call fail('step')

    ! A model file's step says which cells it left as given; the service steps every cell itself
    ! (DEEPKIN_ERROR_ARGUMENT here).
    have_flags = deepkin_last_flags(client, int(n_cells, c_long), flags) == DEEPKIN_OK

    failures = 0
    do c = 1, n_cells
        write (*, '(a,i0,a,f10.3,a,f18.12,a,es22.15,a,f16.12)', advance='no') 'cell ', c - 1, ': T ', &
            states(1, c), ' -> ', advanced(1, c), ' K, Y_H2O ', advanced(3 + i_h2o, c), ', sum Y ', &
            sum(advanced(3:, c))
        if (have_flags) then
            write (*, '(a,i0,a)') ', flag ', flags(c), ' ('//trim(meaning(flags(c)))//')'
        else
            write (*, '(a)') ''
        end if
        if (abs(sum(advanced(3:, c)) - 1.0_c_double) > 1e-6_c_double) failures = failures + 1
    end do
    call deepkin_last_counts(client, cells, frozen, fallback, substeps)
    write (*, '(a,i0,a,i0,a,i0,a,i0)') 'cells ', cells, ', frozen ', frozen, ', fallback ', fallback, &
        ', substeps ', substeps
    if (cells /= n_cells) failures = failures + 1
    if (have_flags) then
        if (count(flags == DEEPKIN_CELL_FROZEN) /= frozen) failures = failures + 1
        if (count(flags == DEEPKIN_CELL_FALLBACK) /= fallback) failures = failures + 1
    end if
    call deepkin_close(client)
    if (failures > 0) then
        write (*, '(a,i0,a)') 'FAILED (', failures, ')'
        stop 1
    end if
    write (*, '(a)') 'ok'

contains

    subroutine fail(what)
        character(len=*), intent(in) :: what
        integer(c_int) :: n
        n = deepkin_errmsg(client, why, len(why, kind=c_int))
        write (*, '(a)') 'error: '//what//': '//why(1:index(why, c_null_char) - 1)
        call deepkin_close(client)
        stop 1
    end subroutine fail
end program deepkin_step_f
