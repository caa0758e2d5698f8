// OpenBLAS's CBLAS interface, its thread-control and kernel-name entry points.
#pragma once
#include <cblas.h>

// Declared by OpenBLAS's cblas.h on most builds; repeated so the shim does not depend on it.
void openblas_set_num_threads(int num_threads);
char *openblas_get_corename(void);
