#ifndef HOOKGATE_CSQLITE_SHIM_H
#define HOOKGATE_CSQLITE_SHIM_H
#include <sys/types.h>
#include <stdlib.h>
#include <stdio.h>
#include <sqlite3.h>
/* SQLITE_TRANSIENT is a cast macro Swift cannot import. */
static inline int hg_sqlite3_bind_text_transient(sqlite3_stmt *s, int i, const char *t, int n) {
    return sqlite3_bind_text(s, i, t, n, SQLITE_TRANSIENT);
}
static inline int hg_sqlite3_bind_blob_transient(sqlite3_stmt *s, int i, const void *b, int n) {
    return sqlite3_bind_blob(s, i, b, n, SQLITE_TRANSIENT);
}
/* SQLITE_STATIC likewise: the caller keeps the bytes alive and unchanged until the statement
 * is reset and its bindings cleared (no copy, no malloc per value). */
static inline int hg_sqlite3_bind_text_static(sqlite3_stmt *s, int i, const char *t, int n) {
    return sqlite3_bind_text(s, i, t, n, SQLITE_STATIC);
}
static inline int hg_sqlite3_bind_blob_static(sqlite3_stmt *s, int i, const void *b, int n) {
    return sqlite3_bind_blob(s, i, b, n, SQLITE_STATIC);
}
#endif
