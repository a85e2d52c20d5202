/* cmd_plot.c -- placeholder until the command is written. */
#include "cli.h"
#include <stdio.h>
int cmd_plot(int argc, char **argv) {
    (void)argc; (void)argv;
    fprintf(stderr, "layermap: 'plot' is not built yet\n");
    return 1;
}
