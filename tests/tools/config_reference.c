/* Prints the generated config reference (the part of docs/config.md between its markers). */

#include <stdio.h>

#include "config/config.h"

int main(void)
{
    ad_config_write_reference(stdout);
    return ferror(stdout) ? 1 : 0;
}
