// OpenSSL's libcrypto, for SHA-256 (checkpoint checksums and parameter digests). Its EVP digest
// API uses the CPU's SHA extensions where present, several times faster than portable code.
#pragma once
#include <openssl/evp.h>
