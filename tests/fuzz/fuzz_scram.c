/*
 * fuzz-scram: the server side of a SCRAM exchange fed attacker-chosen
 * messages. Input layout: first byte selects mechanism and channel binding,
 * then client-first and client-final separated by a NUL byte. The server
 * nonce is fixed so a crafted client-final can reach proof verification;
 * the stored secret is parsed from the fuzz input too when it starts with
 * "SCRAM-SHA-256$".
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "pgl_pgwire_scram.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char secret[] =
    "SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=:"
    "wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=";

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    static const uint8_t mock_key[PGL_PGWIRE_SCRAM_KEY_LEN] = {7};
    static const uint8_t cb[32] = {0x5a};
    uint8_t sel = data[0];
    data++;
    size--;

    char *text = malloc(size + 1);
    memcpy(text, data, size);
    text[size] = '\0';
    if (sel & 8) {
        /* Stored-secret parser on the whole input. */
        pgl_pgwire_scram_secret s;
        (void)pgl_pgwire_scram_secret_parse(text, &s);
        pgl_pgwire_scram_secret_wipe(&s);
    }
    const uint8_t *sep = memchr(data, 0, size);
    size_t first_len = sep ? (size_t)(sep - data) : size;

    pgl_pgwire_scram_server *s;
    if (pgl_pgwire_scram_server_new((sel & 1) ? NULL : secret, "user", mock_key,
                                    (sel & 2) ? cb : NULL, (sel & 2) ? sizeof cb : 0, &s) != 0)
        abort();
    if (pgl_pgwire_scram_server_set_nonce(s, "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0") != 0)
        abort();
    uint8_t reply[PGL_PGWIRE_SCRAM_MSG_MAX];
    size_t rlen;
    const char *mech = (sel & 4) ? "SCRAM-SHA-256-PLUS" : "SCRAM-SHA-256";
    int rc = pgl_pgwire_scram_server_first(s, mech, data, first_len, reply,
                                           (sel & 16) ? 8 : sizeof reply, &rlen);
    if (rc == 0 && sep != NULL) {
        rc = pgl_pgwire_scram_server_final(s, sep + 1, size - first_len - 1, reply, sizeof reply,
                                           &rlen);
        if (rc == 0 && (sel & 1))
            abort(); /* a mock exchange must never succeed */
    }
    pgl_pgwire_scram_server_free(s);
    free(text);
    return 0;
}
