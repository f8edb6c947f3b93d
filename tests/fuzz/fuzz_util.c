#include <string.h>

#include "fuzz_util.h"

size_t fuzz_take_split(const uint8_t **data, size_t *size)
{
    if (*size < 2)
        return 0;
    size_t v = (size_t)(*data)[0] << 8 | (*data)[1];
    *data += 2;
    *size -= 2;
    return *size == 0 ? 0 : v % (*size + 1);
}

char *fuzz_cstr(const uint8_t *data, size_t size)
{
    char *s = malloc(size + 1);
    if (s == NULL)
        abort();
    memcpy(s, data, size);
    s[size] = '\0';
    return s;
}
