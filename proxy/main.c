/*
 * pglease entry point: command line, configuration, then the proxy.
 */
#include "pgl_conf.h"
#include "pgl_conf_files.h"
#include "pgl_err.h"
#include "pgl_limits.h"
#include "pgl_log.h"
#include "pgl_proxy.h"
#include "pgl_secenv.h"
#include "pgl_vault.h"
#include "pgl_version.h"

#include <errno.h>
#include <getopt.h>
#include <stdbool.h>
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
            "      --allow-core-dumps\n"
            "                     keep core dumps and ptrace on (debugging): by default\n"
            "                     pglease turns them off, since its memory holds secrets\n"
            "  -v, --verbose      log at debug level whatever log_level says (every\n"
            "                     state change, several lines per transaction)\n"
            "  -V, --version      print the version and exit\n"
            "  -h, --help         print this help and exit\n"
            "\n"
            "Environment: PGLEASE_<SECTION>_<KEY> overrides a key of the file,\n"
            "e.g. PGLEASE_VAULT_ROLE_ID; VAULT_ADDR, VAULT_NAMESPACE, VAULT_CACERT and\n"
            "VAULT_TOKEN are used when the file leaves them unset. VAULT_TOKEN, PGPASSWORD\n"
            "and PGLEASE_DATABASES_* values holding a password are wiped from the\n"
            "process environment once read.\n"
            "Signals: SIGHUP reload, SIGTERM graceful stop, SIGINT fast stop,\n"
            "SIGUSR1 pause, SIGUSR2 resume.\n");
}

static void warn_stderr(void *arg, const char *msg)
{
    (void)arg;
    fprintf(stderr, "pglease: warning: %s\n", msg);
}

static void warn_log(void *arg, const char *msg)
{
    (void)arg;
    pgl_log_warning(NULL, "%s", msg);
}

/* The host-facing part of start-up, after the configuration is known and
 * before any thread: secrets out of the environment block, core dumps (set
 * earlier) reported, descriptors raised for what the configuration allows. */
static void harden(const pgl_conf *conf, bool allow_core_dumps, int core_rc)
{
    int n = pgl_secenv_take();
    if (n < 0)
        pgl_log_warning(NULL, "cannot wipe secrets from the environment: %s", pgl_strerror(n));
    else if (n > 0)
        pgl_log_info(NULL, "wiped %d secret variable(s) from the process environment", n);

    if (allow_core_dumps)
        pgl_log_warning(NULL, "core dumps allowed (--allow-core-dumps): a core file or a "
                              "debugger attached as this user can read secrets");
    else if (core_rc != 0)
        pgl_log_warning(NULL, "cannot turn core dumps off: %s", pgl_strerror(core_rc));

    rlim_t want = pgl_limits_nofile_wanted(conf), soft = 0, hard = 0;
    int rc = pgl_limits_raise_nofile(want, &soft, &hard);
    if (rc == -EMFILE)
        pgl_log_warning(NULL,
                        "open file limit %llu (hard %llu) is below the %llu descriptors "
                        "max_client_conn = %d and the pools may need: raise the hard limit "
                        "(LimitNOFILE=, ulimit -Hn) or lower max_client_conn; past it, "
                        "clients are refused and logins fail",
                        (unsigned long long)soft, (unsigned long long)hard,
                        (unsigned long long)want, conf->max_client_conn);
    else if (rc != 0)
        pgl_log_warning(NULL, "cannot read the open file limit: %s", pgl_strerror(rc));
}

int main(int argc, char **argv)
{
    enum { OPT_CHECK = 256, OPT_ALLOW_CORE_DUMPS };
    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'},
        {"check", no_argument, NULL, OPT_CHECK},
        {"allow-core-dumps", no_argument, NULL, OPT_ALLOW_CORE_DUMPS},
        {"verbose", no_argument, NULL, 'v'},
        {"version", no_argument, NULL, 'V'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *config = NULL;
    int check = 0, verbose = 0, allow_core_dumps = 0, c;

    opterr = 0; /* we print our own message, then the usage */
    while ((c = getopt_long(argc, argv, ":c:vVh", opts, NULL)) != -1) {
        switch (c) {
        case 'c':
            config = optarg;
            break;
        case OPT_CHECK:
            check = 1;
            break;
        case OPT_ALLOW_CORE_DUMPS:
            allow_core_dumps = 1;
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

    /* Before anything secret is read: a core file or a ptrace by the same
     * user would show tokens, leased passwords and SCRAM keys. */
    int core_rc = allow_core_dumps ? 0 : pgl_limits_no_core_dumps();

    char err[PGL_CONF_ERRLEN];
    pgl_conf *conf;
    if (pgl_conf_load(config, environ, &conf, err, sizeof err) != 0) {
        fprintf(stderr, "pglease: configuration error: %s\n", err);
        return 1;
    }
    /* --check and start-up check the same files, so a config that passes
     * one does not fail the other. */
    if (!check)
        pgl_log_configure(conf, verbose != 0);
    if (pgl_conf_check_files(conf, check ? warn_stderr : warn_log, NULL, err, sizeof err) != 0) {
        fprintf(stderr, "pglease: configuration error: %s\n", err);
        pgl_conf_free(conf);
        return 1;
    }
    if (check) {
        printf("%s: configuration is valid (%zu database%s)\n", config, conf->ndatabases,
               conf->ndatabases == 1 ? "" : "s");
        pgl_conf_free(conf);
        return 0;
    }
    /* What a reload reads again, before harden() wipes the secret ones. */
    char **conf_env = pgl_secenv_conf_env(environ);
    if (conf_env == NULL) {
        fprintf(stderr, "pglease: out of memory\n");
        pgl_conf_free(conf);
        return 1;
    }
    harden(conf, allow_core_dumps != 0, core_rc);
    /* Process-wide library set-up, once and before any thread: libcurl,
     * jansson's allocator, and the seed of random() (backoff and refetch
     * jitter in vault/ and proxy/). */
    srandom((unsigned)uv_hrtime());
    int rc = pgl_vault_global_init();
    if (rc != 0) {
        fprintf(stderr, "pglease: cannot initialise the Vault client: %s\n", pgl_strerror(rc));
        pgl_conf_free(conf);
        pgl_secenv_conf_env_free(conf_env);
        return 1;
    }
    rc = pgl_proxy_run(conf, conf_env, verbose != 0); /* takes both */
    pgl_secenv_forget(NULL);
    pgl_vault_global_cleanup();
    return rc;
}
