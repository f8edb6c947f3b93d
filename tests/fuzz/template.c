/* Header-rule and access-log templates (src/filter/template.c): parse never crashes; a parse error says why. */
#include "fuzz_util.h"
#include "portico/template.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *text = fuzz_cstr(data, size);
    ptc_template_t t;
    char err[256] = "";
    if (ptc_template_parse(text, &t, err, sizeof(err)) == 0)
        ptc_template_dispose(&t);
    else
        FUZZ_CHECK(err[0] != '\0');
    free(text);
    return 0;
}
