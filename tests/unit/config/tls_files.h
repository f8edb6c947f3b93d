/*
 * TLS files for the config tests: a certificate, its key, a key that does not match, an encrypted key and a
 * junk file, written into a fresh temporary directory (tls_dir) by the tls_setup fixture and removed with
 * whatever else was written there by tls_teardown. Configs loaded "from" tls_dir/t.yaml find them by their relative names.
 */
#ifndef PTC_TEST_CONFIG_TLS_FILES_H
#define PTC_TEST_CONFIG_TLS_FILES_H

#include <dirent.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "portico/config.h"

/* A self-signed EC certificate (CN config-test, SAN DNS:config.test, valid until 2126) and its key; another
 * key that does not match it; the same key encrypted (passphrase "x"). */
static const char TEST_CERT[] = "-----BEGIN CERTIFICATE-----\n"
                                "MIIBmzCCAUGgAwIBAgIUDvyJGZBzQeck1HLBHnmtMVCIDuowCgYIKoZIzj0EAwIw\n"
                                "FjEUMBIGA1UEAwwLY29uZmlnLXRlc3QwIBcNMjYxMTI2MDA1MzMxWhgPMjEyNjEx\n"
                                "MDIwMDUzMzFaMBYxFDASBgNVBAMMC2NvbmZpZy10ZXN0MFkwEwYHKoZIzj0CAQYI\n"
                                "KoZIzj0DAQcDQgAEdftTRSGljRpDRDQZNOEJLu+2Fv1c1zvwHKmtvl8WIof5rWpz\n"
                                "psplLa/EJ2/PsPAIOkTVjZ1bceytX9rHz/OXQ6NrMGkwHQYDVR0OBBYEFGz93PtA\n"
                                "z2XfCbyqNRig6N0+8brBMB8GA1UdIwQYMBaAFGz93PtAz2XfCbyqNRig6N0+8brB\n"
                                "MA8GA1UdEwEB/wQFMAMBAf8wFgYDVR0RBA8wDYILY29uZmlnLnRlc3QwCgYIKoZI\n"
                                "zj0EAwIDSAAwRQIhAKXRdwVSL/mCfXiBoNrOW2bUt2s0uWAF1dwF5Z66V+3UAiAw\n"
                                "9iq540JWsUMRLSBJUjhgbcHjATjuh+660R+HeUMOxw==\n"
                                "-----END CERTIFICATE-----\n";
static const char TEST_KEY[] = "-----BEGIN PRIVATE KEY-----\n"
                               "MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgMpQLhnb9gmD0UqbN\n"
                               "IvQT1kprJ+vVSSNY3ia7v1RJur+hRANCAAR1+1NFIaWNGkNENBk04Qku77YW/VzX\n"
                               "O/Acqa2+XxYih/mtanOmymUtr8Qnb8+w8Ag6RNWNnVtx7K1f2sfP85dD\n"
                               "-----END PRIVATE KEY-----\n";
static const char OTHER_KEY[] = "-----BEGIN PRIVATE KEY-----\n"
                                "MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg+UWXNbog79lm/Nj+\n"
                                "EEuAH8cTld9aGOEDYRwkKtpXE26hRANCAAT7lc7fsn97nm9n8zliAQKjbBMDR+vr\n"
                                "R5L0NfxsBpL4vcbd6+vqvXvg9ji0x/PpFkaE5JcIUMsXb0nSX/vSiRpe\n"
                                "-----END PRIVATE KEY-----\n";

static char tls_dir[64];

static inline void write_file(const char *name, const char *text)
{
    char path[128];
    snprintf(path, sizeof(path), "%s/%s", tls_dir, name);
    FILE *fp = fopen(path, "w");
    assert_non_null(fp);
    fputs(text, fp);
    fclose(fp);
}

/* Writes the PEM files into a fresh directory (tls_dir) and, with the openssl CLI, an encrypted key. */
static inline int tls_setup(void **state)
{
    (void)state;
    snprintf(tls_dir, sizeof(tls_dir), "/tmp/ptc-tls-test-XXXXXX");
    if (mkdtemp(tls_dir) == NULL)
        return -1;
    write_file("a.pem", TEST_CERT);
    write_file("a.key", TEST_KEY);
    write_file("b.key", OTHER_KEY);
    write_file("junk.pem", "not a certificate\n");
    char cmd[256];
    snprintf(cmd, sizeof(cmd), "openssl pkey -in %s/a.key -aes128 -passout pass:x -out %s/enc.key 2>/dev/null", tls_dir, tls_dir);
    return system(cmd) == 0 ? 0 : -1;
}

/* Removes tls_dir with every file in it (tests may add their own). */
static inline int tls_teardown(void **state)
{
    (void)state;
    DIR *d = opendir(tls_dir);
    struct dirent *ent;
    if (d == NULL)
        return -1;
    while ((ent = readdir(d)) != NULL) {
        char path[512];
        if (strcmp(ent->d_name, ".") == 0 || strcmp(ent->d_name, "..") == 0)
            continue;
        snprintf(path, sizeof(path), "%s/%s", tls_dir, ent->d_name);
        unlink(path);
    }
    closedir(d);
    return rmdir(tls_dir);
}

/* Replaces every '@' of tmpl with tls_dir. */
static inline void expand(char *out, size_t len, const char *tmpl)
{
    size_t n = 0;
    for (const char *p = tmpl; *p != '\0' && n + 1 < len; p++) {
        if (*p == '@') {
            n += (size_t)snprintf(out + n, len - n, "%s", tls_dir);
            if (n >= len)
                n = len - 1;
        } else {
            out[n++] = *p;
        }
    }
    out[n] = '\0';
}

/* Loads yaml as if from the file tls_dir/t.yaml, so that relative paths are relative to tls_dir. */
static inline int load_in_dir(ptc_config_t *cfg, const char *yaml, char *err, size_t errlen)
{
    char name[128];
    snprintf(name, sizeof(name), "%s/t.yaml", tls_dir);
    return ptc_config_load_string(cfg, name, yaml, strlen(yaml), err, errlen);
}

/*
 * Loads yaml over cfg as load_in_dir does, which must fail with PTC_ECONFIG and message ('@' stands for tls_dir; a
 * trailing '*': the message starts with the rest). case_no only appears in what is printed on failure.
 */
static inline void assert_load_error(ptc_config_t *cfg, size_t case_no, const char *yaml, const char *message)
{
    char err[512], expected[512];

    expand(expected, sizeof(expected), message);
    size_t len = strlen(expected);
    bool prefix = len > 0 && expected[len - 1] == '*';
    if (prefix)
        expected[--len] = '\0';
    int ret = load_in_dir(cfg, yaml, err, sizeof(err));
    bool ok = ret == PTC_ECONFIG && (prefix ? strncmp(err, expected, len) == 0 && strlen(err) > len : strcmp(err, expected) == 0);
    if (!ok)
        print_error("case %zu:\n%s\nexpected: %s%s\ngot (%d): %s\n", case_no, yaml, expected, prefix ? "..." : "", ret, err);
    assert_true(ok);
}

static inline void assert_path(const char *got, const char *name)
{
    char expected[128];
    snprintf(expected, sizeof(expected), "%s/%s", tls_dir, name);
    assert_string_equal(got, expected);
}

#endif
