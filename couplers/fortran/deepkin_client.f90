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
module deepkin_client
    use, intrinsic :: iso_c_binding, only: c_int, c_long, c_double, c_char, c_ptr, c_null_char
    implicit none
    private
    public :: c_null_char

    integer(c_int), parameter, public :: DEEPKIN_OK = 0, DEEPKIN_ERROR_ARGUMENT = 1, &
        DEEPKIN_ERROR_MEMORY = 2, DEEPKIN_ERROR_CONNECT = 3, DEEPKIN_ERROR_TIMEOUT = 4, &
        DEEPKIN_ERROR_BUSY = 5, DEEPKIN_ERROR_AUTH = 6, DEEPKIN_ERROR_NOT_FOUND = 7, &
        DEEPKIN_ERROR_MECHANISM = 8, DEEPKIN_ERROR_INPUT = 9, DEEPKIN_ERROR_SERVER = 10, &
        DEEPKIN_ERROR_PROTOCOL = 11

    public :: deepkin_open, deepkin_n_species, deepkin_dt, deepkin_species_name, &
        deepkin_mechanism_sha256, deepkin_step, deepkin_last_counts, deepkin_http_status, &
        deepkin_errmsg, deepkin_close

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
