/*
 * What the load generators (echoload.c, chatload.c) share: the clock, CPU
 * time, argument parsing, connecting and epoll registration.
 *
 * Include it after defining LOADGEN_NAME (the program's name, for messages)
 * and CONNECT_TIMEOUT_S (seconds a connect may take).
 */

#ifndef LOADGEN_H
#define LOADGEN_H

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
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

/* Seconds on the monotonic clock. */
static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* CPU seconds (user + system) this process has used so far. */
static double cpu_seconds(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
           (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

static int parse_u64(const char *s, const char *what, uint64_t min, uint64_t max,
                     uint64_t *out)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || end == s || *end != '\0' || s[0] == '-' || v < min || v > max) {
        fprintf(stderr, LOADGEN_NAME ": %s must be an integer from %llu to %llu, not %s\n",
                what, (unsigned long long)min, (unsigned long long)max, s);
        return -1;
    }
    *out = v;
    return 0;
}

static int parse_addr(const char *host, const char *port, struct sockaddr_in *addr)
{
    uint64_t p;
    memset(addr, 0, sizeof *addr);
    addr->sin_family = AF_INET;
    if (inet_pton(AF_INET, host, &addr->sin_addr) != 1) {
        fprintf(stderr, LOADGEN_NAME ": HOST must be an IPv4 address, not %s\n", host);
        return -1;
    }
    if ((ntohl(addr->sin_addr.s_addr) >> 24) != 127) {
        fprintf(stderr, LOADGEN_NAME ": HOST must be a loopback address (127.x.y.z), not %s\n",
                host);
        return -1;
    }
    if (parse_u64(port, "PORT", 1, 65535, &p) < 0)
        return -1;
    addr->sin_port = htons((uint16_t)p);
    return 0;
}

/* A connected, non-blocking TCP socket with TCP_NODELAY, or -1. */
static int connect_to(const struct sockaddr_in *addr)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        perror(LOADGEN_NAME ": socket");
        return -1;
    }
    /* Linux bounds a blocking connect() by the send timeout. */
    struct timeval tv = {.tv_sec = CONNECT_TIMEOUT_S, .tv_usec = 0};
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    if (connect(fd, (const struct sockaddr *)addr, sizeof *addr) < 0) {
        perror(LOADGEN_NAME ": connect");
        close(fd);
        return -1;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    int flags = fcntl(fd, F_GETFL, 0);
    if (flags < 0 || fcntl(fd, F_SETFL, flags | O_NONBLOCK) < 0) {
        perror(LOADGEN_NAME ": fcntl");
        close(fd);
        return -1;
    }
    return fd;
}

static int epoll_set(int epfd, int op, int fd, uint32_t events, uint64_t data)
{
    struct epoll_event ev;
    memset(&ev, 0, sizeof ev);
    ev.events = events;
    ev.data.u64 = data;
    if (epoll_ctl(epfd, op, fd, &ev) < 0) {
        perror(LOADGEN_NAME ": epoll_ctl");
        return -1;
    }
    return 0;
}

#endif
