/* cmd_ppl.c -- placeholder until the command is written. */
#include "cli.h"
#include <stdio.h>
int cmd_ppl(int argc, char **argv) {
    (void)argc; (void)argv;
    fprintf(stderr, "layermap: 'ppl' is not built yet\n");
    return 1;
}
