#include "pgl_generation.h"

#include "pgl_log.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>

#define SAFETY_MAX_MS 5000
/* Vault writes a role's VALID UNTIL with whole seconds: a margin under
 * one second could let a backend outlive it. */
#define SAFETY_MIN_MS 1500
#define DEADLINE_NEAR_MS 2000
/* Static roles: how long after Vault's rotation time the password is read
 * again, and the re-read period when Vault gave no ttl. */
#define STATIC_REREAD_AFTER_MS 1000
#define STATIC_TTL_UNKNOWN_S 60 /* old servers stop serving this long before they must go */

static const char *const state_names[] = {"warming", "active", "draining", "dead", "retired"};

const char *pgl_generation_state_name(pgl_generation_state s)
{
    return state_names[s];
}

static uint64_t min_u64(uint64_t a, uint64_t b)
{
    return a < b ? a : b;
}

pgl_generation *pgl_generation_new(uint64_t id, const char *user, const char *password,
                                   pgl_generation_state state)
{
    pgl_generation *g = calloc(1, sizeof *g);
    if (g == NULL)
        return NULL;
    g->id = id;
    g->state = state;
    g->end = g->renew_at = g->rotate_at = UINT64_MAX;
    pgl_list_init(&g->node);
    pgl_clist_init(&g->login);
    pgl_clist_init(&g->idle);
    pgl_clist_init(&g->busy);
    g->user = strdup(user ? user : "");
    g->password = password ? strdup(password) : NULL;
    if (g->user == NULL || (password != NULL && g->password == NULL)) {
        pgl_generation_free(g);
        return NULL;
    }
    return g;
}

void pgl_generation_free(pgl_generation *g)
{
    pgl_list_remove(&g->node);
    free(g->user);
    if (g->password != NULL) {
        OPENSSL_cleanse(g->password, strlen(g->password));
        free(g->password);
    }
    free(g->lease_id);
    free(g);
}

void pgl_generation_set_state(pgl_generation *g, pgl_generation_state to, uint64_t now)
{
    static const unsigned allowed[] = {
        [PGL_GEN_WARMING] = 1u << PGL_GEN_ACTIVE | 1u << PGL_GEN_DEAD,
        [PGL_GEN_ACTIVE] = 1u << PGL_GEN_DRAINING | 1u << PGL_GEN_DEAD,
        [PGL_GEN_DRAINING] = 1u << PGL_GEN_DEAD | 1u << PGL_GEN_RETIRED,
        [PGL_GEN_DEAD] = 1u << PGL_GEN_RETIRED,
        [PGL_GEN_RETIRED] = 0,
    };
    if (!(allowed[g->state] & (1u << to))) {
        pgl_log_error(g->log_ctx, "bug: generation %llu state %s -> %s", (unsigned long long)g->id,
                      state_names[g->state], state_names[to]);
        assert(0);
        return;
    }
    pgl_log_debug(g->log_ctx, "generation %llu: %s -> %s", (unsigned long long)g->id,
                  state_names[g->state], state_names[to]);
    if (to == PGL_GEN_DRAINING || to == PGL_GEN_DEAD)
        g->drain_since = now;
    g->state = to;
}

static bool maybe_retire(pgl_generation *g)
{
    if (!pgl_generation_retiring(g) || g->holds > 0 || pgl_generation_nservers(g) > 0)
        return false;
    pgl_log_info(g->log_ctx, "generation %llu drained", (unsigned long long)g->id);
    pgl_generation_set_state(g, PGL_GEN_RETIRED, g->drain_since);
    if (g->retired != NULL)
        g->retired(g);
    pgl_generation_free(g);
    return true;
}

bool pgl_generation_unhold(pgl_generation *g)
{
    assert(g->holds > 0);
    g->holds--;
    return maybe_retire(g);
}

bool pgl_generation_server_left(pgl_generation *g)
{
    /* Whichever of its servers went, the replacements made still cover
     * the ones left. */
    int n = pgl_generation_nservers(g);
    if (g->replaced > n)
        g->replaced = n;
    return maybe_retire(g);
}

/* ---- the credential's clock ------------------------------------------------ */

uint64_t pgl_generation_end(const pgl_generation *g)
{
    return g->end_final ? g->end : UINT64_MAX;
}

uint64_t pgl_generation_deadline(const pgl_generation *g)
{
    /* The lease ends at `end` unless a renewal moves it: a renewal Vault
     * has not answered (hung, down) must not keep a server past it. */
    uint64_t end = g->end;
    if (end == UINT64_MAX)
        return UINT64_MAX;
    uint64_t life = end > g->issued ? end - g->issued : 0;
    uint64_t margin = min_u64(SAFETY_MAX_MS, life / 10 > SAFETY_MIN_MS ? life / 10 : SAFETY_MIN_MS);
    return end - min_u64(margin, life / 2);
}

void pgl_generation_schedule_rotation(pgl_generation *g, int rotate_before_s)
{
    uint64_t end = pgl_generation_end(g);
    if (g->is_static || end == UINT64_MAX)
        return; /* static: rotate_at was set from Vault's ttl */
    uint64_t life = end > g->issued ? end - g->issued : 0;
    uint64_t before = rotate_before_s >= 0 ? min_u64((uint64_t)rotate_before_s * 1000, life / 2)
                                           : life / 3;
    g->rotate_at = end - before;
}

void pgl_generation_issued(pgl_generation *g, uint64_t now, long duration_s, bool renewable,
                           bool is_static, long static_ttl_s, int rotate_before_s)
{
    g->issued = now;
    g->is_static = is_static;
    g->renewable = renewable;
    g->lease_duration = duration_s;
    if (is_static) {
        /* No deadline: the user stays and Postgres keeps existing sessions
         * across a password change. */
        pgl_generation_static_reread(g, now, static_ttl_s);
    } else if (duration_s > 0) {
        g->end = now + (uint64_t)duration_s * 1000;
        g->end_final = !renewable;
        g->renew_at = renewable ? now + (uint64_t)duration_s * 1000 * 2 / 3 : UINT64_MAX;
    }
    pgl_generation_schedule_rotation(g, rotate_before_s);
}

void pgl_generation_static_reread(pgl_generation *g, uint64_t now, long static_ttl_s)
{
    /* Re-read just after Vault's rotation. A ttl of 0 means the rotation is
     * due and not done yet (Vault works through its rotation queue): ask
     * again in a second, not after a whole default period. */
    long ttl = static_ttl_s >= 0 ? static_ttl_s : STATIC_TTL_UNKNOWN_S;
    g->rotate_at = now + (uint64_t)ttl * 1000 + STATIC_REREAD_AFTER_MS;
}

void pgl_generation_poll_after(pgl_generation *g, uint64_t now, long interval_s)
{
    g->rotate_at = now + (uint64_t)interval_s * 1000;
}

bool pgl_generation_renewed(pgl_generation *g, uint64_t now, long duration_s,
                            int rotate_before_s)
{
    g->renew_sent = 0;
    g->end = now + (uint64_t)duration_s * 1000;
    bool capped = duration_s + 1 < g->lease_duration;
    if (capped) {
        g->end_final = true;
        g->renew_at = UINT64_MAX;
    } else {
        g->renew_at = now + (uint64_t)duration_s * 1000 * 2 / 3;
    }
    pgl_generation_schedule_rotation(g, rotate_before_s);
    return capped;
}

void pgl_generation_renew_failed(pgl_generation *g, int rotate_before_s)
{
    g->renew_sent = 0;
    g->end_final = true;
    g->renew_at = UINT64_MAX;
    pgl_generation_schedule_rotation(g, rotate_before_s);
}

void pgl_generation_token_ends(pgl_generation *g, uint64_t token_end, int rotate_before_s)
{
    if (token_end != UINT64_MAX)
        g->token_end = token_end;
    /* A token takes its leases with it, whatever their own TTL. */
    if (!g->is_static && g->lease_id != NULL && g->token_end != 0 && g->token_end < g->end) {
        g->end = g->token_end;
        g->end_final = true;
        pgl_generation_schedule_rotation(g, rotate_before_s);
    }
}

bool pgl_generation_renew_due(pgl_generation *g, uint64_t now)
{
    if (!g->renewable || g->end_final || g->renew_op != NULL || now < g->renew_at ||
        (g->state != PGL_GEN_ACTIVE && g->state != PGL_GEN_WARMING))
        return false;
    g->renew_at = UINT64_MAX;
    g->renew_sent = now;
    return true;
}

bool pgl_generation_rotation_due(const pgl_generation *g, uint64_t now)
{
    if (now >= g->rotate_at)
        return true;
    /* A renewal still unanswered halfway from its sending to the deadline:
     * a successor is fetched while the lease is still good (the renewal
     * may yet come back). */
    uint64_t deadline = pgl_generation_deadline(g);
    return g->renew_sent != 0 && deadline != UINT64_MAX && deadline > g->renew_sent &&
           now >= g->renew_sent + (deadline - g->renew_sent) / 2;
}

/* ---- what is due ------------------------------------------------------------------ */

static uint64_t drain_end(const pgl_generation *g, int drain_timeout_s)
{
    return pgl_generation_retiring(g) && drain_timeout_s >= 0
               ? g->drain_since + (uint64_t)drain_timeout_s * 1000
               : UINT64_MAX;
}

uint64_t pgl_generation_stop_serving(const pgl_generation *g, int drain_timeout_s)
{
    uint64_t stop = min_u64(pgl_generation_deadline(g), drain_end(g, drain_timeout_s));
    if (stop == UINT64_MAX)
        return UINT64_MAX;
    return stop > DEADLINE_NEAR_MS ? stop - DEADLINE_NEAR_MS : 0;
}

pgl_generation_due pgl_generation_check(pgl_generation *g, uint64_t now, int drain_timeout_s)
{
    uint64_t deadline = pgl_generation_deadline(g);
    bool retiring = pgl_generation_retiring(g);
    uint64_t drain_end_at = drain_end(g, drain_timeout_s);
    if (now >= deadline) {
        /* No successor arrived in time (Vault down?): this credential is
         * over, and the pool must not open new servers with it. */
        if (g->state == PGL_GEN_ACTIVE || g->state == PGL_GEN_WARMING)
            pgl_generation_set_state(g, PGL_GEN_DEAD, now);
        return PGL_GEN_DUE_DEADLINE;
    }
    if (now >= drain_end_at)
        return PGL_GEN_DUE_DRAIN_OVER;
    /* Transaction mode: servers not replaced yet (logins are slow on a
     * saturated database) stop serving shortly before they must go; idle
     * ones close now, busy ones at the end of their transaction rather than
     * be cut at the deadline or at drain_timeout. */
    if (g->state == PGL_GEN_DRAINING && !g->hurry &&
        now >= pgl_generation_stop_serving(g, drain_timeout_s)) {
        g->hurry = true;
        return PGL_GEN_DUE_HURRY;
    }
    if (retiring && deadline != UINT64_MAX && now + DEADLINE_NEAR_MS >= deadline)
        return PGL_GEN_DUE_RECONNECT;
    return PGL_GEN_DUE_NOTHING;
}

int pgl_generation_unreplaced(const pgl_generation *g)
{
    return g->state == PGL_GEN_DRAINING ? pgl_generation_nservers(g) - g->replaced : 0;
}

const char *pgl_generation_released(pgl_generation *g, bool in_place)
{
    switch (g->state) {
    case PGL_GEN_ACTIVE:
        return NULL;
    case PGL_GEN_DRAINING:
        if (!in_place)
            break;
        if (g->replaced > 0) {
            g->replaced--;
            return "replaced by a server with the new credential";
        }
        /* Unreplaced, it serves on, unless its credential ends soon. */
        return g->hurry ? "its credential generation ends soon" : NULL;
    case PGL_GEN_WARMING:
    case PGL_GEN_DEAD:
    case PGL_GEN_RETIRED:
        break;
    }
    return "its credential generation is retiring";
}
