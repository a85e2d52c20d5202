/* cmd_tokenize.c -- placeholder until the command is written. */
#include "cli.h"
#include <stdio.h>
int cmd_tokenize(int argc, char **argv) {
    (void)argc; (void)argv;
    fprintf(stderr, "layermap: 'tokenize' is not built yet\n");
    return 1;
}
