/*
 * pgl-scram-verify SECRET PASSWORD: run a whole SCRAM-SHA-256 exchange,
 * client side from scram_client.c, server side from pgwire, against a
 * stored secret. Exit 0 when the password is accepted, 1 when refused,
 * 2 on a usage or protocol error. Test tool, not installed.
 */
#include <stdio.h>
#include <string.h>

#include "pgl_pgwire_scram.h"
#include "scram_client.h"

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: pgl-scram-verify SECRET PASSWORD\n");
        return 2;
    }
    static const uint8_t mock_key[PGL_PGWIRE_SCRAM_KEY_LEN];
    pgl_pgwire_scram_secret parsed;
    if (pgl_pgwire_scram_secret_parse(argv[1], &parsed) != 0) {
        fprintf(stderr, "malformed secret\n");
        return 2;
    }
    pgl_pgwire_scram_secret_wipe(&parsed);
    pgl_pgwire_scram_server *s;
    if (pgl_pgwire_scram_server_new(argv[1], "user", mock_key, NULL, 0, &s) != 0)
        return 2;
    scram_client c;
    char first[256], final[1024];
    uint8_t reply[PGL_PGWIRE_SCRAM_MSG_MAX + 1];
    size_t rlen;
    int n = scram_client_first(&c, "n,,", "a1b2c3d4e5f6g7h8", first, sizeof first);
    int rc = pgl_pgwire_scram_server_first(s, "SCRAM-SHA-256", (const uint8_t *)first, (size_t)n,
                                           reply, sizeof reply - 1, &rlen);
    if (rc == 0) {
        reply[rlen] = '\0';
        n = scram_client_final(&c, argv[2], (const char *)reply, NULL, 0, final, sizeof final);
        rc = pgl_pgwire_scram_server_final(s, (const uint8_t *)final, (size_t)n, reply,
                                           sizeof reply, &rlen);
        if (rc == 0 && scram_client_verify(&c, (const char *)reply, rlen) != 0)
            rc = -1;
    }
    pgl_pgwire_scram_server_free(s);
    if (rc == PGL_EAUTH)
        return 1;
    if (rc != 0) {
        fprintf(stderr, "exchange failed: %s\n", pgl_strerror(rc));
        return 2;
    }
    return 0;
}
