/*
 * echoload: a small load generator for TCP echo servers on loopback.
 *
 *   echoload bulk HOST PORT BYTES
 *       One connection.  Writes BYTES of a repeating pattern while reading
 *       the echo back concurrently, checks that every echoed byte is exactly
 *       the byte that was sent at that offset, and prints the throughput
 *       (bytes echoed per second, from connect to the last echoed byte).
 *
 *   echoload pingpong HOST PORT CONNS MSGSIZE SECONDS
 *       CONNS connections.  Each sends a MSGSIZE-byte message, waits for the
 *       whole echo (checked byte for byte), and sends the next one.  After a
 *       warm-up in which every connection completes one round trip, counts
 *       the round trips completed in SECONDS and prints round trips/s.
 *
 * Output is one line of key=value pairs on stdout, for example
 *
 *   mode=bulk bytes=536870912 seconds=0.912 bytes_per_s=588671371 errors=0 cpu=0.35
 *   mode=pingpong conns=100 msgsize=64 seconds=10.000 roundtrips=412345
 *       roundtrips_per_s=41234.5 errors=0 cpu=0.28
 *
 * cpu is the CPU time echoload itself used over the measurement divided by
 * its wall time: near 1.00 means the load generator, not the server, may be
 * the bottleneck.
 *
 * Diagnostics go to stderr.  Exit status: 0 success, 1 the run failed or saw
 * errors, 2 bad usage.
 *
 * Single-threaded, epoll, non-blocking sockets.  HOST must be an IPv4
 * loopback address (127.0.0.0/8): this is a benchmark tool, not a load test
 * for other machines.  Every loop is bounded by a deadline, so the program
 * always stops by itself.
 *
 * Build: gcc -O2 -Wall -Wextra -o echoload echoload.c
 */

#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

/* The pattern byte at stream offset k is k % PATTERN_PERIOD.  The period is
 * prime so that it never lines up with buffer or segment sizes: a dropped,
 * duplicated or reordered chunk shows up as a mismatch. */
#define PATTERN_PERIOD 251

#ifndef IO_CHUNK
#define IO_CHUNK (256 * 1024)
#endif
#define MAX_CONNS 10000
#define MAX_MSGSIZE (1024 * 1024)
#define MAX_BULK_BYTES (64ULL * 1024 * 1024 * 1024)
#define MAX_SECONDS 3600
#define CONNECT_TIMEOUT_S 10
/* Bulk gives up if nothing at all is echoed for this long. */
#define BULK_STALL_TIMEOUT_S 30.0
/* Ping-pong warm-up: every connection must complete one round trip. */
#define WARMUP_TIMEOUT_S 30.0
#define MAX_EVENTS 256

#define LOADGEN_NAME "echoload"
#include "loadgen.h"

static unsigned char *pattern; /* pattern[i] == i % PATTERN_PERIOD */

static int make_pattern(size_t size)
{
    pattern = malloc(size + PATTERN_PERIOD);
    if (pattern == NULL) {
        fprintf(stderr, "echoload: out of memory\n");
        return -1;
    }
    for (size_t i = 0; i < size + PATTERN_PERIOD; i++)
        pattern[i] = (unsigned char)(i % PATTERN_PERIOD);
    return 0;
}

/* The pattern bytes starting at stream offset `offset` (valid for up to the
 * size given to make_pattern). */
static const unsigned char *pattern_at(uint64_t offset)
{
    return pattern + (offset % PATTERN_PERIOD);
}

/* Offset of the first byte of got[0..len) that differs from the pattern at
 * stream offset `offset`, or -1 if they all match. */
static long first_mismatch(const unsigned char *got, size_t len, uint64_t offset)
{
    const unsigned char *want = pattern_at(offset);
    if (memcmp(got, want, len) == 0)
        return -1;
    for (size_t i = 0; i < len; i++)
        if (got[i] != want[i])
            return (long)i;
    return -1;
}

/* ---- bulk ------------------------------------------------------------ */

static int run_bulk(const struct sockaddr_in *addr, uint64_t total)
{
    if (make_pattern(IO_CHUNK) < 0)
        return 1;
    unsigned char *rbuf = malloc(IO_CHUNK);
    if (rbuf == NULL) {
        fprintf(stderr, "echoload: out of memory\n");
        return 1;
    }
    int epfd = epoll_create1(EPOLL_CLOEXEC);
    if (epfd < 0) {
        perror("echoload: epoll_create1");
        return 1;
    }
    double start = now();
    double cpuStart = cpu_seconds();
    int fd = connect_to(addr);
    if (fd < 0)
        return 1;
    if (epoll_set(epfd, EPOLL_CTL_ADD, fd, EPOLLIN | (total ? EPOLLOUT : 0), 0) < 0)
        return 1;

    uint64_t sent = 0, received = 0;
    double lastProgress = start;
    int failed = 0;
    while (received < total && !failed) {
        struct epoll_event ev;
        int n = epoll_wait(epfd, &ev, 1, 1000);
        double t = now();
        if (n < 0 && errno != EINTR) {
            perror("echoload: epoll_wait");
            failed = 1;
            break;
        }
        if (n <= 0) {
            if (t - lastProgress > BULK_STALL_TIMEOUT_S) {
                fprintf(stderr, "echoload: bulk: nothing echoed for %.0f s "
                        "(sent %llu, echoed %llu)\n", BULK_STALL_TIMEOUT_S,
                        (unsigned long long)sent, (unsigned long long)received);
                failed = 1;
            }
            continue;
        }
        if ((ev.events & EPOLLOUT) && sent < total) {
            uint64_t left = total - sent;
            size_t len = left < IO_CHUNK ? (size_t)left : IO_CHUNK;
            ssize_t w = send(fd, pattern_at(sent), len, MSG_NOSIGNAL);
            if (w > 0) {
                sent += (uint64_t)w;
                if (sent == total && epoll_set(epfd, EPOLL_CTL_MOD, fd, EPOLLIN, 0) < 0)
                    failed = 1;
            } else if (w < 0 && errno != EAGAIN && errno != EINTR) {
                perror("echoload: bulk: send");
                failed = 1;
            }
        }
        if (!failed && (ev.events & (EPOLLIN | EPOLLHUP | EPOLLERR))) {
            ssize_t r = recv(fd, rbuf, IO_CHUNK, 0);
            if (r > 0) {
                if (received + (uint64_t)r > sent) {
                    fprintf(stderr, "echoload: bulk: echoed %llu bytes but sent only %llu\n",
                            (unsigned long long)(received + (uint64_t)r),
                            (unsigned long long)sent);
                    failed = 1;
                } else {
                    long bad = first_mismatch(rbuf, (size_t)r, received);
                    if (bad >= 0) {
                        fprintf(stderr, "echoload: bulk: echoed byte %llu is %u, sent %u\n",
                                (unsigned long long)(received + (uint64_t)bad), rbuf[bad],
                                pattern_at(received)[bad]);
                        failed = 1;
                    }
                    received += (uint64_t)r;
                    lastProgress = t;
                }
            } else if (r == 0) {
                fprintf(stderr, "echoload: bulk: server closed after echoing %llu of %llu "
                        "bytes\n", (unsigned long long)received, (unsigned long long)total);
                failed = 1;
            } else if (errno != EAGAIN && errno != EINTR) {
                perror("echoload: bulk: recv");
                failed = 1;
            }
        }
    }
    double elapsed = now() - start;
    double busy = elapsed > 0 ? (cpu_seconds() - cpuStart) / elapsed : 0.0;
    close(fd);
    close(epfd);
    free(rbuf);
    if (failed)
        return 1;
    printf("mode=bulk bytes=%llu seconds=%.6f bytes_per_s=%.0f errors=0 cpu=%.2f\n",
           (unsigned long long)total, elapsed, elapsed > 0 ? (double)total / elapsed : 0.0,
           busy);
    return 0;
}

/* ---- ping-pong --------------------------------------------------------- */

struct conn {
    int fd;            /* -1 once failed or closed */
    uint64_t seq;      /* round trips completed; also picks the message bytes */
    uint32_t sent;     /* bytes of the current message written */
    uint32_t received; /* bytes of the current message echoed */
    int wantOut;       /* EPOLLOUT is armed */
};

static void conn_fail(struct conn *c, int epfd, uint64_t *errors)
{
    epoll_ctl(epfd, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    c->fd = -1;
    (*errors)++;
}

/* Write as much of the current message as the socket takes.  The message of
 * round trip `seq` is the pattern from offset `seq`, so consecutive messages
 * differ.  Returns -1 on a hard error. */
static int conn_send(struct conn *c, int epfd, uint32_t msgsize, uint64_t index)
{
    while (c->sent < msgsize) {
        ssize_t w = send(c->fd, pattern_at(c->seq) + c->sent, msgsize - c->sent,
                         MSG_NOSIGNAL);
        if (w > 0) {
            c->sent += (uint32_t)w;
        } else if (w < 0 && errno == EINTR) {
            continue;
        } else if (w < 0 && errno == EAGAIN) {
            if (!c->wantOut) {
                if (epoll_set(epfd, EPOLL_CTL_MOD, c->fd, EPOLLIN | EPOLLOUT, index) < 0)
                    return -1;
                c->wantOut = 1;
            }
            return 0;
        } else {
            perror("echoload: pingpong: send");
            return -1;
        }
    }
    if (c->wantOut) {
        if (epoll_set(epfd, EPOLL_CTL_MOD, c->fd, EPOLLIN, index) < 0)
            return -1;
        c->wantOut = 0;
    }
    return 0;
}

/* Read what has been echoed of the current message; on a complete echo,
 * count it and send the next message.  Returns 1 if a round trip completed,
 * 0 if not yet, -1 on an error. */
static int conn_receive(struct conn *c, int epfd, uint32_t msgsize, uint64_t index,
                        unsigned char *rbuf)
{
    ssize_t r = recv(c->fd, rbuf, msgsize - c->received, 0);
    if (r < 0) {
        if (errno == EAGAIN || errno == EINTR)
            return 0;
        perror("echoload: pingpong: recv");
        return -1;
    }
    if (r == 0) {
        fprintf(stderr, "echoload: pingpong: connection %llu closed by the server\n",
                (unsigned long long)index);
        return -1;
    }
    if (c->received + (uint32_t)r > c->sent) {
        fprintf(stderr, "echoload: pingpong: connection %llu echoed more than was sent\n",
                (unsigned long long)index);
        return -1;
    }
    long bad = first_mismatch(rbuf, (size_t)r, c->seq + c->received);
    if (bad >= 0) {
        fprintf(stderr, "echoload: pingpong: connection %llu: echoed byte %u of round trip "
                "%llu is wrong\n", (unsigned long long)index,
                c->received + (unsigned)bad, (unsigned long long)c->seq);
        return -1;
    }
    c->received += (uint32_t)r;
    if (c->received < msgsize)
        return 0;
    c->seq++;
    c->sent = 0;
    c->received = 0;
    if (conn_send(c, epfd, msgsize, index) < 0)
        return -1;
    return 1;
}

static int run_pingpong(const struct sockaddr_in *addr, uint64_t nconns, uint32_t msgsize,
                        uint64_t seconds)
{
    if (make_pattern(msgsize) < 0)
        return 1;
    unsigned char *rbuf = malloc(msgsize);
    struct conn *conns = calloc(nconns, sizeof *conns);
    if (rbuf == NULL || conns == NULL) {
        fprintf(stderr, "echoload: out of memory\n");
        return 1;
    }
    int epfd = epoll_create1(EPOLL_CLOEXEC);
    if (epfd < 0) {
        perror("echoload: epoll_create1");
        return 1;
    }
    uint64_t errors = 0, alive = 0;
    for (uint64_t i = 0; i < nconns; i++) {
        conns[i].fd = connect_to(addr);
        if (conns[i].fd < 0) {
            errors++;
            continue;
        }
        if (epoll_set(epfd, EPOLL_CTL_ADD, conns[i].fd, EPOLLIN, i) < 0)
            return 1;
        alive++;
    }
    if (alive == 0) {
        fprintf(stderr, "echoload: pingpong: no connection could be made\n");
        return 1;
    }
    for (uint64_t i = 0; i < nconns; i++)
        if (conns[i].fd >= 0 && conn_send(&conns[i], epfd, msgsize, i) < 0)
            conn_fail(&conns[i], epfd, &errors);

    struct epoll_event events[MAX_EVENTS];
    /* Warm-up: until every live connection has completed one round trip. */
    double warmupEnd = now() + WARMUP_TIMEOUT_S;
    uint64_t warm = 0;
    for (;;) {
        warm = 0;
        alive = 0;
        for (uint64_t i = 0; i < nconns; i++) {
            if (conns[i].fd >= 0) {
                alive++;
                warm += conns[i].seq > 0;
            }
        }
        if (alive == 0 || warm == alive || now() > warmupEnd)
            break;
        int n = epoll_wait(epfd, events, MAX_EVENTS, 100);
        if (n < 0 && errno != EINTR) {
            perror("echoload: epoll_wait");
            return 1;
        }
        for (int k = 0; k < n; k++) {
            uint64_t i = events[k].data.u64;
            struct conn *c = &conns[i];
            if (c->fd < 0)
                continue;
            if ((events[k].events & EPOLLOUT) && conn_send(c, epfd, msgsize, i) < 0) {
                conn_fail(c, epfd, &errors);
                continue;
            }
            if ((events[k].events & (EPOLLIN | EPOLLHUP | EPOLLERR)) &&
                conn_receive(c, epfd, msgsize, i, rbuf) < 0)
                conn_fail(c, epfd, &errors);
        }
    }
    if (alive == 0 || warm < alive) {
        fprintf(stderr, "echoload: pingpong: only %llu of %llu connections completed a "
                "round trip in the warm-up\n", (unsigned long long)warm,
                (unsigned long long)nconns);
        return 1;
    }

    /* Measurement. */
    uint64_t roundtrips = 0;
    double start = now();
    double cpuStart = cpu_seconds();
    double end = start + (double)seconds;
    double t = start;
    while (t < end) {
        int timeout = (int)((end - t) * 1000.0) + 1;
        int n = epoll_wait(epfd, events, MAX_EVENTS, timeout);
        if (n < 0 && errno != EINTR) {
            perror("echoload: epoll_wait");
            return 1;
        }
        for (int k = 0; k < n; k++) {
            uint64_t i = events[k].data.u64;
            struct conn *c = &conns[i];
            if (c->fd < 0)
                continue;
            if ((events[k].events & EPOLLOUT) && conn_send(c, epfd, msgsize, i) < 0) {
                conn_fail(c, epfd, &errors);
                continue;
            }
            if (events[k].events & (EPOLLIN | EPOLLHUP | EPOLLERR)) {
                int done = conn_receive(c, epfd, msgsize, i, rbuf);
                if (done < 0)
                    conn_fail(c, epfd, &errors);
                else
                    roundtrips += (uint64_t)done;
            }
        }
        t = now();
    }
    double elapsed = t - start;
    double busy = elapsed > 0 ? (cpu_seconds() - cpuStart) / elapsed : 0.0;
    for (uint64_t i = 0; i < nconns; i++)
        if (conns[i].fd >= 0)
            close(conns[i].fd);
    close(epfd);
    free(conns);
    free(rbuf);
    printf("mode=pingpong conns=%llu msgsize=%u seconds=%.3f roundtrips=%llu "
           "roundtrips_per_s=%.1f errors=%llu cpu=%.2f\n",
           (unsigned long long)nconns, msgsize, elapsed, (unsigned long long)roundtrips,
           elapsed > 0 ? (double)roundtrips / elapsed : 0.0, (unsigned long long)errors, busy);
    return errors ? 1 : 0;
}

static int usage(void)
{
    fprintf(stderr,
            "usage: echoload bulk HOST PORT BYTES\n"
            "       echoload pingpong HOST PORT CONNS MSGSIZE SECONDS\n"
            "HOST must be an IPv4 loopback address (127.x.y.z).\n");
    return 2;
}

int main(int argc, char **argv)
{
    struct sockaddr_in addr;
    signal(SIGPIPE, SIG_IGN);
    if (argc == 5 && strcmp(argv[1], "bulk") == 0) {
        uint64_t total;
        if (parse_addr(argv[2], argv[3], &addr) < 0 ||
            parse_u64(argv[4], "BYTES", 1, MAX_BULK_BYTES, &total) < 0)
            return usage();
        return run_bulk(&addr, total);
    }
    if (argc == 7 && strcmp(argv[1], "pingpong") == 0) {
        uint64_t nconns, msgsize, seconds;
        if (parse_addr(argv[2], argv[3], &addr) < 0 ||
            parse_u64(argv[4], "CONNS", 1, MAX_CONNS, &nconns) < 0 ||
            parse_u64(argv[5], "MSGSIZE", 1, MAX_MSGSIZE, &msgsize) < 0 ||
            parse_u64(argv[6], "SECONDS", 1, MAX_SECONDS, &seconds) < 0)
            return usage();
        return run_pingpong(&addr, nconns, (uint32_t)msgsize, seconds);
    }
    return usage();
}
