/* Calls every function of rackhook.h with arguments that fail before or at the control socket
 * and prints each result and message, one line per call, for tests/c_abi.rs to compare. */
#include <stdio.h>
#include <string.h>

#include "rackhook.h"

static const uint8_t some_blob[] = {'R', 'K', 'C', 'P', 0, 1};

static void report(const char *what, int rc) {
    printf("%s -> %d: %s\n", what, rc, rackhook_last_error());
}

int main(void) {
    uint8_t *blob = (uint8_t *)some_blob;
    size_t len = 99;
    int rc = rackhook_checkpoint(1, 3, &blob, &len);
    report("checkpoint", rc);
    if (blob != NULL || len != 0) {
        printf("checkpoint left blob=%p len=%zu\n", (void *)blob, len);
        return 1;
    }
    report("checkpoint null len", rackhook_checkpoint(1, 3, &blob, NULL));
    report("checkpoint pid 0", rackhook_checkpoint(0, 3, &blob, &len));
    report("restore", rackhook_restore(some_blob, sizeof some_blob, NULL));
    report("restore null blob", rackhook_restore(NULL, sizeof some_blob, NULL));
    report("restore bad local", rackhook_restore(some_blob, sizeof some_blob, "198.51.100.x"));
    rackhook_free(NULL, 0);
    /* The message belongs to the last call: after a failure it is never empty. */
    if (strlen(rackhook_last_error()) == 0) {
        printf("message lost\n");
        return 1;
    }
    return 0;
}
