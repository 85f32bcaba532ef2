/*
 * chatload: a fan-out load generator for line-based chat servers on loopback.
 *
 *   chatload fanout HOST PORT CLIENTS SENDERS MESSAGES [PAYLOAD_BYTES]
 *                   [--rate LINES_PER_S] [--stall SECONDS]
 *
 * Connects CLIENTS clients named u0 .. u<CLIENTS-1> (each sends its name as
 * its first line) and waits until every one was told it is in a room (a line
 * starting with "*** you are in").  Then the first SENDERS clients each send
 * MESSAGES lines
 *
 *   m SENDER SEQ SEND_TIME_NS PADDING
 *
 * PAYLOAD_BYTES long (default 64; CRLF not counted), SEND_TIME_NS from
 * CLOCK_MONOTONIC when the line is made, PADDING letters that depend on SEQ
 * and their position.  The server must deliver each line to every other
 * client as "uSENDER: <the line>" with CRLF.  Every client (senders too)
 * checks what it receives:
 *
 *   - for each (receiver, sender) pair, SEQ must arrive as 0, 1, 2, ...
 *     exactly once; a line whose SEQ is not the next one expected counts as
 *     misordered (a duplicate, a late line, or one after a gap);
 *   - a line that is not "uS: m S SEQ TS PADDING" with matching S, the
 *     exact length and padding, a plausible TS, CRLF at the end, and not
 *     from the receiver itself, counts as misframed;
 *   - a line starting with "! " is an error line from the server (counted,
 *     the first few printed); other lines starting with "*** " (notices
 *     such as joins) or "* " (actions) and "[history]" lines are ignored;
 *   - delivery latency is the receive time minus SEND_TIME_NS, kept in a
 *     log-scale histogram (about 3% resolution) for p50 / p99 / max.
 *
 * Expected deliveries: SENDERS x MESSAGES x (CLIENTS - 1).  Lines still
 * missing at the end are lost.  The run ends when every connected client has
 * everything, or when nothing at all has been sent or delivered for the
 * stall time (default 30 s), or after MAX_RUN_S.  A connection the server
 * closes is counted (closed=): the lines it has not received are lost, and
 * if it was a sender, so are its lines that others have not received (the
 * run no longer waits for them).
 *
 * Senders write as fast as their sockets take lines (each keeps its own send
 * buffer), or, with --rate, each sends LINES_PER_S lines a second (the
 * senders staggered evenly), stamping a line when it is made: time a line
 * waits in the sender's buffer because the server does not read counts as
 * latency.
 *
 * Output is one line of key=value pairs on stdout, for example
 *
 *   mode=fanout clients=1000 senders=10 messages=1000 payload=64 rate=0
 *       delivered=9990000 expected=9990000 lost=0 misframed=0 misordered=0
 *       errors=0 closed=0 seconds=21.503 lines_per_s=464582 p50_ms=10412.11
 *       p99_ms=20611.02 max_ms=21002.31 cpu=0.52 setup_s=1.204
 *
 * seconds runs from the first line sent to the last line delivered, and
 * lines_per_s is delivered / seconds.  cpu is the CPU time chatload itself
 * used over the same wall time: near 1.00 means the load generator, not the
 * server, may be the bottleneck.  setup_s is the time it took to connect and
 * register every client, before the first line was sent.
 *
 * Diagnostics go to stderr.  Exit status: 0 every line delivered in order
 * with no error line; 1 the run could not be made (nothing on stdout), or it
 * ran but lines were lost, misframed or misordered, the server sent error
 * lines or closed connections (the key=value line is still printed); 2 bad
 * usage.
 *
 * Single-threaded, epoll, non-blocking sockets.  HOST must be an IPv4
 * loopback address (127.0.0.0/8): this is a benchmark tool, not a load test
 * for other machines.  Every loop is bounded by a deadline, so the program
 * always stops by itself.
 *
 * Build: gcc -O2 -Wall -Wextra -o chatload chatload.c
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

#define MAX_CLIENTS 10000
#define MAX_MESSAGES 10000000
#define MIN_PAYLOAD 48
#define DEFAULT_PAYLOAD 64
#define MAX_PAYLOAD 4000
#define MAX_RATE 1000000
#define DEFAULT_STALL_S 30
#define MAX_STALL_S 600
/* The whole run (registration not included) never takes longer than this. */
#define MAX_RUN_S 1800.0
#define CONNECT_TIMEOUT_S 10
/* Connecting every client must be done in this time... */
#define CONNECT_PHASE_TIMEOUT_S 120.0
/* ...and registering them, after the last connect, in this one. */
#define REGISTER_TIMEOUT_S 30.0
/* After the last expected line, lines are still read (and checked) for this
 * long, so that duplicates of the last lines are seen. */
#define DRAIN_S 0.2
/* Receive buffer shared by all connections, and the most a sender's buffer
 * is filled at a time when sending unpaced. */
#define READ_CHUNK (256 * 1024)
#define SEND_CHUNK (64 * 1024)
/* A received line longer than this (CRLF included) is misframed. */
#define MAX_LINE (MAX_PAYLOAD + 64)
#define MAX_EVENTS 256

#define LOADGEN_NAME "chatload"
#include "loadgen.h"
/* Error lines and closed connections printed on stderr, at most. */
#define MAX_REPORTS 5

/* Latency histogram: values below 16 ns have a bucket each; above, each
 * power of two is split into 16 buckets. */
#define HIST_SUB_BITS 4
#define HIST_SUB (1 << HIST_SUB_BITS)
#define HIST_BUCKETS (HIST_SUB + (64 - HIST_SUB_BITS) * HIST_SUB)

/* Letters of the padding: the byte at text offset j of line SEQ is
 * letters[(SEQ + j) % 26]. */
static char letters[26 + MAX_PAYLOAD + 64];

struct client {
    int fd;                /* -1 once closed */
    int registered;        /* told "*** you are in ..." */
    int discarding;        /* skipping the rest of an over-long line */
    uint32_t partialLen;   /* bytes of an unfinished line in partial */
    char *partial;         /* MAX_LINE bytes */
    uint32_t *next;        /* per sender: the SEQ expected next */
    uint32_t incomplete;   /* senders whose lines have not all arrived */
};

struct sender {
    uint64_t seq;          /* lines made so far */
    char *out;             /* bytes made but not yet sent: out[outOff..outLen) */
    size_t outOff, outLen, outCap;
    int wantOut;           /* EPOLLOUT is armed */
    int closed;            /* its connection was closed: no more lines */
};

struct run {
    int epfd;
    uint32_t nclients, nsenders, messages, payload;
    uint64_t rate;         /* lines/s per sender; 0 = as fast as possible */
    double stall;
    struct client *clients;
    struct sender *senders;
    char *rbuf;
    uint64_t startNs;      /* first line made */
    uint64_t lastDeliveryNs;
    uint64_t registered, delivered, misframed, misordered, errors, closed;
    uint64_t incompleteClients; /* connected clients still missing lines */
    uint64_t hist[HIST_BUCKETS];
    uint64_t maxLatency;
    int progress;          /* something was sent or delivered since checked */
};

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

/* Raise the soft limit on open files to what CLIENTS needs, if allowed. */
static int ensure_fd_limit(uint64_t nclients)
{
    struct rlimit rl;
    rlim_t want = (rlim_t)nclients + 32;
    if (getrlimit(RLIMIT_NOFILE, &rl) < 0) {
        perror("chatload: getrlimit");
        return -1;
    }
    if (rl.rlim_cur >= want)
        return 0;
    if (rl.rlim_max != RLIM_INFINITY && rl.rlim_max < want) {
        fprintf(stderr, "chatload: %llu clients need %llu open files, the limit is %llu "
                "(ulimit -n)\n", (unsigned long long)nclients, (unsigned long long)want,
                (unsigned long long)rl.rlim_max);
        return -1;
    }
    rl.rlim_cur = want;
    if (setrlimit(RLIMIT_NOFILE, &rl) < 0) {
        perror("chatload: setrlimit");
        return -1;
    }
    return 0;
}

/* ---- latency histogram --------------------------------------------------- */

static unsigned hist_index(uint64_t v)
{
    if (v < HIST_SUB)
        return (unsigned)v;
    unsigned msb = 63u - (unsigned)__builtin_clzll(v);
    unsigned mantissa = (unsigned)(v >> (msb - HIST_SUB_BITS)) & (HIST_SUB - 1);
    return HIST_SUB + (msb - HIST_SUB_BITS) * HIST_SUB + mantissa;
}

/* The middle of bucket i's range, in ns. */
static double hist_value(unsigned i)
{
    if (i < HIST_SUB)
        return (double)i;
    unsigned msb = (i - HIST_SUB) / HIST_SUB + HIST_SUB_BITS;
    unsigned mantissa = (i - HIST_SUB) % HIST_SUB;
    double low = (double)(HIST_SUB + mantissa) * (double)(1ULL << (msb - HIST_SUB_BITS));
    return low + (double)(1ULL << (msb - HIST_SUB_BITS)) / 2.0;
}

/* The latency (ms) below which a share q of the recorded ones fall. */
static double hist_quantile(const struct run *run, double q)
{
    uint64_t total = 0;
    for (unsigned i = 0; i < HIST_BUCKETS; i++)
        total += run->hist[i];
    if (total == 0)
        return 0.0;
    uint64_t rank = (uint64_t)(q * (double)total);
    if (rank >= total)
        rank = total - 1;
    uint64_t seen = 0;
    double value = (double)run->maxLatency;
    for (unsigned i = 0; i < HIST_BUCKETS; i++) {
        seen += run->hist[i];
        if (seen > rank) {
            value = hist_value(i);
            break;
        }
    }
    /* A bucket's middle can lie above the largest value recorded. */
    if (value > (double)run->maxLatency)
        value = (double)run->maxLatency;
    return value / 1e6;
}

/* ---- receiving ------------------------------------------------------------ */

/* Parse decimal digits at *p (at least one, at most 20), advancing *p. */
static int parse_digits(const char **p, const char *end, uint64_t *out)
{
    const char *s = *p;
    uint64_t v = 0;
    int n = 0;
    while (s < end && *s >= '0' && *s <= '9' && n < 20) {
        v = v * 10 + (uint64_t)(*s - '0');
        s++;
        n++;
    }
    if (n == 0 || (n > 1 && **p == '0'))
        return -1;
    *p = s;
    *out = v;
    return 0;
}

static void report_line(const char *what, uint32_t r, const char *line, size_t len)
{
    if (len > 200)
        len = 200;
    fprintf(stderr, "chatload: u%u got %s: %.*s\n", r, what, (int)len, line);
}

/* One line received by client r, CRLF included (len >= 1, ends with LF). */
static void handle_line(struct run *run, uint32_t r, const char *line, size_t len,
                        uint64_t t)
{
    struct client *c = &run->clients[r];
    if (len < 2 || line[len - 2] != '\r') {
        if (run->misframed++ < MAX_REPORTS)
            report_line("a line not ending with CRLF", r, line, len - 1);
        return;
    }
    len -= 2;
    const char *end = line + len;
    if (len >= 2 && line[0] == '*') {
        if (!c->registered && len >= 14 && memcmp(line, "*** you are in", 14) == 0) {
            c->registered = 1;
            run->registered++;
        }
        return;
    }
    if (len >= 9 && memcmp(line, "[history]", 9) == 0)
        return;
    if (len >= 2 && line[0] == '!' && line[1] == ' ') {
        if (run->errors++ < MAX_REPORTS)
            report_line("an error line", r, line, len);
        return;
    }
    /* uA: m S SEQ TS PADDING */
    const char *p = line;
    uint64_t from, sender, seq, ts;
    if (p == end || *p++ != 'u' || parse_digits(&p, end, &from) < 0 || end - p < 2 ||
        p[0] != ':' || p[1] != ' ')
        goto misframed;
    p += 2;
    const char *text = p;
    if ((size_t)(end - text) != run->payload || p[0] != 'm' || p[1] != ' ')
        goto misframed;
    p += 2;
    if (parse_digits(&p, end, &sender) < 0 || p == end || *p++ != ' ' ||
        parse_digits(&p, end, &seq) < 0 || p == end || *p++ != ' ' ||
        parse_digits(&p, end, &ts) < 0 || p == end || *p++ != ' ')
        goto misframed;
    if (from != sender || sender >= run->nsenders || sender == r || seq >= run->messages ||
        ts < run->startNs || ts > t)
        goto misframed;
    size_t offset = (size_t)(p - text);
    if (memcmp(p, letters + (seq + offset) % 26, (size_t)(end - p)) != 0)
        goto misframed;

    uint64_t latency = t - ts;
    run->hist[hist_index(latency)]++;
    if (latency > run->maxLatency)
        run->maxLatency = latency;
    uint32_t *next = &c->next[sender];
    if (seq == *next) {
        run->delivered++;
        run->lastDeliveryNs = t;
        run->progress = 1;
        (*next)++;
    } else if (seq > *next) {
        /* The lines between were skipped: they count as lost unless they
         * come later, and then they are misordered too. */
        run->misordered++;
        run->delivered++;
        run->lastDeliveryNs = t;
        run->progress = 1;
        *next = (uint32_t)seq + 1;
    } else {
        run->misordered++;
        return;
    }
    if (*next == run->messages && !run->senders[sender].closed && --c->incomplete == 0)
        run->incompleteClients--;
    return;

misframed:
    if (run->misframed++ < MAX_REPORTS)
        report_line("a misframed line", r, line, len);
}

/* Split what client r received into lines. */
static void client_data(struct run *run, uint32_t r, const char *data, size_t len,
                        uint64_t t)
{
    struct client *c = &run->clients[r];
    size_t pos = 0;
    while (pos < len) {
        const char *lf = memchr(data + pos, '\n', len - pos);
        size_t seg = lf ? (size_t)(lf - (data + pos)) + 1 : len - pos;
        if (c->discarding) {
            c->discarding = lf == NULL;
        } else if (c->partialLen == 0 && lf != NULL) {
            handle_line(run, r, data + pos, seg, t);
        } else if (c->partialLen + seg > MAX_LINE) {
            if (run->misframed++ < MAX_REPORTS)
                fprintf(stderr, "chatload: u%u got a line over %d bytes\n", r, MAX_LINE);
            c->partialLen = 0;
            c->discarding = lf == NULL;
        } else {
            memcpy(c->partial + c->partialLen, data + pos, seg);
            c->partialLen += (uint32_t)seg;
            if (lf != NULL) {
                handle_line(run, r, c->partial, c->partialLen, t);
                c->partialLen = 0;
            }
        }
        pos += seg;
    }
}

static void client_closed(struct run *run, uint32_t r, const char *why)
{
    struct client *c = &run->clients[r];
    if (run->closed++ < MAX_REPORTS)
        fprintf(stderr, "chatload: u%u: %s\n", r, why);
    epoll_ctl(run->epfd, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    c->fd = -1;
    if (c->incomplete > 0) {
        c->incomplete = 0;
        run->incompleteClients--;
    }
    if (r >= run->nsenders || run->senders[r].closed)
        return;
    /* A sender that is gone sends no more: nobody waits for the rest of its
     * lines (they are lost).  Lines it sent before may still arrive and are
     * counted. */
    run->senders[r].closed = 1;
    for (uint32_t i = 0; i < run->nclients; i++) {
        struct client *other = &run->clients[i];
        if (other->fd >= 0 && other->next[r] < run->messages && --other->incomplete == 0)
            run->incompleteClients--;
    }
}

/* Read once from client r.  Returns -1 if it was closed. */
static int client_read(struct run *run, uint32_t r)
{
    struct client *c = &run->clients[r];
    ssize_t n = recv(c->fd, run->rbuf, READ_CHUNK, 0);
    if (n > 0) {
        client_data(run, r, run->rbuf, (size_t)n, now_ns());
        return 0;
    }
    if (n < 0 && (errno == EAGAIN || errno == EINTR))
        return 0;
    if (n == 0) {
        client_closed(run, r, "closed by the server");
    } else {
        char why[128];
        snprintf(why, sizeof why, "recv: %s", strerror(errno));
        client_closed(run, r, why);
    }
    return -1;
}

/* ---- sending --------------------------------------------------------------- */

/* Append sender s's next line to its buffer, stamped now. */
static int make_line(struct run *run, uint32_t s)
{
    struct sender *snd = &run->senders[s];
    size_t need = run->payload + 2;
    if (snd->outLen + need > snd->outCap) {
        if (snd->outOff > 0) {
            memmove(snd->out, snd->out + snd->outOff, snd->outLen - snd->outOff);
            snd->outLen -= snd->outOff;
            snd->outOff = 0;
        }
        if (snd->outLen + need > snd->outCap) {
            size_t cap = snd->outCap * 2 + need;
            char *out = realloc(snd->out, cap);
            if (out == NULL) {
                fprintf(stderr, "chatload: out of memory\n");
                return -1;
            }
            snd->out = out;
            snd->outCap = cap;
        }
    }
    char *line = snd->out + snd->outLen;
    uint64_t seq = snd->seq;
    int h = snprintf(line, need, "m %u %llu %llu ", s, (unsigned long long)seq,
                     (unsigned long long)now_ns());
    if (h < 0 || (size_t)h >= run->payload) {
        fprintf(stderr, "chatload: PAYLOAD_BYTES %u is too short for the line header\n",
                run->payload);
        return -1;
    }
    memcpy(line + h, letters + (seq + (uint64_t)h) % 26, run->payload - (size_t)h);
    line[run->payload] = '\r';
    line[run->payload + 1] = '\n';
    snd->outLen += need;
    snd->seq++;
    return 0;
}

/* Write what the socket takes of sender s's buffer, arming EPOLLOUT while
 * bytes are left over.  Unpaced, first refill the buffer.  Returns -1 on a
 * hard error (the client is then closed). */
static int sender_flush(struct run *run, uint32_t s)
{
    struct sender *snd = &run->senders[s];
    struct client *c = &run->clients[s];
    if (c->fd < 0)
        return -1;
    for (;;) {
        if (run->rate == 0)
            while (snd->outLen - snd->outOff < SEND_CHUNK && snd->seq < run->messages)
                if (make_line(run, s) < 0)
                    return -1;
        size_t left = snd->outLen - snd->outOff;
        if (left == 0)
            break;
        ssize_t w = send(c->fd, snd->out + snd->outOff, left, MSG_NOSIGNAL);
        if (w > 0) {
            snd->outOff += (size_t)w;
            run->progress = 1;
            if (snd->outOff == snd->outLen)
                snd->outOff = snd->outLen = 0;
        } else if (w < 0 && errno == EINTR) {
            continue;
        } else if (w < 0 && errno == EAGAIN) {
            if (!snd->wantOut) {
                if (epoll_set(run->epfd, EPOLL_CTL_MOD, c->fd, EPOLLIN | EPOLLOUT, s) < 0)
                    return -1;
                snd->wantOut = 1;
            }
            return 0;
        } else {
            char why[128];
            snprintf(why, sizeof why, "send: %s", strerror(errno));
            client_closed(run, s, why);
            return -1;
        }
    }
    if (snd->wantOut) {
        if (epoll_set(run->epfd, EPOLL_CTL_MOD, c->fd, EPOLLIN, s) < 0)
            return -1;
        snd->wantOut = 0;
    }
    return 0;
}

/* Paced: make every line of sender s that is due by t.  Line k of sender s
 * is due k / rate (+ s / (senders * rate)) seconds after the start. */
static int sender_pace(struct run *run, uint32_t s, uint64_t t)
{
    struct sender *snd = &run->senders[s];
    int made = 0;
    while (snd->seq < run->messages) {
        double due = ((double)snd->seq + (double)s / run->nsenders) / (double)run->rate;
        if ((double)run->startNs + due * 1e9 > (double)t)
            break;
        if (make_line(run, s) < 0)
            return -1;
        made = 1;
    }
    return made ? sender_flush(run, s) : 0;
}

/* Milliseconds until the next paced line is due (0 if one is), or -1 if
 * every line has been made. */
static int next_due_ms(const struct run *run, uint64_t t)
{
    double soonest = -1.0;
    for (uint32_t s = 0; s < run->nsenders; s++) {
        const struct sender *snd = &run->senders[s];
        if (snd->seq >= run->messages || run->clients[s].fd < 0)
            continue;
        double due = (double)run->startNs +
                     ((double)snd->seq + (double)s / run->nsenders) / (double)run->rate * 1e9;
        if (soonest < 0 || due < soonest)
            soonest = due;
    }
    if (soonest < 0)
        return -1;
    if (soonest <= (double)t)
        return 0;
    return (int)((soonest - (double)t) / 1e6) + 1;
}

/* ---- the run ---------------------------------------------------------------- */

/* Handle the events of one epoll_wait. */
static void handle_events(struct run *run, struct epoll_event *events, int n)
{
    for (int k = 0; k < n; k++) {
        uint32_t i = (uint32_t)events[k].data.u64;
        if (run->clients[i].fd < 0)
            continue;
        if (events[k].events & (EPOLLIN | EPOLLHUP | EPOLLERR))
            if (client_read(run, i) < 0)
                continue;
        if ((events[k].events & EPOLLOUT) && i < run->nsenders)
            sender_flush(run, i);
    }
}

static int wait_events(struct run *run, struct epoll_event *events, int timeoutMs)
{
    int n = epoll_wait(run->epfd, events, MAX_EVENTS, timeoutMs);
    if (n < 0 && errno != EINTR) {
        perror("chatload: epoll_wait");
        return -1;
    }
    if (n > 0)
        handle_events(run, events, n);
    return 0;
}

static int connect_all(struct run *run, const struct sockaddr_in *addr,
                       struct epoll_event *events)
{
    double deadline = now() + CONNECT_PHASE_TIMEOUT_S;
    for (uint32_t i = 0; i < run->nclients; i++) {
        if (now() > deadline) {
            fprintf(stderr, "chatload: only %u of %u clients connected in %.0f s\n", i,
                    run->nclients, CONNECT_PHASE_TIMEOUT_S);
            return -1;
        }
        struct client *c = &run->clients[i];
        c->fd = connect_to(addr);
        if (c->fd < 0) {
            fprintf(stderr, "chatload: client %u of %u could not connect\n", i + 1,
                    run->nclients);
            return -1;
        }
        if (epoll_set(run->epfd, EPOLL_CTL_ADD, c->fd, EPOLLIN, i) < 0)
            return -1;
        /* Read greetings now and then. */
        if (i % 32 == 31 && wait_events(run, events, 0) < 0)
            return -1;
        if (run->closed > 0 || run->errors > 0) {
            fprintf(stderr, "chatload: the server refused a client while connecting\n");
            return -1;
        }
    }
    /* Then every client gives its name, all at once: a server that batches
     * its output can then tell many clients about many joins in one send,
     * and setting up takes less time. */
    for (uint32_t i = 0; i < run->nclients; i++) {
        char name[32];
        int len = snprintf(name, sizeof name, "u%u\r\n", i);
        if (send(run->clients[i].fd, name, (size_t)len, MSG_NOSIGNAL) != len) {
            perror("chatload: sending a name");
            return -1;
        }
    }
    double registerDeadline = now() + REGISTER_TIMEOUT_S;
    while (run->registered < run->nclients) {
        if (run->closed > 0 || run->errors > 0 || run->misframed > 0) {
            fprintf(stderr, "chatload: the server refused or garbled a registration\n");
            return -1;
        }
        if (now() > registerDeadline) {
            fprintf(stderr, "chatload: only %llu of %u clients were told they are in a "
                    "room within %.0f s\n", (unsigned long long)run->registered,
                    run->nclients, REGISTER_TIMEOUT_S);
            return -1;
        }
        if (wait_events(run, events, 100) < 0)
            return -1;
    }
    return 0;
}

static int run_fanout(const struct sockaddr_in *addr, struct run *run)
{
    for (size_t i = 0; i < sizeof letters; i++)
        letters[i] = (char)('a' + i % 26);
    if (ensure_fd_limit(run->nclients) < 0)
        return 1;
    run->clients = calloc(run->nclients, sizeof *run->clients);
    run->senders = calloc(run->nsenders, sizeof *run->senders);
    run->rbuf = malloc(READ_CHUNK);
    uint32_t *nexts = calloc((size_t)run->nclients * run->nsenders, sizeof *nexts);
    if (run->clients == NULL || run->senders == NULL || run->rbuf == NULL || nexts == NULL) {
        fprintf(stderr, "chatload: out of memory\n");
        return 1;
    }
    for (uint32_t i = 0; i < run->nclients; i++) {
        struct client *c = &run->clients[i];
        c->fd = -1;
        c->next = nexts + (size_t)i * run->nsenders;
        c->incomplete = run->nsenders - (i < run->nsenders ? 1 : 0);
        c->partial = malloc(MAX_LINE);
        if (c->partial == NULL) {
            fprintf(stderr, "chatload: out of memory\n");
            return 1;
        }
        if (c->incomplete > 0)
            run->incompleteClients++;
    }
    /* A sender expects nothing from itself. */
    for (uint32_t s = 0; s < run->nsenders; s++)
        run->clients[s].next[s] = run->messages;
    run->epfd = epoll_create1(EPOLL_CLOEXEC);
    if (run->epfd < 0) {
        perror("chatload: epoll_create1");
        return 1;
    }
    struct epoll_event events[MAX_EVENTS];
    double setupStart = now();
    if (connect_all(run, addr, events) < 0)
        return 1;

    /* Measurement. */
    run->startNs = now_ns();
    run->lastDeliveryNs = run->startNs;
    double cpuStart = cpu_seconds();
    double start = (double)run->startNs / 1e9;
    double lastProgress = start;
    double t = start;
    int stalled = 0;
    if (run->rate == 0) {
        for (uint32_t s = 0; s < run->nsenders; s++)
            sender_flush(run, s);
    }
    while (run->incompleteClients > 0 && t - start < MAX_RUN_S) {
        int timeout = 100;
        if (run->rate > 0) {
            int due = next_due_ms(run, now_ns());
            if (due >= 0 && due < timeout)
                timeout = due;
        }
        if (wait_events(run, events, timeout) < 0)
            return 1;
        if (run->rate > 0) {
            uint64_t tn = now_ns();
            for (uint32_t s = 0; s < run->nsenders; s++)
                if (run->clients[s].fd >= 0 && sender_pace(run, s, tn) < 0 &&
                    run->clients[s].fd >= 0)
                    return 1;
        }
        t = now();
        if (run->progress) {
            run->progress = 0;
            lastProgress = t;
        } else if (t - lastProgress > run->stall) {
            stalled = 1;
            break;
        }
    }
    double end = now();
    double busy = end > start ? (cpu_seconds() - cpuStart) / (end - start) : 0.0;
    if (stalled)
        fprintf(stderr, "chatload: nothing sent or delivered for %.0f s; giving up\n",
                run->stall);
    else if (run->incompleteClients > 0)
        fprintf(stderr, "chatload: the run took over %.0f s; giving up\n", MAX_RUN_S);
    else {
        /* Look for duplicates of the last lines. */
        double drainEnd = now() + DRAIN_S;
        while ((t = now()) < drainEnd)
            if (wait_events(run, events, (int)((drainEnd - t) * 1000.0) + 1) < 0)
                return 1;
    }

    uint64_t expected = (uint64_t)run->nsenders * run->messages * (run->nclients - 1);
    uint64_t lost = expected - run->delivered;
    double seconds = (double)(run->lastDeliveryNs - run->startNs) / 1e9;
    printf("mode=fanout clients=%u senders=%u messages=%u payload=%u rate=%llu "
           "delivered=%llu expected=%llu lost=%llu misframed=%llu misordered=%llu "
           "errors=%llu closed=%llu seconds=%.3f lines_per_s=%.0f p50_ms=%.2f "
           "p99_ms=%.2f max_ms=%.2f cpu=%.2f setup_s=%.3f\n",
           run->nclients, run->nsenders, run->messages, run->payload,
           (unsigned long long)run->rate, (unsigned long long)run->delivered,
           (unsigned long long)expected, (unsigned long long)lost,
           (unsigned long long)run->misframed, (unsigned long long)run->misordered,
           (unsigned long long)run->errors, (unsigned long long)run->closed, seconds,
           seconds > 0 ? (double)run->delivered / seconds : 0.0,
           hist_quantile(run, 0.50), hist_quantile(run, 0.99),
           (double)run->maxLatency / 1e6, busy, start - setupStart);
    fflush(stdout);
    for (uint32_t i = 0; i < run->nclients; i++)
        if (run->clients[i].fd >= 0)
            close(run->clients[i].fd);
    close(run->epfd);
    if (lost || run->misframed || run->misordered || run->errors || run->closed) {
        fprintf(stderr, "chatload: %llu lost, %llu misframed, %llu misordered, %llu error "
                "lines, %llu connections closed by the server\n", (unsigned long long)lost,
                (unsigned long long)run->misframed, (unsigned long long)run->misordered,
                (unsigned long long)run->errors, (unsigned long long)run->closed);
        return 1;
    }
    return 0;
}

static int usage(void)
{
    fprintf(stderr,
            "usage: chatload fanout HOST PORT CLIENTS SENDERS MESSAGES [PAYLOAD_BYTES]\n"
            "                [--rate LINES_PER_S] [--stall SECONDS]\n"
            "HOST must be an IPv4 loopback address (127.x.y.z); SENDERS <= CLIENTS,\n"
            "CLIENTS >= 2; PAYLOAD_BYTES from %d to %d (default %d); --rate is per\n"
            "sender (default: as fast as the server reads); --stall (default %d s).\n",
            MIN_PAYLOAD, MAX_PAYLOAD, DEFAULT_PAYLOAD, DEFAULT_STALL_S);
    return 2;
}

int main(int argc, char **argv)
{
    struct sockaddr_in addr;
    static struct run run;
    const char *positional[7];
    int npositional = 0;
    uint64_t rate = 0, stall = DEFAULT_STALL_S;
    signal(SIGPIPE, SIG_IGN);
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--rate") == 0 && i + 1 < argc) {
            if (parse_u64(argv[++i], "--rate", 1, MAX_RATE, &rate) < 0)
                return usage();
        } else if (strcmp(argv[i], "--stall") == 0 && i + 1 < argc) {
            if (parse_u64(argv[++i], "--stall", 1, MAX_STALL_S, &stall) < 0)
                return usage();
        } else if (argv[i][0] == '-' || npositional == 7) {
            return usage();
        } else {
            positional[npositional++] = argv[i];
        }
    }
    if ((npositional != 6 && npositional != 7) || strcmp(positional[0], "fanout") != 0)
        return usage();
    uint64_t nclients, nsenders, messages, payload = DEFAULT_PAYLOAD;
    if (parse_addr(positional[1], positional[2], &addr) < 0 ||
        parse_u64(positional[3], "CLIENTS", 2, MAX_CLIENTS, &nclients) < 0 ||
        parse_u64(positional[4], "SENDERS", 1, nclients, &nsenders) < 0 ||
        parse_u64(positional[5], "MESSAGES", 1, MAX_MESSAGES, &messages) < 0 ||
        (npositional == 7 &&
         parse_u64(positional[6], "PAYLOAD_BYTES", MIN_PAYLOAD, MAX_PAYLOAD, &payload) < 0))
        return usage();
    run.nclients = (uint32_t)nclients;
    run.nsenders = (uint32_t)nsenders;
    run.messages = (uint32_t)messages;
    run.payload = (uint32_t)payload;
    run.rate = rate;
    run.stall = (double)stall;
    return run_fanout(&addr, &run);
}
