"""Shared fixtures: one throwaway PostgreSQL cluster for the whole run, a fresh
Vault stand-in per test. Both are always stopped and removed, also when a
test fails or the run is interrupted (fixture finalizers, plus an atexit
hook in harness.py).

    pg        session   harness.PgCluster (database "app", admin vaultadmin)
    vaultsim  function  harness.VaultSim, fresh state per test
    vault     function  the same as vaultsim (older name)
    build_dir session   Path of the pglease build (PGLEASE_BUILD_DIR, default
                        <repo>/build); fails, never skips, if pglease is missing
    vdb       module    the database Vault's roles are made for ("vdb", with
                        pgbench tables), made fresh and dropped after; modules
                        that need it for every test define their own

PGLEASE_TEST_WORKERS=N runs every pglease with `workers = N` unless a test
sets it (scripts/test runs the suite so with N = 2).
"""
import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import REPO, PgCluster, VaultSim, drop_vault_roles  # noqa: E402


@pytest.fixture(scope="session")
def pg():
    cluster = PgCluster()
    try:
        yield cluster
    finally:
        cluster.stop()


def _vaultsim(pg, request):
    v = VaultSim()
    try:
        yield v
    finally:
        v.stop()
        rep = getattr(request.node, "rep_call", None)
        if rep is not None and rep.failed:
            sys.stderr.write(f"\n--- vaultsim log ({v.log_path}) ---\n{v.log()[-8000:]}\n")
        # Roles a test left behind (leases not revoked) must not leak into
        # the next test.
        drop_vault_roles(pg)


@pytest.fixture
def vaultsim(pg, request):
    yield from _vaultsim(pg, request)


@pytest.fixture
def vault(pg, request):
    yield from _vaultsim(pg, request)


@pytest.fixture(scope="module")
def vdb(pg):
    from test_vault_rotation import DB
    pg.fresh_database(DB, pgbench=True)
    yield DB
    pg.sql(f"DROP DATABASE IF EXISTS {DB} WITH (FORCE)")


@pytest.fixture(scope="session")
def build_dir():
    d = Path(os.environ.get("PGLEASE_BUILD_DIR", REPO / "build"))
    binary = d / "proxy" / "pglease"
    if not binary.is_file() or not os.access(binary, os.X_OK):
        pytest.fail(f"pglease binary not found at {binary}: build it first "
                    f"(meson setup build && ninja -C build) or set PGLEASE_BUILD_DIR",
                    pytrace=False)
    return d


@pytest.hookimpl(tryfirst=True, hookwrapper=True)
def pytest_runtest_makereport(item, call):
    # Lets fixtures see whether the test body failed (to print logs).
    outcome = yield
    rep = outcome.get_result()
    setattr(item, "rep_" + rep.when, rep)
