#ifndef HOOKGATE_CHIREDIS_H
#define HOOKGATE_CHIREDIS_H
/* hiredis's asynchronous client for Swift (Debian's libhiredis-dev, 0.14). glibc headers first,
 * as in CLibevent (notes/libevent-swift.md, trap 1). The libevent adapter is attached in
 * attach.c: its header defines static functions and pulls in libevent's, which Swift already
 * imports through CLibevent. */
#include <sys/types.h>
#include <sys/time.h>
#include <stddef.h>
#include <hiredis/hiredis.h>
#include <hiredis/async.h>

/* Attaches `context` to a libevent `event_base` (passed untyped: `struct event_base *`).
 * REDIS_OK or REDIS_ERR. The adapter's events are freed with the context. */
int hookgate_redis_attach(redisAsyncContext *context, void *event_base);

#endif
