/* cmd_inspect.c -- placeholder until the command is written. */
#include "cli.h"
#include <stdio.h>
int cmd_inspect(int argc, char **argv) {
    (void)argc; (void)argv;
    fprintf(stderr, "layermap: 'inspect' is not built yet\n");
    return 1;
}
