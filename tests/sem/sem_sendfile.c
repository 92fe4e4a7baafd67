/* tests/sem/sem_sendfile.c - sendfile() from a regular file into a socket: with and without
 * an offset pointer, counts past the end of the file, non-blocking sockets, errors. The echo
 * server returns what arrives and a reader thread checks it byte for byte against the file.
 * Every expectation is what Linux does; run.sh proves it by running this on the kernel. */
#include "sem.h"

#include <sys/sendfile.h>
#include <sys/stat.h>

#define FILE_BYTES ((3 << 20) + 123)

static int file_fd = -1;

/* A temporary file holding FILE_BYTES of the pattern, opened for reading. */
static int make_file(void)
{
    char path[] = "/tmp/sem_sendfile.XXXXXX";
    int fd = mkstemp(path);
    if (fd < 0)
        return -1;
    unlink(path);
    static char buf[65536];
    for (size_t off = 0; off < FILE_BYTES;) {
        size_t n = FILE_BYTES - off < sizeof buf ? FILE_BYTES - off : sizeof buf;
        sem_fill(buf, off, n);
        if (write(fd, buf, n) != (ssize_t)n)
            return -1;
        off += n;
    }
    return fd;
}

struct reader {
    pthread_t t;
    int fd;
    size_t want;
    off_t file_off;
    size_t got;
    long bad;
    int err;
};

static void *read_back(void *arg)
{
    struct reader *r = arg;
    static char buf[65536];
    r->bad = -1;
    while (r->got < r->want) {
        size_t n = r->want - r->got < sizeof buf ? r->want - r->got : sizeof buf;
        ssize_t k = sem_read_full(r->fd, buf, n, 10000);
        if (k <= 0) {
            r->err = k < 0 ? errno : EPIPE;
            return NULL;
        }
        long b = sem_check_pat(buf, (size_t)r->file_off + r->got, (size_t)k);
        if (b >= 0) {
            r->bad = (long)r->got + b;
            return NULL;
        }
        r->got += (size_t)k;
    }
    return NULL;
}

static int reader_start(struct reader *r, int fd, size_t want, off_t file_off)
{
    memset(r, 0, sizeof *r);
    r->fd = fd;
    r->want = want;
    r->file_off = file_off;
    return pthread_create(&r->t, NULL, read_back, r);
}

/* Sends [off, off + count) with repeated sendfile calls through an offset pointer; returns
 * the total, stopping at EOF (a 0 return). */
static long send_range(int s, off_t off, size_t count, off_t *end_off)
{
    long total = 0;
    while ((size_t)total < count) {
        ssize_t n = sendfile(s, file_fd, &off, count - (size_t)total);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -1;
        if (n == 0)
            break;
        total += n;
    }
    *end_off = off;
    return total;
}

/* Without an offset pointer sendfile reads from, and advances, the file position. */
static void no_offset_pointer(void)
{
    int s = sem_connect_peer(SEM_P_ECHO);
    CHECK(s >= 0, "connect");
    CHECK(lseek(file_fd, 0, SEEK_SET) == 0, "lseek");
    struct reader r;
    CHECK(reader_start(&r, s, FILE_BYTES, 0) == 0, "pthread_create");
    long total = 0;
    int err = 0;
    for (;;) {
        ssize_t n = sendfile(s, file_fd, NULL, 1 << 20);
        if (n <= 0) {
            err = n < 0 ? errno : 0;
            break;
        }
        total += n;
    }
    pthread_join(r.t, NULL);
    errno = err;
    CHECK(err == 0 && total == FILE_BYTES, "sent %ld of %d", total, FILE_BYTES);
    CHECK(lseek(file_fd, 0, SEEK_CUR) == FILE_BYTES, "file position not advanced");
    CHECK(r.bad < 0, "byte %ld differs", r.bad);
    CHECK(r.got == FILE_BYTES, "echoed %zu (%s)", r.got, sem_ename(r.err));
}

/* With an offset pointer: the offset advances, the file position does not. */
static void offset_pointer(void)
{
    int s = sem_connect_peer(SEM_P_ECHO);
    CHECK(s >= 0, "connect");
    CHECK(lseek(file_fd, 0, SEEK_SET) == 0, "lseek");
    struct reader r;
    CHECK(reader_start(&r, s, 5000, 1000) == 0, "pthread_create");
    off_t end = 0;
    long total = send_range(s, 1000, 5000, &end);
    int err = errno;
    pthread_join(r.t, NULL);
    errno = err;
    CHECK(total == 5000, "sent %ld", total);
    CHECK(end == 6000, "offset %lld after, want 6000", (long long)end);
    CHECK(lseek(file_fd, 0, SEEK_CUR) == 0, "file position moved");
    CHECK(r.bad < 0 && r.got == 5000, "echo: %zu bytes, bad at %ld", r.got, r.bad);
}

/* A count past the end of the file sends up to the end; then sendfile returns 0. */
static void count_past_eof(void)
{
    int s = sem_connect_peer(SEM_P_ECHO);
    CHECK(s >= 0, "connect");
    off_t off = FILE_BYTES - 10000;
    struct reader r;
    CHECK(reader_start(&r, s, 10000, off) == 0, "pthread_create");
    ssize_t first = sendfile(s, file_fd, &off, 1 << 30);
    int err = errno;
    long total = first;
    off_t end = off;
    if (first > 0 && first < 10000)
        total += send_range(s, off, 10000 - (size_t)first, &end);
    else if (first == 10000)
        end = off;
    pthread_join(r.t, NULL);
    errno = err;
    CHECK(first > 0, "sendfile returned %zd", first);
    CHECK(total == 10000 && end == FILE_BYTES, "sent %ld, offset %lld", total, (long long)end);
    CHECK(sendfile(s, file_fd, &end, 100) == 0, "sendfile at EOF is not 0");
    CHECK(r.bad < 0 && r.got == 10000, "echo: %zu bytes, bad at %ld", r.got, r.bad);
}

static void count_zero(void)
{
    int s = sem_connect_peer(SEM_P_ECHO);
    CHECK(s >= 0, "connect");
    off_t off = 0;
    CHECK(sendfile(s, file_fd, &off, 0) == 0 && off == 0, "sendfile of 0 bytes");
}

/* On a non-blocking socket towards a peer that never reads: partial counts, then EAGAIN. */
static void nonblocking(void)
{
    int s = sem_connect_peer(SEM_P_SINK);
    CHECK(s >= 0, "connect");
    CHECK_OK(fcntl(s, F_SETFL, O_NONBLOCK));
    off_t off = 0;
    ssize_t n = sendfile(s, file_fd, &off, FILE_BYTES);
    CHECK(n > 0 && n < FILE_BYTES, "first sendfile returned %zd", n);
    CHECK(off == n, "offset %lld after %zd bytes", (long long)off, n);
    /* Full for good once two calls 300 ms apart both say EAGAIN (ACKs free room for a
     * while after the first). */
    double end = sem_ms() + 15000;
    int eagains = 0;
    while (eagains < 2 && sem_ms() < end && off < FILE_BYTES) {
        n = sendfile(s, file_fd, &off, FILE_BYTES - (size_t)off);
        if (n < 0 && errno == EAGAIN) {
            if (++eagains < 2)
                sem_sleep_ms(300);
            continue;
        }
        CHECK(n > 0, "sendfile returned %zd", n);
        eagains = 0;
    }
    CHECK(eagains == 2, "never full (offset %lld)", (long long)off);
    off_t before = off;
    CHECK_ERR(sendfile(s, file_fd, &off, 4096), EAGAIN);
    CHECK(off == before, "offset moved on EAGAIN");
}

static void errors(void)
{
    int s = sem_connect_peer(SEM_P_DISCARD);
    CHECK(s >= 0, "connect");
    off_t off = -1;
    CHECK_ERR(sendfile(s, file_fd, &off, 10), EINVAL);
    int closed = socket(AF_INET, SOCK_STREAM, 0);
    close(closed);
    off = 0;
    CHECK_ERR(sendfile(closed, file_fd, &off, 10), EBADF);
    CHECK_ERR(sendfile(s, closed, &off, 10), EBADF);
    char path[] = "/tmp/sem_sendfile_wo.XXXXXX";
    int w = sem_track(mkstemp(path));
    CHECK(w >= 0, "mkstemp");
    int wo = sem_track(open(path, O_WRONLY));
    unlink(path);
    CHECK(wo >= 0, "open O_WRONLY");
    CHECK_ERR(sendfile(s, wo, &off, 10), EBADF); /* not open for reading */
}

/* Into a socket that never connected: EPIPE, and SIGPIPE (sendfile has no MSG_NOSIGNAL). */
static void unconnected(void)
{
    int s = sem_tcp(0);
    off_t off = 0;
    int before = sem_sigpipes;
    CHECK_ERR(sendfile(s, file_fd, &off, 10), EPIPE);
    CHECK(sem_sigpipes == before + 1, "%d SIGPIPEs, want 1", sem_sigpipes - before);
    CHECK(off == 0, "offset moved");
}

/* A socket as the source: Linux (6.x) splices from it like from a file. */
static void socket_as_source(void)
{
    int s = sem_connect_peer(SEM_P_ECHO);
    CHECK(s >= 0, "connect");
    CHECK(send(s, "abc", 3, 0) == 3 && (sem_wait_fd(s, POLLIN, 5000) & POLLIN), "echo");
    sem_sleep_ms(50);
    int p[2];
    CHECK_OK(pipe(p));
    sem_track(p[0]);
    sem_track(p[1]);
    CHECK(sendfile(p[1], s, NULL, 3) == 3, "sendfile from a socket into a pipe");
    char buf[4];
    CHECK(read(p[0], buf, 4) == 3 && !memcmp(buf, "abc", 3), "pipe data");
    off_t off = 0;
    CHECK_ERR(sendfile(p[1], s, &off, 3), ESPIPE); /* a socket has no offset */
}

int main(void)
{
    sem_init("sem_sendfile", 9);
    file_fd = make_file();
    if (file_fd < 0) {
        perror("sem_sendfile: temporary file");
        return 2;
    }
    SEM_RUN(no_offset_pointer);
    SEM_RUN(offset_pointer);
    SEM_RUN(count_past_eof);
    SEM_RUN(count_zero);
    SEM_RUN(nonblocking);
    SEM_RUN(errors);
    SEM_RUN(unconnected);
    SEM_RUN(socket_as_source);
    return sem_done();
}
