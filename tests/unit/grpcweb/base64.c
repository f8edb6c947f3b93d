/* Unit tests for src/grpcweb/base64.c: the streaming base64 decoder and encoder. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <cmocka.h>

#include "portico/codec.h"

#define BUF_MAX 2048
#define CANARY 0xA5
#define CANARY_LEN 16

/* ---- helpers ---- */

/* Deterministic pseudo-random bytes (xorshift32), so failures reproduce. */
static void fill_random(uint8_t *buf, size_t len, uint32_t seed)
{
    uint32_t x = seed * 2654435761u + 1;
    for (size_t i = 0; i < len; i++) {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        buf[i] = (uint8_t)(x >> 24);
    }
}

/* The obvious non-streaming RFC 4648 encoder, written independently of the code under test. */
static size_t ref_encode(const uint8_t *src, size_t len, char *dst)
{
    static const char alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    size_t o = 0, i = 0;
    for (; i + 3 <= len; i += 3) {
        dst[o++] = alphabet[src[i] >> 2];
        dst[o++] = alphabet[(src[i] & 3) << 4 | src[i + 1] >> 4];
        dst[o++] = alphabet[(src[i + 1] & 15) << 2 | src[i + 2] >> 6];
        dst[o++] = alphabet[src[i + 2] & 63];
    }
    if (len - i == 1) {
        dst[o++] = alphabet[src[i] >> 2];
        dst[o++] = alphabet[(src[i] & 3) << 4];
        dst[o++] = '=';
        dst[o++] = '=';
    } else if (len - i == 2) {
        dst[o++] = alphabet[src[i] >> 2];
        dst[o++] = alphabet[(src[i] & 3) << 4 | src[i + 1] >> 4];
        dst[o++] = alphabet[(src[i + 1] & 15) << 2];
        dst[o++] = '=';
    }
    return o;
}

/*
 * One decode_update call into a scratch buffer of exactly PTC_B64_DECODED_MAX(len) bytes followed by
 * a canary, checking the documented bound; appends the output to out/out_len. Returns the call's result.
 */
static ssize_t checked_update(ptc_b64_decoder_t *d, const char *src, size_t len, uint8_t *out, size_t *out_len)
{
    uint8_t scratch[BUF_MAX + CANARY_LEN];
    size_t max = PTC_B64_DECODED_MAX(len);
    assert_true(max <= BUF_MAX);
    memset(scratch, CANARY, max + CANARY_LEN);
    ssize_t r = ptc_b64_decode_update(d, src, len, scratch);
    for (size_t i = max; i < max + CANARY_LEN; i++)
        assert_int_equal(scratch[i], CANARY);
    if (r >= 0) {
        assert_true((size_t)r <= max);
        memcpy(out + *out_len, scratch, (size_t)r);
        *out_len += (size_t)r;
    }
    return r;
}

static ssize_t checked_final(ptc_b64_decoder_t *d, uint8_t *out, size_t *out_len)
{
    uint8_t scratch[2 + CANARY_LEN];
    memset(scratch, CANARY, sizeof(scratch));
    ssize_t r = ptc_b64_decode_final(d, scratch);
    for (size_t i = 2; i < sizeof(scratch); i++)
        assert_int_equal(scratch[i], CANARY);
    if (r >= 0) {
        assert_true(r <= 2);
        memcpy(out + *out_len, scratch, (size_t)r);
        *out_len += (size_t)r;
    }
    return r;
}

/*
 * Decodes src[0..len) fed as the pieces [0,a) [a,b) [b,len), then final. Returns 0 with the output in
 * out/out_len, or the first error (later pieces are not fed after an error).
 */
static ssize_t decode_split3(const char *src, size_t len, size_t a, size_t b, uint8_t *out, size_t *out_len)
{
    ptc_b64_decoder_t d;
    ssize_t r;
    ptc_b64_decoder_init(&d);
    *out_len = 0;
    if ((r = checked_update(&d, src, a, out, out_len)) < 0)
        return r;
    if ((r = checked_update(&d, src + a, b - a, out, out_len)) < 0)
        return r;
    if ((r = checked_update(&d, src + b, len - b, out, out_len)) < 0)
        return r;
    if ((r = checked_final(&d, out, out_len)) < 0)
        return r;
    return 0;
}

static ssize_t decode_whole(const char *src, size_t len, uint8_t *out, size_t *out_len)
{
    return decode_split3(src, len, len, len, out, out_len);
}

static ssize_t decode_bytewise(const char *src, size_t len, uint8_t *out, size_t *out_len)
{
    ptc_b64_decoder_t d;
    ssize_t r;
    ptc_b64_decoder_init(&d);
    *out_len = 0;
    for (size_t i = 0; i < len; i++)
        if ((r = checked_update(&d, src + i, 1, out, out_len)) < 0)
            return r;
    if ((r = checked_final(&d, out, out_len)) < 0)
        return r;
    return 0;
}

/* Asserts that src decodes to want (want_len bytes) whole, split at every pair of offsets, and bytewise. */
static void assert_decodes_everywhere(const char *src, size_t len, const void *want, size_t want_len)
{
    uint8_t out[BUF_MAX];
    size_t out_len;

    assert_int_equal(decode_whole(src, len, out, &out_len), 0);
    assert_int_equal(out_len, want_len);
    assert_memory_equal(out, want, want_len);

    for (size_t a = 0; a <= len; a++) {
        for (size_t b = a; b <= len; b++) {
            assert_int_equal(decode_split3(src, len, a, b, out, &out_len), 0);
            assert_int_equal(out_len, want_len);
            assert_memory_equal(out, want, want_len);
        }
    }

    assert_int_equal(decode_bytewise(src, len, out, &out_len), 0);
    assert_int_equal(out_len, want_len);
    assert_memory_equal(out, want, want_len);
}

#define ASSERT_DECODES(src, want) assert_decodes_everywhere((src), sizeof(src) - 1, (want), sizeof(want) - 1)

/* Asserts that src is rejected with PTC_EBADB64 however it is split (by update or by final). */
static void assert_rejected_everywhere(const char *src, size_t len)
{
    uint8_t out[BUF_MAX];
    size_t out_len;

    assert_int_equal(decode_whole(src, len, out, &out_len), PTC_EBADB64);
    for (size_t a = 0; a <= len; a++)
        for (size_t b = a; b <= len; b++)
            assert_int_equal(decode_split3(src, len, a, b, out, &out_len), PTC_EBADB64);
    assert_int_equal(decode_bytewise(src, len, out, &out_len), PTC_EBADB64);
}

#define ASSERT_REJECTED(src) assert_rejected_everywhere((src), sizeof(src) - 1)

/* Encodes src fed as [0,a) [a,b) [b,len), then final, checking the documented per-call bounds. */
static size_t encode_split3(const uint8_t *src, size_t len, size_t a, size_t b, char *out)
{
    ptc_b64_encoder_t e;
    size_t o = 0, n;
    ptc_b64_encoder_init(&e);
    n = ptc_b64_encode_update(&e, src, a, out + o);
    assert_true(n <= PTC_B64_ENCODED_MAX(a));
    o += n;
    n = ptc_b64_encode_update(&e, src + a, b - a, out + o);
    assert_true(n <= PTC_B64_ENCODED_MAX(b - a));
    o += n;
    n = ptc_b64_encode_update(&e, src + b, len - b, out + o);
    assert_true(n <= PTC_B64_ENCODED_MAX(len - b));
    o += n;
    n = ptc_b64_encode_final(&e, out + o);
    assert_true(n == 0 || n == 4);
    return o + n;
}

/* ---- decoder ---- */

static void test_decode_rfc4648_vectors(void **state)
{
    (void)state;
    ASSERT_DECODES("", "");
    ASSERT_DECODES("Zg==", "f");
    ASSERT_DECODES("Zm8=", "fo");
    ASSERT_DECODES("Zm9v", "foo");
    ASSERT_DECODES("Zm9vYg==", "foob");
    ASSERT_DECODES("Zm9vYmE=", "fooba");
    ASSERT_DECODES("Zm9vYmFy", "foobar");
}

static void test_decode_full_alphabet(void **state)
{
    (void)state;
    /* every alphabet character, in order: 0x00 0x10 0x83 0x10 0x51 0x87 ... encodes 0..63 */
    static const char src[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    uint8_t want[48];
    for (unsigned i = 0; i < 16; i++) {
        uint32_t v = (4 * i) << 18 | (4 * i + 1) << 12 | (4 * i + 2) << 6 | (4 * i + 3);
        want[3 * i] = (uint8_t)(v >> 16);
        want[3 * i + 1] = (uint8_t)(v >> 8);
        want[3 * i + 2] = (uint8_t)v;
    }
    assert_decodes_everywhere(src, sizeof(src) - 1, want, sizeof(want));
    ASSERT_DECODES("////", "\xff\xff\xff");
    ASSERT_DECODES("++++", "\xfb\xef\xbe");
    ASSERT_DECODES("AAAA", "\0\0\0");
}

static void test_decode_padded_segments_mid_stream(void **state)
{
    (void)state;
    ASSERT_DECODES("QQ==QkM=", "ABC");
    ASSERT_DECODES("QUI=Qw==", "ABC");
    ASSERT_DECODES("Zg==Zm8=Zm9v", "ffofoo");
    ASSERT_DECODES("Zg==Zg==Zg==Zg==", "ffff");
    ASSERT_DECODES("Zm9vYmE=Zm9vYmFyZg==Zm8=", "foobafoobarffo");
    /* a padded segment followed by an unpadded tail */
    ASSERT_DECODES("QQ==QkM", "ABC");
    ASSERT_DECODES("QUI=Qw", "ABC");
}

static void test_decode_whitespace_anywhere(void **state)
{
    (void)state;
    ASSERT_DECODES("Zm9v\r\nYmFy", "foobar");
    ASSERT_DECODES("Zm9vYmFy\r\n", "foobar");
    ASSERT_DECODES("\r\nZm9vYmFy", "foobar");
    ASSERT_DECODES(" Z m 9 v Y m F y ", "foobar");
    ASSERT_DECODES("\tZm9v\tYg==\n", "foob");
    ASSERT_DECODES("Zg\r\n=\r\n=", "f");
    ASSERT_DECODES("Zg= =", "f");
    ASSERT_DECODES("QQ==\r\nQkM=\r\n", "ABC");
    ASSERT_DECODES("Zm9\n", "fo");
    ASSERT_DECODES(" \t\r\n", "");
    ASSERT_DECODES("\r\n\r\n\r\n", "");
}

static void test_decode_missing_final_padding(void **state)
{
    (void)state;
    ASSERT_DECODES("Zg", "f");
    ASSERT_DECODES("Zm8", "fo");
    ASSERT_DECODES("Zm9vYg", "foob");
    ASSERT_DECODES("Zm9vYmE", "fooba");
    ASSERT_DECODES("Zm9vYmE \r\n", "fooba");

    /* final writes the leftover bytes only at the end, never before */
    ptc_b64_decoder_t d;
    uint8_t out[8];
    ptc_b64_decoder_init(&d);
    assert_int_equal(ptc_b64_decode_update(&d, "Zm9vYm", 6, out), 3);
    assert_memory_equal(out, "foo", 3);
    assert_int_equal(ptc_b64_decode_update(&d, "E", 1, out), 0);
    assert_int_equal(ptc_b64_decode_final(&d, out), 2);
    assert_memory_equal(out, "ba", 2);
}

static void test_decode_emits_complete_quanta_immediately(void **state)
{
    (void)state;
    ptc_b64_decoder_t d;
    uint8_t out[8];
    ptc_b64_decoder_init(&d);
    assert_int_equal(ptc_b64_decode_update(&d, "Zm9", 3, out), 0);
    assert_int_equal(ptc_b64_decode_update(&d, "v", 1, out), 3);
    assert_memory_equal(out, "foo", 3);
    /* a padded quantum is complete as soon as its last '=' arrives */
    assert_int_equal(ptc_b64_decode_update(&d, "Zg=", 3, out), 0);
    assert_int_equal(ptc_b64_decode_update(&d, "=", 1, out), 1);
    assert_memory_equal(out, "f", 1);
    assert_int_equal(ptc_b64_decode_update(&d, "", 0, out), 0);
    assert_int_equal(ptc_b64_decode_final(&d, out), 0);
}

static void test_decode_invalid_characters(void **state)
{
    (void)state;
    ASSERT_REJECTED("Zm9v!");
    ASSERT_REJECTED("!Zm9v");
    ASSERT_REJECTED("Zm!v");
    /* the URL-safe alphabet is not base64 */
    ASSERT_REJECTED("Zm-v");
    ASSERT_REJECTED("Zm_v");
    ASSERT_REJECTED("Zm9v.");
    ASSERT_REJECTED("Zm9v\0");
    ASSERT_REJECTED("Zm9v\x80");
    ASSERT_REJECTED("\xffZm9v");
    ASSERT_REJECTED("Zm9v\x7f");
    ASSERT_REJECTED("Zm9v\xc3\xa9");

    /* every byte outside the alphabet, '=' and the skipped whitespace, alone and after a quantum */
    static const char alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/= \t\r\n";
    for (unsigned c = 0; c < 256; c++) {
        if (memchr(alphabet, (int)c, sizeof(alphabet) - 1) != NULL)
            continue;
        char src[8] = "Zm9v";
        src[4] = (char)c;
        src[5] = 'Y';
        src[6] = 'g';
        src[7] = '=';
        assert_rejected_everywhere(src, 8);
        assert_rejected_everywhere(src + 4, 1);
    }
}

static void test_decode_bad_padding(void **state)
{
    (void)state;
    ASSERT_REJECTED("=");
    ASSERT_REJECTED("==");
    ASSERT_REJECTED("====");
    ASSERT_REJECTED("=AAA");
    ASSERT_REJECTED("A===");
    ASSERT_REJECTED("A=");
    ASSERT_REJECTED("QQ=Q");
    ASSERT_REJECTED("QQ==Q===");
    ASSERT_REJECTED("QQ===");
    ASSERT_REJECTED("QUI==");
    ASSERT_REJECTED("QUJD=");
    ASSERT_REJECTED("QUJD==");
    ASSERT_REJECTED("Zm9v=Zm9v");
    ASSERT_REJECTED("QQ==\r\n=");
    ASSERT_REJECTED("Q\r\n=");
    ASSERT_REJECTED("QUI=Q=");
}

static void test_decode_single_leftover_char(void **state)
{
    (void)state;
    ASSERT_REJECTED("A");
    ASSERT_REJECTED("Zm9vY");
    ASSERT_REJECTED("Zm9vY\r\n");
    ASSERT_REJECTED("QQ==Q");

    /* the complete quanta before it are still delivered by update; final reports the error */
    ptc_b64_decoder_t d;
    uint8_t out[8];
    ptc_b64_decoder_init(&d);
    assert_int_equal(ptc_b64_decode_update(&d, "QUJDR", 5, out), 3);
    assert_memory_equal(out, "ABC", 3);
    assert_int_equal(ptc_b64_decode_final(&d, out), PTC_EBADB64);
}

static void test_decode_random_every_split(void **state)
{
    (void)state;
    uint8_t data[64];
    char enc[128];
    for (size_t len = 0; len <= 40; len++) {
        fill_random(data, len, (uint32_t)len);
        size_t n = ref_encode(data, len, enc);
        assert_decodes_everywhere(enc, n, data, len);
        /* without the padding */
        while (n > 0 && enc[n - 1] == '=')
            n--;
        assert_decodes_everywhere(enc, n, data, len);
    }
}

static void test_decode_random_with_line_breaks(void **state)
{
    (void)state;
    uint8_t data[256];
    char enc[512], wrapped[1024];
    fill_random(data, sizeof(data), 7);
    size_t n = ref_encode(data, sizeof(data), enc), w = 0;
    /* MIME-style 76-column lines, plus a stray space every 13 characters */
    for (size_t i = 0; i < n; i++) {
        if (i != 0 && i % 76 == 0) {
            wrapped[w++] = '\r';
            wrapped[w++] = '\n';
        }
        if (i % 13 == 5)
            wrapped[w++] = ' ';
        wrapped[w++] = enc[i];
    }
    wrapped[w++] = '\r';
    wrapped[w++] = '\n';
    assert_decodes_everywhere(wrapped, w, data, sizeof(data));
}

static void test_decode_empty_and_null_input(void **state)
{
    (void)state;
    ptc_b64_decoder_t d;
    uint8_t out[8];
    ptc_b64_decoder_init(&d);
    assert_int_equal(ptc_b64_decode_update(&d, NULL, 0, out), 0);
    assert_int_equal(ptc_b64_decode_update(&d, "Zm", 2, out), 0);
    assert_int_equal(ptc_b64_decode_update(&d, NULL, 0, out), 0);
    assert_int_equal(ptc_b64_decode_update(&d, "9v", 2, out), 3);
    assert_memory_equal(out, "foo", 3);
    assert_int_equal(ptc_b64_decode_final(&d, out), 0);
}

/* ---- encoder ---- */

static void test_encode_rfc4648_vectors(void **state)
{
    (void)state;
    static const struct {
        const char *in, *out;
    } vectors[] = {
        {"", ""},
        {"f", "Zg=="},
        {"fo", "Zm8="},
        {"foo", "Zm9v"},
        {"foob", "Zm9vYg=="},
        {"fooba", "Zm9vYmE="},
        {"foobar", "Zm9vYmFy"},
    };
    for (size_t i = 0; i < PTC_ARRAY_SIZE(vectors); i++) {
        size_t len = strlen(vectors[i].in);
        for (size_t a = 0; a <= len; a++) {
            for (size_t b = a; b <= len; b++) {
                char out[32];
                size_t n = encode_split3((const uint8_t *)vectors[i].in, len, a, b, out);
                assert_int_equal(n, strlen(vectors[i].out));
                assert_memory_equal(out, vectors[i].out, n);
            }
        }
    }
}

static void test_encode_emits_complete_quanta_immediately(void **state)
{
    (void)state;
    ptc_b64_encoder_t e;
    char out[16];
    ptc_b64_encoder_init(&e);
    assert_int_equal(ptc_b64_encode_final(&e, out), 0);
    assert_int_equal(ptc_b64_encode_update(&e, (const uint8_t *)"", 0, out), 0);
    assert_int_equal(ptc_b64_encode_update(&e, NULL, 0, out), 0);
    assert_int_equal(ptc_b64_encode_update(&e, (const uint8_t *)"f", 1, out), 0);
    assert_int_equal(ptc_b64_encode_update(&e, (const uint8_t *)"o", 1, out), 0);
    assert_int_equal(ptc_b64_encode_update(&e, NULL, 0, out), 0);
    assert_int_equal(ptc_b64_encode_update(&e, (const uint8_t *)"o", 1, out), 4);
    assert_memory_equal(out, "Zm9v", 4);
    assert_int_equal(ptc_b64_encode_update(&e, (const uint8_t *)"barfo", 5, out), 4);
    assert_memory_equal(out, "YmFy", 4);
    assert_int_equal(ptc_b64_encode_update(&e, (const uint8_t *)"ob", 2, out), 4);
    assert_memory_equal(out, "Zm9v", 4);
    assert_int_equal(ptc_b64_encode_final(&e, out), 4);
    assert_memory_equal(out, "Yg==", 4);
    /* final ends the segment; the encoder starts afresh */
    assert_int_equal(ptc_b64_encode_final(&e, out), 0);
    assert_int_equal(ptc_b64_encode_update(&e, (const uint8_t *)"fo", 2, out), 0);
    assert_int_equal(ptc_b64_encode_final(&e, out), 4);
    assert_memory_equal(out, "Zm8=", 4);
}

static void test_encode_matches_reference_all_lengths_all_splits(void **state)
{
    (void)state;
    uint8_t data[300];
    char want[512], got[512];
    for (size_t len = 0; len <= 300; len++) {
        fill_random(data, len, (uint32_t)(len + 1000));
        size_t want_len = ref_encode(data, len, want);
        assert_int_equal(want_len, (len + 2) / 3 * 4);

        /* one split point anywhere (the third piece is empty) */
        for (size_t a = 0; a <= len; a++) {
            size_t n = encode_split3(data, len, a, len, got);
            assert_int_equal(n, want_len);
            assert_memory_equal(got, want, want_len);
        }
        /* two split points, for the short inputs where all pairs are affordable */
        if (len <= 40) {
            for (size_t a = 0; a <= len; a++) {
                for (size_t b = a; b <= len; b++) {
                    size_t n = encode_split3(data, len, a, b, got);
                    assert_int_equal(n, want_len);
                    assert_memory_equal(got, want, want_len);
                }
            }
        }
        /* one byte at a time */
        ptc_b64_encoder_t e;
        size_t o = 0;
        ptc_b64_encoder_init(&e);
        for (size_t i = 0; i < len; i++)
            o += ptc_b64_encode_update(&e, data + i, 1, got + o);
        o += ptc_b64_encode_final(&e, got + o);
        assert_int_equal(o, want_len);
        assert_memory_equal(got, want, want_len);
    }
}

static void test_round_trip_all_lengths(void **state)
{
    (void)state;
    uint8_t data[300], back[BUF_MAX];
    char enc[512];
    for (size_t len = 0; len <= 300; len++) {
        fill_random(data, len, (uint32_t)(len + 2000));
        size_t n = encode_split3(data, len, len / 3, len / 2, enc);
        size_t back_len;
        assert_int_equal(decode_whole(enc, n, back, &back_len), 0);
        assert_int_equal(back_len, len);
        assert_memory_equal(back, data, len);
        assert_int_equal(decode_bytewise(enc, n, back, &back_len), 0);
        assert_int_equal(back_len, len);
        assert_memory_equal(back, data, len);
        for (size_t a = 0; a <= n; a++) {
            assert_int_equal(decode_split3(enc, n, a, n, back, &back_len), 0);
            assert_int_equal(back_len, len);
            assert_memory_equal(back, data, len);
        }
    }
}

/* One padded segment per frame, as a per-frame encoder emits them: the concatenation decodes in one go. */
static void test_round_trip_concatenated_segments(void **state)
{
    (void)state;
    uint8_t data[32];
    fill_random(data, sizeof(data), 99);
    for (size_t l1 = 0; l1 <= 10; l1++) {
        for (size_t l2 = 0; l2 <= 10; l2++) {
            for (size_t l3 = 0; l3 <= 4; l3++) {
                ptc_b64_encoder_t e;
                char enc[64];
                size_t n = 0;
                ptc_b64_encoder_init(&e);
                n += ptc_b64_encode_update(&e, data, l1, enc + n);
                n += ptc_b64_encode_final(&e, enc + n);
                n += ptc_b64_encode_update(&e, data + l1, l2, enc + n);
                n += ptc_b64_encode_final(&e, enc + n);
                n += ptc_b64_encode_update(&e, data + l1 + l2, l3, enc + n);
                n += ptc_b64_encode_final(&e, enc + n);
                assert_true(n % 4 == 0);
                assert_decodes_everywhere(enc, n, data, l1 + l2 + l3);
            }
        }
    }
}

/* One character in each alphabet: the table the JWT filter (URL), the Connect GET query (both) and the
 * text-mode decoder (standard) share. */
static void test_char_value_alphabets(void **state)
{
    (void)state;
    static const char std[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    static const char url[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    for (int i = 0; i < 64; i++) {
        assert_int_equal(ptc_b64_char_value((uint8_t)std[i], PTC_B64_STD), i);
        assert_int_equal(ptc_b64_char_value((uint8_t)url[i], PTC_B64_URL), i);
        assert_int_equal(ptc_b64_char_value((uint8_t)std[i], PTC_B64_STD | PTC_B64_URL), i);
        assert_int_equal(ptc_b64_char_value((uint8_t)url[i], PTC_B64_STD | PTC_B64_URL), i);
    }
    assert_int_equal(ptc_b64_char_value('+', PTC_B64_URL), -1);
    assert_int_equal(ptc_b64_char_value('/', PTC_B64_URL), -1);
    assert_int_equal(ptc_b64_char_value('-', PTC_B64_STD), -1);
    assert_int_equal(ptc_b64_char_value('_', PTC_B64_STD), -1);
    int others = 0;
    for (int c = 0; c < 256; c++)
        others += ptc_b64_char_value((uint8_t)c, PTC_B64_STD | PTC_B64_URL) < 0;
    assert_int_equal(others, 256 - 66); /* '=', whitespace and the rest are the caller's */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_char_value_alphabets),
        cmocka_unit_test(test_decode_rfc4648_vectors),
        cmocka_unit_test(test_decode_full_alphabet),
        cmocka_unit_test(test_decode_padded_segments_mid_stream),
        cmocka_unit_test(test_decode_whitespace_anywhere),
        cmocka_unit_test(test_decode_missing_final_padding),
        cmocka_unit_test(test_decode_emits_complete_quanta_immediately),
        cmocka_unit_test(test_decode_invalid_characters),
        cmocka_unit_test(test_decode_bad_padding),
        cmocka_unit_test(test_decode_single_leftover_char),
        cmocka_unit_test(test_decode_empty_and_null_input),
        cmocka_unit_test(test_decode_random_every_split),
        cmocka_unit_test(test_decode_random_with_line_breaks),
        cmocka_unit_test(test_encode_rfc4648_vectors),
        cmocka_unit_test(test_encode_emits_complete_quanta_immediately),
        cmocka_unit_test(test_encode_matches_reference_all_lengths_all_splits),
        cmocka_unit_test(test_round_trip_all_lengths),
        cmocka_unit_test(test_round_trip_concatenated_segments),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
