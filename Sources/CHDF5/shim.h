// HDF5's property-list defaults and native types are macros that call H5open() and read globals;
// Swift cannot import them, so each is exposed as a static inline function.
#pragma once
#include <hdf5.h>

static inline hid_t dtrain_h5p_default(void) { return H5P_DEFAULT; }
static inline hid_t dtrain_h5s_all(void) { return H5S_ALL; }
static inline hid_t dtrain_h5t_native_float(void) { return H5T_NATIVE_FLOAT; }
static inline hid_t dtrain_h5t_native_double(void) { return H5T_NATIVE_DOUBLE; }
static inline hid_t dtrain_h5t_native_int64(void) { return H5T_NATIVE_INT64; }
static inline hid_t dtrain_h5t_native_uint8(void) { return H5T_NATIVE_UINT8; }
static inline hid_t dtrain_h5t_c_s1(void) { return H5T_C_S1; }
static inline hid_t dtrain_h5p_file_access(void) { return H5P_FILE_ACCESS; }
static inline hid_t dtrain_h5p_dataset_create(void) { return H5P_DATASET_CREATE; }
static inline unsigned dtrain_h5f_acc_trunc(void) { return H5F_ACC_TRUNC; }
static inline unsigned dtrain_h5f_acc_rdonly(void) { return H5F_ACC_RDONLY; }
static inline unsigned dtrain_h5f_acc_excl(void) { return H5F_ACC_EXCL; }
