/*
 * The config loader (src/config/yaml.c): YAML text in, a config or an error out. A config that loads is
 * emitted (src/config/emit.c) and loaded again, and must come back equal (ptc_config_eq).
 */
#include <string.h>

#include "fuzz_util.h"
#include "portico/config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    ptc_config_t cfg, back;
    char err[1024];
    if (ptc_config_init_default(&cfg) != 0)
        abort();
    if (ptc_config_load_string(&cfg, "fuzz.yaml", (const char *)data, size, err, sizeof(err)) != 0) {
        FUZZ_CHECK(err[0] != '\0');
        ptc_config_dispose(&cfg); /* left as it was: the default */
        return 0;
    }
    char *yaml = NULL;
    size_t len = 0;
    if (ptc_config_emit(&cfg, PTC_CONFIG_YAML, 0, &yaml, &len) == 0) {
        if (ptc_config_init_default(&back) != 0)
            abort();
        if (ptc_config_load_string_in(&back, "emitted.yaml", cfg.base_dir, yaml, len, err, sizeof(err)) != 0) {
            fprintf(stderr, "emitted config does not load: %s\n--- emitted ---\n%s\n", err, yaml);
            abort();
        }
        FUZZ_CHECK(ptc_config_eq(&cfg, &back));
        ptc_config_dispose(&back);
        free(yaml);
    }
    ptc_config_dispose(&cfg);
    return 0;
}
