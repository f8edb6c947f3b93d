/*
 * Shared by the libFuzzer targets in tests/fuzz/: each target is one LLVMFuzzerTestOneInput over the
 * same static library the gateway links, built with coverage, ASan and UBSan (cmake -DPTC_FUZZ=ON,
 * `make fuzzers`). Beyond "does not crash", a target checks an invariant where the code has one;
 * FUZZ_CHECK aborts (a finding) when it does not hold.
 */
#ifndef PTC_FUZZ_UTIL_H
#define PTC_FUZZ_UTIL_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "portico/upstream.h"

#define FUZZ_CHECK(cond)                                                                                                           \
    do {                                                                                                                           \
        if (!(cond)) {                                                                                                             \
            fprintf(stderr, "%s:%d: invariant failed: %s\n", __FILE__, __LINE__, #cond);                                         \
            abort();                                                                                                               \
        }                                                                                                                          \
    } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Takes a split point out of the input's first two bytes (a value in [0, rest]); data/size keep the rest. */
size_t fuzz_take_split(const uint8_t **data, size_t *size);

/* A NUL-terminated heap copy of the input (for parsers that take C strings); free() it. */
char *fuzz_cstr(const uint8_t *data, size_t size);

/* The request head of the upstream targets' streams (a gRPC POST), as ptc_upstream_stream_cb_t.request_headers. */
void fuzz_request_headers(ptc_upstream_stream_t *s, const nghttp2_nv **nva, size_t *n);

#endif
