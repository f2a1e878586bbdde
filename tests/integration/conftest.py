"""Shared fixtures: one throwaway PostgreSQL cluster for the whole run, a fresh
Vault stand-in per test. Both are always stopped and removed, also when a
test fails or the run is interrupted."""
import pytest

from pgcluster import PgCluster
from vaultsim_proc import VaultSim


@pytest.fixture(scope="session")
def pg():
    cluster = PgCluster()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def vault(pg):
    v = VaultSim()
    try:
        yield v
    finally:
        v.stop()
        # Roles a test left behind (leases not revoked) must not leak into
        # the next test.
        for (name,) in pg.sql("select rolname from pg_roles where rolname like 'v-%'"):
            for (db,) in pg.sql("select datname from pg_database where datallowconn"):
                pg.sql(f'DROP OWNED BY "{name}"', dbname=db)
            pg.sql(f'DROP ROLE IF EXISTS "{name}"')
