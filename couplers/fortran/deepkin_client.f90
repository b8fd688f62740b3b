! deepkin_client.f90 - Fortran interfaces (iso_c_binding) to couplers/c/deepkin_client.h.
!
! The C functions are called directly, with no wrapper layer. Strings go in NUL-terminated
! (trim(s) // c_null_char; "" // c_null_char for "none") and come back in character buffers
! (NUL-terminated: use the text before index(buf, c_null_char)). A state array is
! states(2 + ns, n_cells): column c is cell c, [T (K), P (Pa), Y_1 .. Y_ns].
!
!   gfortran -c couplers/fortran/deepkin_client.f90
!   cc -c -Icouplers/c couplers/c/deepkin_client.c
!   gfortran my_code.f90 deepkin_client.o -lcurl
!
! In-process (no server): deepkin_open takes the path of a model file written by
! `deepkin export MODEL -o FILE` in place of the URL, with the C library built with
! -DDEEPKIN_WITH_LIBTORCH and linked with deepkin_local.cpp against libtorch (the lines in
! couplers/c/deepkin_local.cpp; link with gfortran ... -lstdc++). The same handle and calls step
! the cells; deepkin_last_flags then says which cells it left as given (DEEPKIN_CELL_FROZEN) and
! which the caller must step with its own chemistry (DEEPKIN_CELL_FALLBACK).
module deepkin_client
    use, intrinsic :: iso_c_binding, only: c_int, c_long, c_double, c_char, c_signed_char, c_ptr, &
        c_null_char
    implicit none
    private
    public :: c_null_char

    integer(c_int), parameter, public :: DEEPKIN_OK = 0, DEEPKIN_ERROR_ARGUMENT = 1, &
        DEEPKIN_ERROR_MEMORY = 2, DEEPKIN_ERROR_CONNECT = 3, DEEPKIN_ERROR_TIMEOUT = 4, &
        DEEPKIN_ERROR_BUSY = 5, DEEPKIN_ERROR_AUTH = 6, DEEPKIN_ERROR_NOT_FOUND = 7, &
        DEEPKIN_ERROR_MECHANISM = 8, DEEPKIN_ERROR_INPUT = 9, DEEPKIN_ERROR_SERVER = 10, &
        DEEPKIN_ERROR_PROTOCOL = 11, DEEPKIN_ERROR_MODEL = 12

    ! the flags of deepkin_last_flags (enum deepkin_cell_flag)
    integer(c_signed_char), parameter, public :: DEEPKIN_CELL_STEPPED = 0, DEEPKIN_CELL_FROZEN = 1, &
        DEEPKIN_CELL_FALLBACK = 2

    public :: deepkin_open, deepkin_n_species, deepkin_dt, deepkin_species_name, &
        deepkin_mechanism_sha256, deepkin_step, deepkin_last_counts, deepkin_last_flags, &
        deepkin_set_threads, deepkin_http_status, deepkin_errmsg, deepkin_close

    interface
        integer(c_int) function deepkin_open(url, model, token, mechanism_sha256, timeout_s, client) &
                bind(c, name="deepkin_open")
            import :: c_int, c_char, c_double, c_ptr
            character(kind=c_char), dimension(*), intent(in) :: url, model, token, mechanism_sha256
            real(c_double), value :: timeout_s
            type(c_ptr), intent(out) :: client
        end function

        integer(c_int) function deepkin_n_species(client) bind(c, name="deepkin_n_species")
            import :: c_int, c_ptr
            type(c_ptr), value :: client
        end function

        real(c_double) function deepkin_dt(client) bind(c, name="deepkin_dt")
            import :: c_double, c_ptr
            type(c_ptr), value :: client
        end function

        ! k is 0-based, as in C
        integer(c_int) function deepkin_species_name(client, k, buf, size) &
                bind(c, name="deepkin_species_name")
            import :: c_int, c_char, c_ptr
            type(c_ptr), value :: client
            integer(c_int), value :: k, size
            character(kind=c_char), dimension(*), intent(out) :: buf
        end function

        integer(c_int) function deepkin_mechanism_sha256(client, buf, size) &
                bind(c, name="deepkin_mechanism_sha256")
            import :: c_int, c_char, c_ptr
            type(c_ptr), value :: client
            integer(c_int), value :: size
            character(kind=c_char), dimension(*), intent(out) :: buf
        end function

        ! dt_s = 0: the model's dt
        integer(c_int) function deepkin_step(client, n_cells, states, dt_s, advanced) &
                bind(c, name="deepkin_step")
            import :: c_int, c_long, c_double, c_ptr
            type(c_ptr), value :: client
            integer(c_long), value :: n_cells
            real(c_double), dimension(*), intent(in) :: states
            real(c_double), value :: dt_s
            real(c_double), dimension(*), intent(out) :: advanced
        end function

        subroutine deepkin_last_counts(client, cells, frozen, fallback, substeps) &
                bind(c, name="deepkin_last_counts")
            import :: c_long, c_ptr
            type(c_ptr), value :: client
            integer(c_long), intent(out) :: cells, frozen, fallback, substeps
        end subroutine

        ! flags(1:n_cells) of the last step of a model file (DEEPKIN_CELL_*); n_cells must be that
        ! step's. DEEPKIN_ERROR_ARGUMENT for a client of the service (it steps every cell itself).
        integer(c_int) function deepkin_last_flags(client, n_cells, flags) &
                bind(c, name="deepkin_last_flags")
            import :: c_int, c_long, c_signed_char, c_ptr
            type(c_ptr), value :: client
            integer(c_long), value :: n_cells
            integer(c_signed_char), dimension(*), intent(out) :: flags
        end function

        ! libtorch's threads of the process's in-process steps (>= 1; 1 for one MPI rank per core);
        ! no effect for a client of the service
        integer(c_int) function deepkin_set_threads(client, n_threads) bind(c, name="deepkin_set_threads")
            import :: c_int, c_ptr
            type(c_ptr), value :: client
            integer(c_int), value :: n_threads
        end function

        integer(c_long) function deepkin_http_status(client) bind(c, name="deepkin_http_status")
            import :: c_long, c_ptr
            type(c_ptr), value :: client
        end function

        integer(c_int) function deepkin_errmsg(client, buf, size) bind(c, name="deepkin_errmsg")
            import :: c_int, c_char, c_ptr
            type(c_ptr), value :: client
            integer(c_int), value :: size
            character(kind=c_char), dimension(*), intent(out) :: buf
        end function

        subroutine deepkin_close(client) bind(c, name="deepkin_close")
            import :: c_ptr
            type(c_ptr), value :: client
        end subroutine
    end interface
end module deepkin_client
