/* cmd_generate.c -- placeholder until the command is written. */
#include "cli.h"
#include <stdio.h>
int cmd_generate(int argc, char **argv) {
    (void)argc; (void)argv;
    fprintf(stderr, "layermap: 'generate' is not built yet\n");
    return 1;
}
