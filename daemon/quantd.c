#include "config.h"
#include <stdio.h>
#include <string.h>
int main(int argc, char **argv)
{
    if (argc > 1 && !strcmp(argv[1], "--version")) {
        printf("quantd %s\n", PACKAGE_VERSION);
        return 0;
    }
    fprintf(stderr, "usage: quantd --version\n");
    return 2;
}
