// HDF5's property-list defaults and native types are macros that call H5open() and read globals;
// Swift cannot import them, so each is exposed as a static inline function.
#pragma once
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <fcntl.h>
#include <hdf5.h>

/// O_DIRECT (a GNU extension Swift's Glibc module leaves out): checkpoint tensor bytes are written
/// into the HDF5 file's reserved space bypassing the page cache.
static inline int dtrain_o_direct(void) { return O_DIRECT; }

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
static inline hid_t dtrain_h5e_default(void) { return H5E_DEFAULT; }
static inline hid_t dtrain_h5t_ieee_f32le(void) { return H5T_IEEE_F32LE; }
static inline hid_t dtrain_h5t_std_i64le(void) { return H5T_STD_I64LE; }
static inline hid_t dtrain_h5t_ieee_f64le(void) { return H5T_IEEE_F64LE; }
static inline hid_t dtrain_h5p_group_create(void) { return H5P_GROUP_CREATE; }
static inline size_t dtrain_h5t_variable(void) { return H5T_VARIABLE; }
/// Silences HDF5's own error-stack printing; dtrain reports errors itself, naming the file.
static inline void dtrain_h5_silence_errors(void) { H5Eset_auto2(H5E_DEFAULT, NULL, NULL); }
static inline haddr_t dtrain_haddr_undef(void) { return HADDR_UNDEF; }
