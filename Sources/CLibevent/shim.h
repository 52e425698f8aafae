#ifndef HOOKGATE_CLIBEVENT_SHIM_H
#define HOOKGATE_CLIBEVENT_SHIM_H
/* glibc headers FIRST: event2/event-config.h defines _GNU_SOURCE, and if glibc's
 * <features.h> is first seen after that, fd_set & co. get other member names than in
 * Glibc/Dispatch/Foundation and a clean build fails (notes/libevent-swift.md, trap 1). */
#include <sys/types.h>
#include <sys/select.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <stdio.h>
#include <openssl/ssl.h>
#include <event2/event.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <event2/listener.h>
#include <event2/thread.h>
#include <event2/util.h>
#endif
