#ifndef HOOKGATE_CLIBPQ_SHIM_H
#define HOOKGATE_CLIBPQ_SHIM_H
/* libpq (Debian's libpq-dev), for the audit shipper's thread and `hookgate audit ship`.
 * glibc headers first (notes/libevent-swift.md, trap 1). */
#include <sys/types.h>
#include <stdlib.h>
#include <stdio.h>
#include <libpq-fe.h>
#endif
