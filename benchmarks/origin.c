/*
 * origin: the fast local HTTP/1.1 origin server of the proxy benchmark.
 *
 *     origin PORT
 *
 * Listens on 127.0.0.1:PORT, prints "listening on 127.0.0.1:PORT" once it
 * accepts connections, and serves until killed:
 *
 *   GET /1k    200, a 1024-byte body (Content-Length: 1024)
 *   GET /100m  200, a 104857600-byte body (Content-Length: 104857600)
 *   other      404, a short body
 *
 * HEAD is answered like GET without the body.  The target may be in origin
 * form (GET /1k HTTP/1.1) or absolute form (GET http://127.0.0.1:PORT/1k
 * HTTP/1.1), as some proxies forward it; only the path after the authority
 * counts, without the query.
 *
 * Single-threaded, epoll (edge-triggered) and non-blocking sockets.  Several
 * requests in one read (pipelining) are answered in order.  A big body is
 * sent from a static buffer as the socket takes it (EAGAIN: wait for the
 * next EPOLLOUT, never block the loop); meanwhile no further request of that
 * connection is read.  Connections persist for HTTP/1.1 unless the request
 * says "Connection: close", and for HTTP/1.0 only with "Connection:
 * keep-alive".  A response to HTTP/1.1 that ends the connection says
 * "Connection: close"; one to HTTP/1.0 does not need to (closing is 1.0's
 * default), so a proxy that copies the origin's hop-by-hop headers to its
 * own client is not told to close that client's connection.  A request
 * body (Content-Length) is read and ignored; "Transfer-Encoding" in a
 * request, a bad request line or a head over 16 KiB get a 400 and a close.
 */

#define _GNU_SOURCE /* accept4, memmem */

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#define HOST "127.0.0.1"
#define SMALL_BODY 1024
#define BIG_BODY 104857600ULL
/* Bytes of request head (and pipelined requests) read ahead. */
#define IN_SIZE 16384
/* Bytes of responses queued before the connection stops taking requests. */
#define OUT_SIZE 65536
/* Room a response needs in the output buffer: its head and a small body. */
#define RESPONSE_ROOM (SMALL_BODY + 512)
/* Bytes of the big body handed to one send(). */
#define CHUNK (1 << 20)
#define MAX_EVENTS 256

struct conn {
    int fd;
    int closing;        /* close once the output is sent */
    int eof;            /* the client sent FIN */
    uint64_t discard;   /* request body bytes still to skip */
    uint64_t bulk;      /* big body bytes still to send */
    size_t inLen;
    size_t outLen, outSent;
    char in[IN_SIZE];
    char out[OUT_SIZE];
};

static char smallBody[SMALL_BODY];
static char bigChunk[CHUNK];

static void fillBodies(void)
{
    for (size_t i = 0; i < sizeof smallBody; i++)
        smallBody[i] = (char)('a' + i % 26);
    for (size_t i = 0; i < sizeof bigChunk; i++)
        bigChunk[i] = (char)('A' + i % 26);
}

static void closeConn(struct conn *c)
{
    close(c->fd);  /* also removes it from the epoll set */
    free(c);
}

/* Queue a response head and, unless it is for HEAD, a small body. */
static void queueResponse(struct conn *c, const char *status, uint64_t length,
                          const char *body, int head, int http11)
{
    int n = snprintf(c->out + c->outLen, OUT_SIZE - c->outLen,
                     "HTTP/1.1 %s\r\nServer: origin\r\n"
                     "Content-Type: application/octet-stream\r\n"
                     "Content-Length: %llu\r\n%s\r\n",
                     status, (unsigned long long)length,
                     c->closing && http11 ? "Connection: close\r\n"
                     : !c->closing && !http11 ? "Connection: keep-alive\r\n"
                     : "");
    c->outLen += (size_t)n;
    if (body != NULL && !head) {
        memcpy(c->out + c->outLen, body, (size_t)length);
        c->outLen += (size_t)length;
    }
}

/* Whether the header list contains NAME (with its colon) with a value that
 * has TOKEN (any value if TOKEN is NULL), case-insensitively. */
static int headerHas(const char *headers, const char *end, const char *name,
                     const char *token)
{
    size_t nameLen = strlen(name), tokenLen = token == NULL ? 0 : strlen(token);
    const char *line = headers;
    while (line < end) {
        const char *eol = memchr(line, '\n', (size_t)(end - line));
        if (eol == NULL)
            eol = end;
        if ((size_t)(eol - line) > nameLen && strncasecmp(line, name, nameLen) == 0) {
            if (token == NULL)
                return 1;
            for (const char *p = line + nameLen; p + tokenLen <= eol; p++)
                if (strncasecmp(p, token, tokenLen) == 0)
                    return 1;
        }
        line = eol + 1;
    }
    return 0;
}

/* The value of a Content-Length header, 0 if there is none, -1 if bad. */
static long long contentLength(const char *headers, const char *end)
{
    const char *line = headers;
    while (line < end) {
        const char *eol = memchr(line, '\n', (size_t)(end - line));
        if (eol == NULL)
            eol = end;
        if (eol - line > 15 && strncasecmp(line, "Content-Length:", 15) == 0) {
            char *stop;
            long long v = strtoll(line + 15, &stop, 10);
            return v < 0 || stop == line + 15 ? -1 : v;
        }
        line = eol + 1;
    }
    return 0;
}

/*
 * Answer one complete request head of LEN bytes (its blank line included)
 * at the start of the input buffer.
 */
static void answer(struct conn *c, const char *req, size_t len)
{
    const char *end = req + len;
    const char *eol = memchr(req, '\n', len);
    const char *sp1 = memchr(req, ' ', (size_t)(eol - req));
    const char *sp2 = sp1 ? memchr(sp1 + 1, ' ', (size_t)(eol - sp1 - 1)) : NULL;
    if (sp1 == NULL || sp2 == NULL || eol - sp2 < 9 || strncmp(sp2 + 1, "HTTP/1.", 7) != 0) {
        c->closing = 1;
        queueResponse(c, "400 Bad Request", 0, NULL, 0, 1);
        return;
    }
    int http11 = sp2[8] != '0';
    const char *headers = eol + 1;
    if (http11)
        c->closing = headerHas(headers, end, "Connection:", "close");
    else
        c->closing = !headerHas(headers, end, "Connection:", "keep-alive");
    long long bodyLength = contentLength(headers, end);
    if (bodyLength < 0 || headerHas(headers, end, "Transfer-Encoding:", NULL)) {
        c->closing = 1;
        queueResponse(c, "400 Bad Request", 0, NULL, 0, http11);
        return;
    }
    c->discard = (uint64_t)bodyLength;

    /* The path: after "scheme://authority" in absolute form, up to '?'. */
    const char *path = sp1 + 1, *pathEnd = sp2;
    if (pathEnd - path > 7 && strncasecmp(path, "http://", 7) == 0) {
        path = memchr(path + 7, '/', (size_t)(pathEnd - path - 7));
        if (path == NULL)
            path = pathEnd;
    }
    const char *query = memchr(path, '?', (size_t)(pathEnd - path));
    if (query != NULL)
        pathEnd = query;
    size_t pathLen = (size_t)(pathEnd - path);
    size_t methodLen = (size_t)(sp1 - req);
    int head = methodLen == 4 && memcmp(req, "HEAD", 4) == 0;
    int get = head || (methodLen == 3 && memcmp(req, "GET", 3) == 0);

    if (get && pathLen == 3 && memcmp(path, "/1k", 3) == 0) {
        queueResponse(c, "200 OK", SMALL_BODY, smallBody, head, http11);
    } else if (get && pathLen == 5 && memcmp(path, "/100m", 5) == 0) {
        queueResponse(c, "200 OK", BIG_BODY, NULL, head, http11);
        c->bulk = head ? 0 : BIG_BODY;
    } else {
        static const char notFound[] = "not found\n";
        queueResponse(c, "404 Not Found", sizeof notFound - 1, notFound, head, http11);
    }
}

/*
 * Answer the complete requests in the input buffer while there is room for
 * their responses and no big body is being sent.
 *
 * Returns 0, or -1 if the input buffer is full without a complete head.
 */
static int answerRequests(struct conn *c)
{
    size_t used = 0;
    while (!c->closing && c->bulk == 0 && OUT_SIZE - c->outLen >= RESPONSE_ROOM) {
        if (c->discard > 0) {
            size_t skip = c->inLen - used < c->discard ? c->inLen - used : (size_t)c->discard;
            used += skip;
            c->discard -= skip;
            if (c->discard > 0)
                break;
        }
        char *start = c->in + used;
        size_t avail = c->inLen - used;
        char *blank = avail >= 4 ? memmem(start, avail, "\r\n\r\n", 4) : NULL;
        if (blank == NULL)
            break;
        size_t len = (size_t)(blank + 4 - start);
        answer(c, start, len);
        used += len;
    }
    memmove(c->in, c->in + used, c->inLen - used);
    c->inLen -= used;
    if (c->inLen == IN_SIZE && c->discard == 0 && !c->closing && c->bulk == 0 &&
        OUT_SIZE - c->outLen >= RESPONSE_ROOM)
        return -1;
    return 0;
}

/*
 * Send what is queued: the output buffer, then the big body.
 *
 * Returns 1 when all is sent, 0 when the socket is full (EPOLLOUT will say
 * when to go on), -1 on an error.
 */
static int flush(struct conn *c)
{
    while (c->outSent < c->outLen) {
        ssize_t n = send(c->fd, c->out + c->outSent, c->outLen - c->outSent, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return errno == EAGAIN || errno == EWOULDBLOCK ? 0 : -1;
        }
        c->outSent += (size_t)n;
    }
    c->outLen = c->outSent = 0;
    while (c->bulk > 0) {
        size_t offset = (size_t)((BIG_BODY - c->bulk) % CHUNK);
        size_t want = CHUNK - offset;
        if (want > c->bulk)
            want = (size_t)c->bulk;
        ssize_t n = send(c->fd, bigChunk + offset, want, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return errno == EAGAIN || errno == EWOULDBLOCK ? 0 : -1;
        }
        c->bulk -= (uint64_t)n;
    }
    return 1;
}

/* Read into the input buffer: 1 if something came, 0 on EAGAIN, -1 on an
 * error; a FIN sets c->eof. */
static int readSome(struct conn *c)
{
    for (;;) {
        ssize_t n = recv(c->fd, c->in + c->inLen, IN_SIZE - c->inLen, 0);
        if (n > 0) {
            c->inLen += (size_t)n;
            return 1;
        }
        if (n == 0) {
            c->eof = 1;
            return 0;
        }
        if (errno == EINTR)
            continue;
        return errno == EAGAIN || errno == EWOULDBLOCK ? 0 : -1;
    }
}

/* Close after the last response: FIN first, and drop what the client still
 * sends, so that the close does not reset the response in flight. */
static void finish(struct conn *c)
{
    char sink[4096];
    shutdown(c->fd, SHUT_WR);
    while (recv(c->fd, sink, sizeof sink, 0) > 0)
        ;
    closeConn(c);
}

/* Make all the progress the socket allows; edge-triggered, so only return
 * on EAGAIN (or after closing). */
static void serve(struct conn *c)
{
    for (;;) {
        int sent = flush(c);
        if (sent < 0) {
            closeConn(c);
            return;
        }
        if (sent == 0)
            return;
        if (c->closing) {
            finish(c);
            return;
        }
        size_t before = c->inLen;
        uint64_t discardBefore = c->discard;
        if (answerRequests(c) < 0) {
            c->closing = 1;
            queueResponse(c, "400 Bad Request", 0, NULL, 0, 1);
            continue;
        }
        if (c->outLen > 0 || c->bulk > 0)
            continue;
        if (c->inLen != before || c->discard != discardBefore)
            continue;
        if (c->eof) {
            closeConn(c);
            return;
        }
        if (c->inLen == IN_SIZE) {  /* not expected: answerRequests took it */
            c->closing = 1;
            queueResponse(c, "400 Bad Request", 0, NULL, 0, 1);
            continue;
        }
        int got = readSome(c);
        if (got < 0) {
            closeConn(c);
            return;
        }
        if (got == 0 && !c->eof)
            return;
    }
}

static void acceptAll(int epfd, int listener)
{
    for (;;) {
        int fd = accept4(listener, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR &&
                errno != ECONNABORTED)
                perror("origin: accept4");
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            return;
        }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        struct conn *c = calloc(1, sizeof *c);
        if (c == NULL) {
            close(fd);
            continue;
        }
        c->fd = fd;
        struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET,
                                 .data.ptr = c};
        if (epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev) < 0) {
            perror("origin: epoll_ctl");
            closeConn(c);
        }
    }
}

int main(int argc, char **argv)
{
    char *stop;
    long port = argc == 2 ? strtol(argv[1], &stop, 10) : -1;
    if (argc != 2 || *stop != '\0' || port < 1 || port > 65535) {
        fprintf(stderr, "usage: origin PORT (1-65535; listens on " HOST ")\n");
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    fillBodies();

    int listener = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    inet_pton(AF_INET, HOST, &addr.sin_addr);
    if (listener < 0 ||
        setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) < 0 ||
        bind(listener, (struct sockaddr *)&addr, sizeof addr) < 0 ||
        listen(listener, SOMAXCONN) < 0) {
        perror("origin: listen");
        return 1;
    }
    int epfd = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = NULL};
    if (epfd < 0 || epoll_ctl(epfd, EPOLL_CTL_ADD, listener, &ev) < 0) {
        perror("origin: epoll");
        return 1;
    }
    printf("listening on %s:%ld\n", HOST, port);
    fflush(stdout);

    struct epoll_event events[MAX_EVENTS];
    for (;;) {
        int n = epoll_wait(epfd, events, MAX_EVENTS, -1);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            perror("origin: epoll_wait");
            return 1;
        }
        for (int i = 0; i < n; i++) {
            if (events[i].data.ptr == NULL) {
                acceptAll(epfd, listener);
                continue;
            }
            struct conn *c = events[i].data.ptr;
            if (events[i].events & EPOLLERR) {
                closeConn(c);
                continue;
            }
            serve(c);
        }
    }
}
