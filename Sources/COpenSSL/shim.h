#ifndef HOOKGATE_COPENSSL_SHIM_H
#define HOOKGATE_COPENSSL_SHIM_H
/* glibc headers first, for the same reason as in CLibevent/shim.h. */
#include <sys/types.h>
#include <sys/select.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <stdio.h>
#include <openssl/ssl.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <openssl/pem.h>
#include <openssl/bio.h>

/* Function-like macros Swift cannot import: one static-inline wrapper each. */
static inline int hg_SSL_set_tlsext_host_name(SSL *ssl, const char *name) {
    return (int)SSL_set_tlsext_host_name(ssl, name);
}
static inline int hg_SSL_CTX_set_min_proto_version(SSL_CTX *ctx, int version) {
    return (int)SSL_CTX_set_min_proto_version(ctx, version);
}
/* BIO_get_mem_data is a macro over BIO_ctrl. */
static inline long hg_BIO_get_mem_data(BIO *bio, char **data) {
    return BIO_get_mem_data(bio, data);
}
/* EVP_EC_gen is a macro over the variadic EVP_PKEY_Q_keygen. */
static inline EVP_PKEY *hg_EVP_EC_gen_prime256v1(void) {
    return EVP_EC_gen("prime256v1");
}
/* SSL_OP_* are SSL_OP_BIT(n) cast macros: one wrapper sets the server defaults
 * (no compression, server cipher preference, no renegotiation). */
static inline uint64_t hg_SSL_CTX_set_server_options(SSL_CTX *ctx) {
    return SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION | SSL_OP_CIPHER_SERVER_PREFERENCE
                                    | SSL_OP_NO_RENEGOTIATION);
}
#endif
