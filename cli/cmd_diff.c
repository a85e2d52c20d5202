/* cmd_diff.c -- placeholder until the command is written. */
#include "cli.h"
#include <stdio.h>
int cmd_diff(int argc, char **argv) {
    (void)argc; (void)argv;
    fprintf(stderr, "layermap: 'diff' is not built yet\n");
    return 1;
}
