/* A connection moved through the C ABI, one role per run (tests/live.rs runs each in its host):
 *   serve PORT              accept one connection; answer "one" with "echo: one" and "queued",
 *                           "two" with "echo: two"; print what it got and exit
 *   connect ADDR PORT       send "one", read the echo, print the socket's fd, stop (SIGSTOP)
 *   checkpoint PID FD FILE  rackhook_checkpoint into FILE
 *   resume FILE             restore a corrupted copy (refused), FILE, FILE again (refused); send
 *                           "two" on the restored socket and print the lines that arrive
 * Lines are read a byte at a time so that nothing unread is consumed before a checkpoint. */
#define _POSIX_C_SOURCE 200809L
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "rackhook.h"

static void fail(const char *what) {
    perror(what);
    exit(1);
}

static void send_line(int fd, const char *line) {
    size_t len = strlen(line);
    if (write(fd, line, len) != (ssize_t)len) fail("write");
}

/* Reads one line without its newline into buf (size n); exits on EOF or error. */
static void read_line(int fd, char *buf, size_t n) {
    size_t i = 0;
    for (;;) {
        char c;
        ssize_t r = read(fd, &c, 1);
        if (r != 1) fail(r == 0 ? "read: end of stream" : "read");
        if (c == '\n' || i + 1 == n) break;
        buf[i++] = c;
    }
    buf[i] = '\0';
}

static int serve(int port) {
    int l = socket(AF_INET, SOCK_STREAM, 0), on = 1;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &on, sizeof on);
    if (bind(l, (struct sockaddr *)&a, sizeof a) || listen(l, 1)) fail("listen");
    printf("listening\n");
    fflush(stdout);
    int s = accept(l, NULL, NULL);
    if (s < 0) fail("accept");
    char one[64], two[64];
    read_line(s, one, sizeof one);
    send_line(s, "echo: one\nqueued\n");
    read_line(s, two, sizeof two);
    send_line(s, "echo: two\n");
    printf("server got: %s %s\n", one, two);
    return 0;
}

static int connect_and_stop(const char *addr, int port) {
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    if (inet_pton(AF_INET, addr, &a.sin_addr) != 1) fail("address");
    if (connect(s, (struct sockaddr *)&a, sizeof a)) fail("connect");
    send_line(s, "one\n");
    char line[64];
    read_line(s, line, sizeof line);
    printf("connected fd=%d got=%s\n", s, line);
    fflush(stdout);
    raise(SIGSTOP);
    printf("continued without a restore\n");
    return 1;
}

static int checkpoint(int pid, int fd, const char *file) {
    uint8_t *blob;
    size_t len;
    if (rackhook_checkpoint(pid, fd, &blob, &len) != 0) {
        printf("checkpoint failed: %s\n", rackhook_last_error());
        return 1;
    }
    FILE *f = fopen(file, "wb");
    if (!f || fwrite(blob, 1, len, f) != len || fclose(f)) fail(file);
    rackhook_free(blob, len);
    printf("checkpoint: %zu bytes\n", len);
    return 0;
}

static int resume(const char *file) {
    static uint8_t blob[1 << 20];
    FILE *f = fopen(file, "rb");
    if (!f) fail(file);
    size_t len = fread(blob, 1, sizeof blob, f);
    fclose(f);
    blob[len / 2] ^= 1;
    int rc = rackhook_restore(blob, len, NULL);
    printf("corrupted: %d %s\n", rc, rackhook_last_error());
    blob[len / 2] ^= 1;
    int s = rackhook_restore(blob, len, NULL);
    if (s < 0) {
        printf("restore failed: %s\n", rackhook_last_error());
        return 1;
    }
    rc = rackhook_restore(blob, len, NULL);
    printf("replayed: %d %s\n", rc, rackhook_last_error());
    send_line(s, "two\n");
    char first[64], second[64];
    read_line(s, first, sizeof first);
    read_line(s, second, sizeof second);
    printf("resumed got: %s | %s\n", first, second);
    return 0;
}

int main(int argc, char **argv) {
    if (argc == 3 && !strcmp(argv[1], "serve")) return serve(atoi(argv[2]));
    if (argc == 4 && !strcmp(argv[1], "connect")) return connect_and_stop(argv[2], atoi(argv[3]));
    if (argc == 5 && !strcmp(argv[1], "checkpoint"))
        return checkpoint(atoi(argv[2]), atoi(argv[3]), argv[4]);
    if (argc == 3 && !strcmp(argv[1], "resume")) return resume(argv[2]);
    fprintf(stderr, "usage: see the comment at the top of move.c\n");
    return 2;
}
