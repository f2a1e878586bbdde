#include "pgl_pgwire.h"

#include <errno.h>

const char *pgl_pgwire_strerror(int code)
{
    switch (code) {
    case 0: return "success";
    case PGL_PGWIRE_ESHORT: return "message length too small";
    case PGL_PGWIRE_ETOOBIG: return "message length exceeds max_packet_size";
    case PGL_PGWIRE_EVERSION: return "unsupported protocol version";
    case PGL_PGWIRE_EFORMAT: return "malformed message";
    case PGL_PGWIRE_ETYPE: return "unexpected message type";
    case PGL_PGWIRE_EAUTH: return "authentication failed";
    case PGL_PGWIRE_ESPACE: return "output buffer too small";
    case PGL_PGWIRE_ECBIND: return "channel binding negotiation failed";
    case PGL_PGWIRE_EMECH: return "SASL mechanism not supported";
    case PGL_PGWIRE_ESECRET: return "malformed stored secret";
    case PGL_PGWIRE_ECRYPTO: return "cryptographic library failure";
    case PGL_PGWIRE_ESTATE: return "message out of sequence";
    case -ENOMEM: return "out of memory";
    case -EINVAL: return "invalid argument";
    default: return "unknown error";
    }
}
