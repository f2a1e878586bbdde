/*
 * pglease entry point: command line, configuration, then the proxy.
 */
#include "pgl_conf.h"
#include "pgl_err.h"
#include "pgl_proxy.h"
#include "pgl_vault.h"
#include "pgl_version.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <uv.h>

extern char **environ;

static void usage(FILE *out)
{
    fprintf(out,
            "Usage: pglease [OPTIONS] [-c] CONFIG\n"
            "\n"
            "A PostgreSQL connection proxy that serves applications from pools opened\n"
            "with the database credentials Vault issued most recently.\n"
            "\n"
            "Options:\n"
            "  -c, --config FILE  configuration file (ini)\n"
            "      --check        parse and validate the configuration, then exit:\n"
            "                     0 if it is valid, 1 if not\n"
            "  -v, --verbose      log debug lines too (per-connection state changes)\n"
            "  -V, --version      print the version and exit\n"
            "  -h, --help         print this help and exit\n"
            "\n"
            "Environment: PGLEASE_<SECTION>_<KEY> overrides a key of the file,\n"
            "e.g. PGLEASE_VAULT_ROLE_ID; VAULT_ADDR, VAULT_NAMESPACE, VAULT_CACERT and\n"
            "VAULT_TOKEN are used when the file leaves them unset.\n"
            "Signals: SIGHUP reload, SIGTERM graceful stop, SIGINT fast stop,\n"
            "SIGUSR1 pause, SIGUSR2 resume.\n");
}

int main(int argc, char **argv)
{
    enum { OPT_CHECK = 256 };
    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'},
        {"check", no_argument, NULL, OPT_CHECK},
        {"verbose", no_argument, NULL, 'v'},
        {"version", no_argument, NULL, 'V'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *config = NULL;
    int check = 0, verbose = 0, c;

    opterr = 0; /* we print our own message, then the usage */
    while ((c = getopt_long(argc, argv, ":c:vVh", opts, NULL)) != -1) {
        switch (c) {
        case 'c':
            config = optarg;
            break;
        case OPT_CHECK:
            check = 1;
            break;
        case 'v':
            verbose = 1;
            break;
        case 'V':
            printf("pglease %s\n", PGL_VERSION);
            return 0;
        case 'h':
            usage(stdout);
            return 0;
        case ':':
            fprintf(stderr, "pglease: option %s needs an argument\n\n", argv[optind - 1]);
            usage(stderr);
            return 2;
        default:
            fprintf(stderr, "pglease: unknown option %s\n\n", argv[optind - 1]);
            usage(stderr);
            return 2;
        }
    }
    if (optind < argc && config == NULL)
        config = argv[optind++];
    if (optind < argc) {
        fprintf(stderr, "pglease: unexpected argument %s\n\n", argv[optind]);
        usage(stderr);
        return 2;
    }
    if (config == NULL) {
        fprintf(stderr, "pglease: no configuration file given\n\n");
        usage(stderr);
        return 2;
    }

    char err[PGL_CONF_ERRLEN];
    pgl_conf *conf;
    if (pgl_conf_load(config, environ, &conf, err, sizeof err) != 0) {
        fprintf(stderr, "pglease: configuration error: %s\n", err);
        return 1;
    }
    if (check) {
        printf("%s: configuration is valid (%zu database%s)\n", config, conf->ndatabases,
               conf->ndatabases == 1 ? "" : "s");
        pgl_conf_free(conf);
        return 0;
    }
    /* Process-wide library set-up, once and before any thread: libcurl,
     * jansson's allocator, and the seed of random() (backoff and refetch
     * jitter in vault/ and proxy/). */
    srandom((unsigned)uv_hrtime());
    int rc = pgl_vault_global_init();
    if (rc != 0) {
        fprintf(stderr, "pglease: cannot initialise the Vault client: %s\n", pgl_strerror(rc));
        pgl_conf_free(conf);
        return 1;
    }
    rc = pgl_proxy_run(conf, verbose != 0); /* takes conf */
    pgl_vault_global_cleanup();
    return rc;
}
