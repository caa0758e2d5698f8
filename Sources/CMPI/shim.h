// Open MPI's handles and constants are macros over global symbols, which Swift cannot import.
// Each one is exposed here as a static inline function.
#pragma once
#include <mpi.h>

static inline MPI_Comm dtrain_mpi_comm_world(void) { return MPI_COMM_WORLD; }
static inline MPI_Datatype dtrain_mpi_float(void) { return MPI_FLOAT; }
static inline MPI_Datatype dtrain_mpi_double(void) { return MPI_DOUBLE; }
static inline MPI_Datatype dtrain_mpi_int(void) { return MPI_INT; }
static inline MPI_Datatype dtrain_mpi_int64(void) { return MPI_INT64_T; }
static inline MPI_Datatype dtrain_mpi_byte(void) { return MPI_BYTE; }
static inline MPI_Op dtrain_mpi_sum(void) { return MPI_SUM; }
static inline MPI_Op dtrain_mpi_max(void) { return MPI_MAX; }
static inline MPI_Op dtrain_mpi_min(void) { return MPI_MIN; }
static inline void *dtrain_mpi_in_place(void) { return MPI_IN_PLACE; }
static inline MPI_Request dtrain_mpi_request_null(void) { return MPI_REQUEST_NULL; }
static inline MPI_Status *dtrain_mpi_status_ignore(void) { return MPI_STATUS_IGNORE; }
static inline MPI_Status *dtrain_mpi_statuses_ignore(void) { return MPI_STATUSES_IGNORE; }
static inline int dtrain_mpi_success(void) { return MPI_SUCCESS; }
static inline int dtrain_mpi_thread_funneled(void) { return MPI_THREAD_FUNNELED; }
static inline int dtrain_mpi_thread_serialized(void) { return MPI_THREAD_SERIALIZED; }
