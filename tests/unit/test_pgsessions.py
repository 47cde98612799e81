"""handlers._pgsessions' pure logic: lock trees from the blocking graph, session filters,
targets. (What reaches PostgreSQL is tested against a real server in
tests/integration/test_postgres_handlers.py.)"""

from __future__ import annotations

from typing import Any

from handlers._pgsessions import lock_trees, matches, target, wait_age
from healer.api import PgSession


def session(
    pid: int,
    *,
    blocked_by: tuple[int, ...] = (),
    blocking: tuple[int, ...] = (),
    query_age: float | None = 1.0,
    **kw: Any,
) -> PgSession:
    fields: dict[str, Any] = {
        "database": "shop",
        "user": "odoo",
        "application_name": "odoo",
        "client_addr": None,
        "backend_type": "client backend",
        "state": "active",
        "wait_event_type": None,
        "wait_event": None,
        "xact_age": 1.0,
        "state_age": 1.0,
        "query": "",
        "superuser": False,
    }
    return PgSession(
        pid=pid, query_age=query_age, blocked_by=blocked_by, blocking=blocking, **{**fields, **kw}
    )


def test_chain_has_one_tree_rooted_at_the_head() -> None:
    """A <- B <- C: one tree, root A, holding up B and C; its longest wait is the
    oldest waiter's statement age."""
    a = session(1, blocking=(2,), query_age=100, state="idle in transaction")
    b = session(2, blocked_by=(1,), blocking=(3,), query_age=40)
    c = session(3, blocked_by=(2,), query_age=5)
    (tree,) = lock_trees([c, b, a])
    assert tree.root.pid == 1
    assert [s.pid for s in tree.blocked] == [2, 3]
    assert tree.longest_wait == 40
    assert tree.evidence()["blocks_total"] == 2


def test_shared_waiter_appears_under_each_root_biggest_tree_first() -> None:
    """A waiter blocked by two roots belongs to both trees; trees come biggest first."""
    r1 = session(1, blocking=(3, 4))
    r2 = session(2, blocking=(3,))
    w3 = session(3, blocked_by=(1, 2))
    w4 = session(4, blocked_by=(1,))
    trees = lock_trees([r2, w3, r1, w4])
    assert [(t.root.pid, [s.pid for s in t.blocked]) for t in trees] == [(1, [3, 4]), (2, [3])]


def test_deadlock_cycle_without_root_yields_no_tree() -> None:
    """A cycle (a deadlock PostgreSQL resolves itself) has no root: nothing to terminate."""
    a = session(1, blocked_by=(2,), blocking=(2,))
    b = session(2, blocked_by=(1,), blocking=(1,))
    assert lock_trees([a, b]) == []


def test_wait_age_falls_back_to_state_age() -> None:
    """Without a statement start, the state's age stands for the wait."""
    assert wait_age(session(1, query_age=None, state_age=7.0)) == 7.0


def test_empty_filters_accept_any_session() -> None:
    """users / application_names: empty accepts all, otherwise both must list it."""
    s = session(1, user="odoo", application_name="cron")
    assert matches(s, [], [])
    assert matches(s, ["odoo"], ["cron"])
    assert not matches(s, ["report"], [])
    assert not matches(s, [], ["web"])


def test_target_names_database_and_pid_with_allowlist_attrs() -> None:
    """The target is postgres:<database>/<pid>; unknown attrs are left out, so an
    allowlist entry on them never matches by accident."""
    t = target("odoo", session(42, user=None))
    assert t.key == "postgres:odoo/42"
    assert t.fields() == {
        "kind": "postgres",
        "name": "odoo/42",
        "database": "odoo",
        "datname": "shop",
        "application_name": "odoo",
    }
