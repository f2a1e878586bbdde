/*
 * pgl_pgwire_decode — decoders for the typed messages the proxy looks into.
 * Each takes a message body (after type byte and length word) and returns 0
 * with views into that body, or PGL_EFORMAT. A body is accepted only
 * when it is consumed exactly, so trailing garbage is an error too.
 */
#ifndef PGL_PGWIRE_DECODE_H
#define PGL_PGWIRE_DECODE_H

#include "pgl_pgwire.h"

/* Backend message types. */
#define PGL_PGWIRE_B_AUTH 'R'
#define PGL_PGWIRE_B_KEY 'K'
#define PGL_PGWIRE_B_PARAM 'S'
#define PGL_PGWIRE_B_READY 'Z'
#define PGL_PGWIRE_B_ERROR 'E'
#define PGL_PGWIRE_B_NOTICE 'N'
#define PGL_PGWIRE_B_ROWDESC 'T'
#define PGL_PGWIRE_B_DATAROW 'D'
#define PGL_PGWIRE_B_COMPLETE 'C'
#define PGL_PGWIRE_B_COPYIN 'G'
#define PGL_PGWIRE_B_COPYOUT 'H'
#define PGL_PGWIRE_B_COPYBOTH 'W'
#define PGL_PGWIRE_B_NEGOTIATE 'v'
/* Frontend message types. */
#define PGL_PGWIRE_F_QUERY 'Q'
#define PGL_PGWIRE_F_PARSE 'P'
#define PGL_PGWIRE_F_BIND 'B'
#define PGL_PGWIRE_F_DESCRIBE 'D'
#define PGL_PGWIRE_F_CLOSE 'C'
#define PGL_PGWIRE_F_EXECUTE 'E'
#define PGL_PGWIRE_F_SYNC 'S'
#define PGL_PGWIRE_F_FLUSH 'H'
#define PGL_PGWIRE_F_TERMINATE 'X'
#define PGL_PGWIRE_F_PASSWORD 'p' /* also SASLInitialResponse / SASLResponse */
#define PGL_PGWIRE_F_COPYDATA 'd'
#define PGL_PGWIRE_F_COPYDONE 'c'
#define PGL_PGWIRE_F_COPYFAIL 'f'

/* Authentication request codes ('R'). */
enum {
    PGL_PGWIRE_AUTH_OK = 0,
    PGL_PGWIRE_AUTH_CLEARTEXT = 3,
    PGL_PGWIRE_AUTH_MD5 = 5,
    PGL_PGWIRE_AUTH_SASL = 10,
    PGL_PGWIRE_AUTH_SASL_CONTINUE = 11,
    PGL_PGWIRE_AUTH_SASL_FINAL = 12,
};

/* ---- backend -> frontend ---- */

/* ReadyForQuery: status 'I', 'T' or 'E'. */
PGL_MUST_CHECK int pgl_pgwire_parse_ready(const uint8_t *body, size_t len, char *status);

PGL_MUST_CHECK int pgl_pgwire_parse_param_status(const uint8_t *body, size_t len, const char **name,
                                                 const char **value);

PGL_MUST_CHECK
int pgl_pgwire_parse_backend_key(const uint8_t *body, size_t len, uint32_t *pid, uint32_t *key);

typedef struct pgl_pgwire_auth {
    uint32_t code;
    uint8_t md5_salt[4];      /* AUTH_MD5 */
    const uint8_t *data;      /* SASL: mechanism list; CONTINUE/FINAL: payload */
    size_t data_len;
} pgl_pgwire_auth;
PGL_MUST_CHECK int pgl_pgwire_parse_auth(const uint8_t *body, size_t len, pgl_pgwire_auth *auth);

/* ErrorResponse / NoticeResponse. Fields not present are NULL. */
typedef struct pgl_pgwire_error {
    const char *severity;     /* 'V' (not localized) if present, else 'S' */
    const char *sqlstate;     /* 'C' */
    const char *message;      /* 'M' */
    const char *detail;       /* 'D' */
    const char *hint;         /* 'H' */
} pgl_pgwire_error;
PGL_MUST_CHECK int pgl_pgwire_parse_error(const uint8_t *body, size_t len, pgl_pgwire_error *err);

/* Iterate over all fields of a validated Error/NoticeResponse. */
typedef struct pgl_pgwire_field_iter {
    const uint8_t *p, *end;
} pgl_pgwire_field_iter;
void pgl_pgwire_fields_begin(pgl_pgwire_field_iter *it, const uint8_t *body, size_t len);
PGL_MUST_CHECK
int pgl_pgwire_fields_next(pgl_pgwire_field_iter *it, char *code, const char **value);

PGL_MUST_CHECK
int pgl_pgwire_parse_command_complete(const uint8_t *body, size_t len, const char **tag);

/* CopyInResponse / CopyOutResponse / CopyBothResponse. */
typedef struct pgl_pgwire_copy {
    uint8_t format;           /* 0 text, 1 binary */
    uint16_t ncols;
    const uint8_t *col_formats; /* ncols big-endian int16 */
} pgl_pgwire_copy;
PGL_MUST_CHECK
int pgl_pgwire_parse_copy_response(const uint8_t *body, size_t len, pgl_pgwire_copy *copy);

/* RowDescription: field count; names are walked with the iterator. */
typedef struct pgl_pgwire_rowdesc_iter {
    const uint8_t *p, *end;
    uint16_t left;
} pgl_pgwire_rowdesc_iter;
PGL_MUST_CHECK
int pgl_pgwire_parse_row_description(const uint8_t *body, size_t len, uint16_t *nfields,
                                     pgl_pgwire_rowdesc_iter *it);
PGL_MUST_CHECK
int pgl_pgwire_rowdesc_next(pgl_pgwire_rowdesc_iter *it, const char **name, uint32_t *type_oid);

/* DataRow: column count; values are walked with the iterator. A NULL value
 * has len -1 and data NULL. */
typedef struct pgl_pgwire_datarow_iter {
    const uint8_t *p, *end;
    uint16_t left;
} pgl_pgwire_datarow_iter;
PGL_MUST_CHECK int pgl_pgwire_parse_data_row(const uint8_t *body, size_t len, uint16_t *ncols,
                                             pgl_pgwire_datarow_iter *it);
PGL_MUST_CHECK
int pgl_pgwire_datarow_next(pgl_pgwire_datarow_iter *it, const uint8_t **data, int32_t *vlen);

/* NegotiateProtocolVersion: newest minor supported and the options refused. */
PGL_MUST_CHECK int pgl_pgwire_parse_negotiate(const uint8_t *body, size_t len, uint32_t *minor,
                                              uint32_t *noptions);

/* ---- frontend -> backend ---- */

PGL_MUST_CHECK int pgl_pgwire_parse_query(const uint8_t *body, size_t len, const char **sql);

typedef struct pgl_pgwire_parse {
    const char *name;         /* "" is the unnamed statement */
    const char *query;
    uint16_t nparams;
    const uint8_t *param_oids; /* nparams big-endian int32 */
} pgl_pgwire_parse;
PGL_MUST_CHECK int pgl_pgwire_parse_parse(const uint8_t *body, size_t len, pgl_pgwire_parse *p);

/* Bind: only the names are decoded; the rest is forwarded untouched but its
 * structure is still checked so a truncated Bind is caught here. */
PGL_MUST_CHECK int pgl_pgwire_parse_bind(const uint8_t *body, size_t len, const char **portal,
                                         const char **statement);

/* Describe / Close: kind 'S' (statement) or 'P' (portal). */
PGL_MUST_CHECK
int pgl_pgwire_parse_describe(const uint8_t *body, size_t len, char *kind, const char **name);

PGL_MUST_CHECK int pgl_pgwire_parse_execute(const uint8_t *body, size_t len, const char **portal,
                                            uint32_t *max_rows);

/* Sync, Flush, Terminate, CopyDone: empty bodies. */
PGL_MUST_CHECK int pgl_pgwire_parse_empty(const uint8_t *body, size_t len);

/* PasswordMessage: the NUL-terminated response (cleartext or md5). */
PGL_MUST_CHECK
int pgl_pgwire_parse_password(const uint8_t *body, size_t len, const char **pw, size_t *pwlen);

/* SASLInitialResponse: mechanism and initial data (data NULL when absent). */
PGL_MUST_CHECK int pgl_pgwire_parse_sasl_initial(const uint8_t *body, size_t len, const char **mech,
                                                 const uint8_t **data, size_t *dlen);

#endif
