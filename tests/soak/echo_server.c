/*
 * echo_server.c - a small epoll echo server for the soak tests, meant to run under
 * LD_PRELOAD=libustack.so: listens on PORT, accepts until its fds run out, echoes what each
 * connection sends and closes on EOF. Prints "listening" once ready and, on SIGUSR1, the
 * number of open connections on stderr. SIGTERM ends it.
 *
 * Usage: echo_server PORT
 */
#define _GNU_SOURCE
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

static volatile sig_atomic_t report, stop;

static void on_usr1(int s)
{
    (void)s;
    report = 1;
}

static void on_term(int s)
{
    (void)s;
    stop = 1;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: echo_server PORT\n");
        return 2;
    }
    signal(SIGUSR1, on_usr1);
    signal(SIGTERM, on_term);
    signal(SIGPIPE, SIG_IGN);
    int ls = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    int one = 1;
    setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(argv[1]))};
    if (ls < 0 || bind(ls, (struct sockaddr *)&a, sizeof a) < 0 || listen(ls, 4096) < 0) {
        perror("echo_server: listen");
        return 1;
    }
    int ep = epoll_create1(0);
    struct epoll_event ev = {.events = EPOLLIN, .data.fd = ls};
    epoll_ctl(ep, EPOLL_CTL_ADD, ls, &ev);
    printf("listening\n");
    fflush(stdout);
    long open_conns = 0;
    char buf[4096];
    while (!stop) {
        struct epoll_event evs[256];
        int k = epoll_wait(ep, evs, 256, 500);
        if (report) {
            report = 0;
            fprintf(stderr, "echo_server: %ld connections\n", open_conns);
        }
        for (int i = 0; i < k; i++) {
            int fd = evs[i].data.fd;
            if (fd == ls) {
                for (;;) {
                    int c = accept4(ls, NULL, NULL, SOCK_NONBLOCK);
                    if (c < 0) {
                        if (errno == EMFILE || errno == ENFILE) {
                            /* Out of fds: stop watching the listener for a moment. */
                            usleep(1000);
                        }
                        break;
                    }
                    struct epoll_event cev = {.events = EPOLLIN, .data.fd = c};
                    epoll_ctl(ep, EPOLL_CTL_ADD, c, &cev);
                    open_conns++;
                }
                continue;
            }
            ssize_t n = read(fd, buf, sizeof buf);
            if (n > 0) {
                if (write(fd, buf, (size_t)n) != n)
                    fprintf(stderr, "echo_server: short write\n");
            } else if (n == 0 || errno != EAGAIN) {
                epoll_ctl(ep, EPOLL_CTL_DEL, fd, NULL);
                close(fd);
                open_conns--;
            }
        }
    }
    return 0;
}
