/*
 * gonote.c - a C program that looks like a Go program to libustack.so (tests/net/
 * test_preload.sh "go"): built with -DGO_NOTE it carries the note the Go linker puts in
 * every Go executable (owner "Go", type 4: the build ID) in a PT_NOTE segment; built without
 * it, it is an ordinary C program. Either way it makes a TCP socket through libc, connects
 * it to argv[1]:argv[2] (IPv4), and prints what /proc/self/fd says the socket is
 * ("socket:[...]" for a kernel socket, "anon_inode:[eventfd]" for one ustack serves) and
 * the connect's outcome.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#ifdef GO_NOTE
/* namesz 4 ("Go\0\0"), descsz 8, type 4, then the 8 bytes of a (made-up) build ID. */
__asm__(".pushsection .note.go.buildid, \"a\", @note\n"
        ".balign 4\n"
        ".long 4, 8, 4\n"
        ".asciz \"Go\"\n"
        ".byte 0\n"
        ".ascii \"gonote00\"\n"
        ".popsection\n");
#endif

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: %s ipv4 port\n", argv[0]);
        return 2;
    }
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) {
        printf("socket: %s\n", strerror(errno));
        return 1;
    }
    char path[64], what[128];
    snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
    ssize_t n = readlink(path, what, sizeof(what) - 1);
    what[n < 0 ? 0 : n] = 0;
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(argv[2]))};
    if (inet_pton(AF_INET, argv[1], &sa.sin_addr) != 1) {
        fprintf(stderr, "%s: not an IPv4 address\n", argv[1]);
        return 2;
    }
    int rc = connect(fd, (struct sockaddr *)&sa, sizeof(sa));
    printf("fd %s connect %s\n", what, rc == 0 ? "ok" : strerror(errno));
    close(fd);
    return 0;
}
