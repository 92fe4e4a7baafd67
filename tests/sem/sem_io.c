/* tests/sem/sem_io.c - data transfer calls: read/write, readv/writev, sendmsg/recvmsg,
 * sendmmsg/recvmmsg, MSG_PEEK, MSG_WAITALL, MSG_TRUNC, FIONREAD/SIOCOUTQ, large byte-exact
 * transfers, TCP_NODELAY/TCP_CORK/MSG_MORE, stdio over a socket. Every expectation is what Linux
 * does; run.sh proves it by running this on the kernel. */
#include "sem.h"

#include <limits.h>
#include <linux/sockios.h>
#include <sys/ioctl.h>
#include <sys/uio.h>

/* Waits until FIONREAD reports at least n bytes; returns the count or -1. */
static int wait_inq(int fd, int n)
{
    double end = sem_ms() + 5000;
    int q = -1;
    while (sem_ms() < end) {
        if (ioctl(fd, FIONREAD, &q) < 0)
            return -1;
        if (q >= n)
            return q;
        sem_wait_fd(fd, POLLIN, 20);
        sem_sleep_ms(5);
    }
    return q;
}

static void read_write(void)
{
    int fd = sem_connect_peer(SEM_P_ECHO);
    CHECK(fd >= 0, "connect");
    CHECK(write(fd, "hello", 5) == 5, "write");
    char buf[8];
    CHECK(wait_inq(fd, 5) == 5, "FIONREAD");
    CHECK(read(fd, buf, sizeof buf) == 5 && !memcmp(buf, "hello", 5), "read");
}

static void readv_writev(void)
{
    int fd = sem_connect_peer(SEM_P_ECHO);
    CHECK(fd >= 0, "connect");
    struct iovec out[3] = {{"abc", 3}, {"", 0}, {"defgh", 5}};
    CHECK(writev(fd, out, 3) == 8, "writev");
    CHECK(wait_inq(fd, 8) == 8, "FIONREAD");
    char a[3], b[10];
    struct iovec in[2] = {{a, sizeof a}, {b, sizeof b}};
    CHECK(readv(fd, in, 2) == 8, "readv");
    CHECK(!memcmp(a, "abc", 3) && !memcmp(b, "defgh", 5), "readv scatter");
    CHECK(readv(fd, in, 0) == 0, "readv of no iovecs");
    CHECK(writev(fd, out, 0) == 0, "writev of no iovecs");
    static struct iovec many[IOV_MAX + 1];
    CHECK_ERR(writev(fd, many, IOV_MAX + 1), EINVAL);
}

/* recvmsg: no address (namelen 0), no control data (controllen 0), no flags. */
static void sendmsg_recvmsg(void)
{
    int fd = sem_connect_peer(SEM_P_ECHO);
    CHECK(fd >= 0, "connect");
    struct iovec out[2] = {{"12", 2}, {"345", 3}};
    struct msghdr m = {.msg_iov = out, .msg_iovlen = 2};
    CHECK(sendmsg(fd, &m, 0) == 5, "sendmsg");
    CHECK(wait_inq(fd, 5) == 5, "FIONREAD");
    char buf[8], ctl[64];
    struct sockaddr_in from;
    struct iovec in = {buf, sizeof buf};
    struct msghdr r = {.msg_name = &from,
                       .msg_namelen = sizeof from,
                       .msg_iov = &in,
                       .msg_iovlen = 1,
                       .msg_control = ctl,
                       .msg_controllen = sizeof ctl,
                       .msg_flags = -1};
    CHECK(recvmsg(fd, &r, 0) == 5 && !memcmp(buf, "12345", 5), "recvmsg");
    CHECK(r.msg_namelen == 0, "msg_namelen %u", r.msg_namelen);
    CHECK(r.msg_controllen == 0, "msg_controllen %zu", (size_t)r.msg_controllen);
    CHECK(r.msg_flags == 0, "msg_flags %#x", r.msg_flags);
}

/* sendmmsg sends every message; recvmmsg fills one message per read until the queue is
 * empty (MSG_WAITFORONE: only the first may wait). */
static void mmsg(void)
{
    int fd = sem_connect_peer(SEM_P_ECHO);
    CHECK(fd >= 0, "connect");
    struct iovec o[3] = {{"abc", 3}, {"defg", 4}, {"hij", 3}};
    struct mmsghdr om[3];
    memset(om, 0, sizeof om);
    for (int i = 0; i < 3; i++) {
        om[i].msg_hdr.msg_iov = &o[i];
        om[i].msg_hdr.msg_iovlen = 1;
    }
    CHECK(sendmmsg(fd, om, 3, 0) == 3, "sendmmsg");
    CHECK(om[0].msg_len == 3 && om[1].msg_len == 4 && om[2].msg_len == 3, "msg_len %u %u %u",
          om[0].msg_len, om[1].msg_len, om[2].msg_len);
    CHECK(wait_inq(fd, 10) == 10, "FIONREAD");
    char b[4][4];
    struct iovec in[4];
    struct mmsghdr im[4];
    memset(im, 0, sizeof im);
    for (int i = 0; i < 4; i++) {
        in[i] = (struct iovec){b[i], 4};
        im[i].msg_hdr.msg_iov = &in[i];
        im[i].msg_hdr.msg_iovlen = 1;
    }
    int n = recvmmsg(fd, im, 4, MSG_WAITFORONE, NULL);
    CHECK(n == 3, "recvmmsg returned %d, want 3", n);
    CHECK(im[0].msg_len == 4 && im[1].msg_len == 4 && im[2].msg_len == 2, "lens %u %u %u",
          im[0].msg_len, im[1].msg_len, im[2].msg_len);
    CHECK(!memcmp(b[0], "abcd", 4) && !memcmp(b[1], "efgh", 4) && !memcmp(b[2], "ij", 2),
          "recvmmsg data");
    CHECK_ERR(recvmmsg(fd, im, 4, MSG_DONTWAIT, NULL), EAGAIN);
}

static void msg_peek(void)
{
    int fd = sem_connect_peer(SEM_P_ECHO);
    CHECK(fd >= 0, "connect");
    CHECK(send(fd, "peekaboo", 8, 0) == 8, "send");
    CHECK(wait_inq(fd, 8) == 8, "FIONREAD");
    char buf[16];
    CHECK(recv(fd, buf, 4, MSG_PEEK) == 4 && !memcmp(buf, "peek", 4), "peek 4");
    CHECK(recv(fd, buf, sizeof buf, MSG_PEEK) == 8 && !memcmp(buf, "peekaboo", 8), "peek all");
    int q = -1;
    CHECK(ioctl(fd, FIONREAD, &q) == 0 && q == 8, "FIONREAD after peek %d", q);
    CHECK(recv(fd, buf, sizeof buf, 0) == 8 && !memcmp(buf, "peekaboo", 8), "recv after peek");
    CHECK_ERR(recv(fd, buf, sizeof buf, MSG_PEEK | MSG_DONTWAIT), EAGAIN);
}

struct delayed {
    int fd, ms;
    const char *data;
    size_t len;
};

static void *send_later(void *arg)
{
    struct delayed *d = arg;
    sem_sleep_ms(d->ms);
    (void)sem_write_all(d->fd, d->data, d->len);
    return NULL;
}

/* MSG_WAITALL waits for the whole count across separate arrivals. */
static void msg_waitall(void)
{
    int fd = sem_connect_peer(SEM_P_ECHO);
    CHECK(fd >= 0, "connect");
    static char out[1000], in[1000];
    sem_fill(out, 0, sizeof out);
    CHECK(send(fd, out, 500, 0) == 500, "first half");
    struct delayed d = {fd, 150, out + 500, 500};
    pthread_t t;
    CHECK(pthread_create(&t, NULL, send_later, &d) == 0, "pthread_create");
    ssize_t n = recv(fd, in, sizeof in, MSG_WAITALL);
    pthread_join(t, NULL);
    CHECK(n == 1000, "recv MSG_WAITALL returned %zd", n);
    CHECK(sem_check_pat(in, 0, 1000) < 0, "data");
}

/* MSG_WAITALL returns short at EOF. */
static void waitall_eof(void)
{
    int fd = sem_connect_peer(SEM_P_BULK);
    CHECK(fd >= 0, "connect");
    size_t want = 2 * SEM_BULK_BYTES;
    char *buf = malloc(want);
    CHECK(buf, "malloc");
    ssize_t n = recv(fd, buf, want, MSG_WAITALL);
    long bad = n > 0 ? sem_check_pat(buf, 0, (size_t)n) : -1;
    free(buf);
    CHECK(n == SEM_BULK_BYTES, "recv MSG_WAITALL returned %zd, want %d", n, SEM_BULK_BYTES);
    CHECK(bad < 0, "byte %ld differs", bad);
}

/* For TCP, MSG_TRUNC discards the bytes instead of copying them. */
static void msg_trunc(void)
{
    int fd = sem_connect_peer(SEM_P_ECHO);
    CHECK(fd >= 0, "connect");
    CHECK(send(fd, "abcdef", 6, 0) == 6, "send");
    CHECK(wait_inq(fd, 6) == 6, "FIONREAD");
    char buf[8] = "xxxxxxx";
    CHECK(recv(fd, buf, 3, MSG_TRUNC) == 3, "recv MSG_TRUNC");
    CHECK(!memcmp(buf, "xxx", 3), "MSG_TRUNC copied data");
    CHECK(recv(fd, buf, sizeof buf, 0) == 3 && !memcmp(buf, "def", 3), "the rest");
}

/* FIONREAD/SIOCINQ count queued bytes; SIOCOUTQ drains to 0 once acknowledged; a listener
 * has no queue (EINVAL); a fresh socket reads 0. */
static void ioctls(void)
{
    int fresh = sem_tcp(0), q = -1;
    CHECK(ioctl(fresh, FIONREAD, &q) == 0 && q == 0, "FIONREAD on a fresh socket %d", q);
    int fd = sem_connect_peer(SEM_P_ECHO);
    CHECK(fd >= 0, "connect");
    static char buf[100];
    sem_fill(buf, 0, sizeof buf);
    CHECK(send(fd, buf, sizeof buf, 0) == 100, "send");
    CHECK(wait_inq(fd, 100) == 100, "FIONREAD");
    q = -1;
    CHECK(ioctl(fd, SIOCINQ, &q) == 0 && q == 100, "SIOCINQ %d", q);
    double end = sem_ms() + 2000;
    do
        CHECK_OK(ioctl(fd, SIOCOUTQ, &q));
    while (q != 0 && sem_ms() < end);
    CHECK(q == 0, "SIOCOUTQ %d", q);
    CHECK(recv(fd, buf, 40, 0) == 40, "recv");
    CHECK(ioctl(fd, FIONREAD, &q) == 0 && q == 60, "FIONREAD after a partial read %d", q);
    int l = sem_listen_self(0, 0);
    CHECK(l >= 0, "listen");
    CHECK_ERR(ioctl(l, FIONREAD, &q), EINVAL);
}

struct writer {
    int fd;
    size_t total, chunk;
    int err;
};

static void *write_pattern(void *arg)
{
    struct writer *w = arg;
    char *buf = malloc(w->chunk);
    for (size_t off = 0; buf && off < w->total; off += w->chunk) {
        sem_fill(buf, off, w->chunk);
        /* A blocking send moves the whole chunk or fails. */
        ssize_t n = send(w->fd, buf, w->chunk, MSG_NOSIGNAL);
        if (n != (ssize_t)w->chunk) {
            w->err = n < 0 ? errno : EMSGSIZE;
            break;
        }
    }
    free(buf);
    return NULL;
}

/* 16 MiB through echo, sent in 1 MiB calls by one thread and read back by another. */
static void echo_16mib(void)
{
    int fd = sem_connect_peer(SEM_P_ECHO);
    CHECK(fd >= 0, "connect");
    struct writer w = {fd, 16 << 20, 1 << 20, 0};
    pthread_t t;
    CHECK(pthread_create(&t, NULL, write_pattern, &w) == 0, "pthread_create");
    static char buf[99991];
    size_t got = 0;
    long bad = -1;
    int err = 0;
    double t0 = sem_ms();
    while (got < w.total && bad < 0) {
        ssize_t n =
            sem_read_full(fd, buf, sizeof buf < w.total - got ? sizeof buf : w.total - got, 10000);
        if (n <= 0) {
            err = n < 0 ? errno : EPIPE;
            break;
        }
        bad = sem_check_pat(buf, got, (size_t)n);
        if (bad >= 0)
            bad += (long)got;
        got += (size_t)n;
    }
    if (got < w.total)
        shutdown(fd, SHUT_RDWR); /* unblocks the writer */
    pthread_join(t, NULL);
    errno = err;
    CHECK(bad < 0, "byte %ld differs", bad);
    CHECK(got == w.total, "read %zu of %zu bytes", got, w.total);
    CHECK(w.err == 0, "writer: %s", sem_ename(w.err));
    printf("# echo_16mib: %.0f ms\n", sem_ms() - t0);
}

/* 1 MiB from the bulk server read with odd-sized read() calls, then EOF. */
static void bulk_odd_reads(void)
{
    int fd = sem_connect_peer(SEM_P_BULK);
    CHECK(fd >= 0, "connect");
    static char buf[4099];
    size_t got = 0, size = 1;
    for (;;) {
        CHECK(sem_wait_fd(fd, POLLIN, 5000) & POLLIN, "stalled at %zu", got);
        ssize_t n = read(fd, buf, size);
        CHECK(n >= 0, "read at %zu", got);
        if (n == 0)
            break;
        long bad = sem_check_pat(buf, got, (size_t)n);
        CHECK(bad < 0, "byte %zu differs", got + (size_t)bad);
        got += (size_t)n;
        size = size % sizeof buf + 7;
    }
    CHECK(got == SEM_BULK_BYTES, "read %zu bytes", got);
}

/* TCP_NODELAY, TCP_CORK and MSG_MORE are accepted and the data still flows. */
static void nodelay_cork_more(void)
{
    int fd = sem_connect_peer(SEM_P_ECHO);
    CHECK(fd >= 0, "connect");
    int one = 1, zero = 0, v = -1;
    socklen_t l = sizeof v;
    CHECK_OK(setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one));
    CHECK(send(fd, "n", 1, 0) == 1, "send with TCP_NODELAY");
    char buf[8];
    CHECK(sem_read_full(fd, buf, 1, 5000) == 1 && buf[0] == 'n', "echo");
    CHECK_OK(setsockopt(fd, IPPROTO_TCP, TCP_CORK, &one, sizeof one));
    CHECK_OK(getsockopt(fd, IPPROTO_TCP, TCP_CORK, &v, &l));
    CHECK(v == 1, "TCP_CORK reads %d", v);
    CHECK(send(fd, "ab", 2, 0) == 2 && send(fd, "cd", 2, 0) == 2, "send corked");
    CHECK_OK(setsockopt(fd, IPPROTO_TCP, TCP_CORK, &zero, sizeof zero));
    double t0 = sem_ms();
    CHECK(sem_read_full(fd, buf, 4, 5000) == 4 && !memcmp(buf, "abcd", 4), "echo after uncork");
    CHECK(sem_ms() - t0 < 1000, "uncorked data took %.0f ms", sem_ms() - t0);
    CHECK(send(fd, "ef", 2, MSG_MORE) == 2 && send(fd, "gh", 2, 0) == 2, "MSG_MORE");
    CHECK(sem_read_full(fd, buf, 4, 5000) == 4 && !memcmp(buf, "efgh", 4), "echo after MSG_MORE");
}

/* The discard server swallows 4 MiB in one blocking send. */
static void big_blocking_send(void)
{
    int fd = sem_connect_peer(SEM_P_DISCARD);
    CHECK(fd >= 0, "connect");
    size_t n = 4 << 20;
    char *buf = calloc(1, n);
    CHECK(buf, "calloc");
    ssize_t r = send(fd, buf, n, 0);
    int e = errno;
    free(buf);
    errno = e;
    CHECK(r == (ssize_t)n, "send returned %zd", r);
}

/* stdio over a socket (fdopen): the stream's fileno is the socket (programs poll it), and
 * fprintf/fflush and fgets carry the bytes; fclose closes the socket. */
static void fdopen_stream(void)
{
    int fd = sem_connect_peer(SEM_P_ECHO);
    CHECK(fd >= 0, "connect");
    FILE *f = fdopen(fd, "r+");
    CHECK(f, "fdopen");
    CHECK(fileno(f) == fd, "fileno %d of a stream over fd %d", fileno(f), fd);
    CHECK(fprintf(f, "line %d\n", 1) == 7 && fflush(f) == 0, "fprintf and fflush");
    char line[32];
    CHECK(fgets(line, sizeof line, f) && !strcmp(line, "line 1\n"), "fgets of the echo");
    CHECK(fclose(f) == 0, "fclose");
    CHECK_ERR(fcntl(fd, F_GETFD), EBADF);
}

int main(void)
{
    sem_init("sem_io", 5);
    SEM_RUN(read_write);
    SEM_RUN(readv_writev);
    SEM_RUN(sendmsg_recvmsg);
    SEM_RUN(mmsg);
    SEM_RUN(msg_peek);
    SEM_RUN(msg_waitall);
    SEM_RUN(waitall_eof);
    SEM_RUN(msg_trunc);
    SEM_RUN(ioctls);
    SEM_RUN(echo_16mib);
    SEM_RUN(bulk_odd_reads);
    SEM_RUN(nodelay_cork_more);
    SEM_RUN(big_blocking_send);
    SEM_RUN(fdopen_stream);
    return sem_done();
}
