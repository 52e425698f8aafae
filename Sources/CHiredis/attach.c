#include <sys/types.h>
#include <sys/select.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <event2/event.h>
#include <hiredis/adapters/libevent.h>
#include "CHiredis.h"

int hookgate_redis_attach(redisAsyncContext *context, void *event_base) {
    return redisLibeventAttach(context, (struct event_base *)event_base);
}
