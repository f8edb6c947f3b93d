/*
 * Streaming base64 (src/grpcweb/base64.c). Decoding: the same bytes (or the same refusal) whether the
 * text comes at once or split. Round trip: the input's bytes encoded in two pieces and decoded give the
 * input back.
 */
#include <string.h>

#include "fuzz_util.h"
#include "portico/codec.h"

static ssize_t decode(const uint8_t *src, size_t len, size_t split, uint8_t *out)
{
    ptc_b64_decoder_t d;
    ssize_t a, b, c;
    ptc_b64_decoder_init(&d);
    if ((a = ptc_b64_decode_update(&d, (const char *)src, split, out)) < 0)
        return -1;
    if ((b = ptc_b64_decode_update(&d, (const char *)src + split, len - split, out + a)) < 0)
        return -1;
    if ((c = ptc_b64_decode_final(&d, out + a + b)) < 0)
        return -1;
    return a + b + c;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    size_t split = fuzz_take_split(&data, &size);
    /* room as the API asks: PTC_B64_DECODED_MAX(len) for each update (the encoded text is the longest input) */
    size_t room = 2 * PTC_B64_DECODED_MAX(size / 3 * 4 + 8) + 8;
    uint8_t *x = malloc(room), *y = malloc(room);
    char *text = malloc(size / 3 * 4 + 12);
    if (x == NULL || y == NULL || text == NULL)
        abort();

    ssize_t n1 = decode(data, size, 0, x), n2 = decode(data, size, split, y);
    FUZZ_CHECK((n1 < 0) == (n2 < 0));
    FUZZ_CHECK(n1 < 0 || (n1 == n2 && memcmp(x, y, (size_t)n1) == 0));

    ptc_b64_encoder_t e;
    ptc_b64_encoder_init(&e);
    size_t t = ptc_b64_encode_update(&e, data, split, text);
    t += ptc_b64_encode_update(&e, data + split, size - split, text + t);
    t += ptc_b64_encode_final(&e, text + t);
    FUZZ_CHECK(t == (size + 2) / 3 * 4);
    ssize_t n3 = decode((const uint8_t *)text, t, t / 2, x);
    FUZZ_CHECK(n3 >= 0 && (size_t)n3 == size && memcmp(x, data, size) == 0);
    free(x);
    free(y);
    free(text);
    return 0;
}
