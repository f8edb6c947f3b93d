#include <stdio.h>
#include <string.h>

#include "portico/log.h"

int main(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--version") == 0) {
            printf("portico %s\n", PTC_VERSION);
            return 0;
        }
    }
    fprintf(stderr, "usage: portico [--version]\n");
    return 2;
}
