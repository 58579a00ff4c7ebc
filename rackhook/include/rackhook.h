/*
 * rackhook: move a rackd-managed TCP connection to another process or host.
 *
 * rackhook_checkpoint() captures the connection of a (stopped) process's socket into an opaque,
 * sealed blob; rackhook_restore() turns the blob into a new connected socket on this host, at
 * the same or another address, whose peer continues the same byte stream. rackd does the work:
 * both calls talk to its control socket, $RACKD_CONTROL_SOCKET or /run/rackd/control.sock when
 * that is unset or empty, and need the caller to be root.
 *
 * Errors: calls return -1 and leave a message for rackhook_last_error(). The library never
 * unwinds or aborts on bad arguments; NULL pointers and invalid values are reported as errors.
 *
 * Link with -lrackhook (librackhook.so), or librackhook.a plus -lpthread -ldl -lm.
 * See docs/checkpoint.md in the rackd sources.
 */
#ifndef RACKHOOK_H
#define RACKHOOK_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/*
 * Captures the connection of socket `fd` in process `pid` (stop the process first).
 *
 * On success returns 0 and stores a blob allocated by the library in *blob and its size in
 * *len; free it with rackhook_free(). Afterwards the socket is frozen: it sends nothing, not
 * even when closed, so end the process once the blob is stored safely.
 *
 * On failure returns -1 and sets *blob = NULL, *len = 0 (when those pointers are not NULL).
 */
int rackhook_checkpoint(int pid, int fd, uint8_t **blob, size_t *len);

/*
 * Frees a blob returned by rackhook_checkpoint(), with the length it returned. NULL is ignored.
 */
void rackhook_free(uint8_t *blob, size_t len);

/*
 * Restores the `len` bytes at `blob` into a new connected socket on this host and returns its
 * file descriptor (close-on-exec), or -1 on failure.
 *
 * `local` is an address of this host to bind to, as text ("203.0.113.2", "2001:db8::2"), or
 * NULL for the source address the kernel would use towards the peer. A blob is restored once;
 * a corrupted, truncated, replayed or too old blob is refused.
 */
int rackhook_restore(const uint8_t *blob, size_t len, const char *local /* NULL = default */);

/*
 * The message of this thread's last failed rackhook call, naming the function and what was
 * wrong (for rackd's refusals, rackd's own message); "" after a successful call. Never NULL.
 * Valid until the next rackhook call on the same thread; copy it to keep it.
 */
const char *rackhook_last_error(void);

#ifdef __cplusplus
}
#endif

#endif /* RACKHOOK_H */
