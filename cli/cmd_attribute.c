/* cmd_attribute.c -- placeholder until the command is written. */
#include "cli.h"
#include <stdio.h>
int cmd_attribute(int argc, char **argv) {
    (void)argc; (void)argv;
    fprintf(stderr, "layermap: 'attribute' is not built yet\n");
    return 1;
}
