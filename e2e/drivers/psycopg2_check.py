"""psycopg2 (libpq) through rdsproxy connect: run by e2e's TestDrivers with
the DSN connect printed. Prints "ok NAME" for each check that passed; the
first failure raises, so the script exits non-zero with the traceback."""

import io
import sys
import threading
import time

import psycopg2
import psycopg2.errors

dsn = sys.argv[1]
want_user = sys.argv[2]

# A result the backend streams for hours at about 20 MB/s at most (a
# millisecond's sleep every 100 rows), so a cancel always lands in it.
STREAM = ("SELECT a, b, repeat('x', 200) FROM generate_series(1, 1000000) a, "
          "generate_series(1, 1000) b WHERE (a + b) % 100 <> 0 OR pg_sleep(0.001) IS NULL")


def ok(name):
    print("ok", name, flush=True)


def usable(conn):
    with conn.cursor() as cur:
        cur.execute("SELECT 41 + 1")
        assert cur.fetchone()[0] == 42


def cancel_after(conn, delay):
    timer = threading.Timer(delay, conn.cancel)
    timer.start()
    return timer


conn = psycopg2.connect(dsn)
conn.autocommit = True
cur = conn.cursor()
cur.execute("SELECT current_user, current_database()")
user, _ = cur.fetchone()
assert user == want_user, f"current_user {user!r}, want {want_user!r}"
assert conn.info.ssl_in_use == ("sslmode=verify-full" in dsn or "sslmode=require" in dsn), \
    f"ssl_in_use {conn.info.ssl_in_use} for {dsn}"
ok("connect")

payload = bytes(range(256)) * 256
cur.execute("SELECT %s::int8, %s::text, %s::bytea, %s, %s::numeric, %s::int[]",
            (2**62, "grüße ✓", payload, None, "12345.678901234567890", [1, 2, 3]))
row = cur.fetchone()
assert row[0] == 2**62 and row[1] == "grüße ✓" and bytes(row[2]) == payload
assert row[3] is None and str(row[4]) == "12345.678901234567890" and row[5] == [1, 2, 3]
ok("types")

cur.execute("SELECT count(*), sum(length(md5(i::text))) FROM generate_series(1, 200000) i")
want = cur.fetchone()
cur.execute("SELECT i, md5(i::text) FROM generate_series(1, 200000) i")
rows = cur.fetchall()
assert (len(rows), sum(len(r[1]) for r in rows)) == want
ok("large-result")

cur.execute("CREATE TEMP TABLE t (i int PRIMARY KEY, s text)")
out = io.StringIO()
cur.copy_expert("COPY (SELECT i, md5(i::text) FROM generate_series(1, 100000) i) TO STDOUT", out)
assert out.getvalue().count("\n") == 100000
out.seek(0)
cur.copy_expert("COPY t FROM STDIN", out)
cur.execute("SELECT count(*), bool_and(s = md5(i::text)) FROM t")
assert cur.fetchone() == (100000, True)
ok("copy")

try:
    cur.execute("SELECT 1/0")
    raise AssertionError("1/0 did not fail")
except psycopg2.errors.DivisionByZero as e:
    assert e.pgcode == "22012"
usable(conn)
conn.autocommit = False
cur.execute("INSERT INTO t VALUES (0, 'rolled back')")
try:
    cur.execute("INSERT INTO t VALUES (0, 'duplicate')")
    raise AssertionError("duplicate key accepted")
except psycopg2.errors.UniqueViolation:
    pass
conn.rollback()
conn.autocommit = True
cur.execute("SELECT count(*) FROM t WHERE i = 0")
assert cur.fetchone()[0] == 0
ok("errors")

for query in ("SELECT pg_sleep(30)", STREAM):
    timer = cancel_after(conn, 1.0)
    start = time.monotonic()
    try:
        cur.execute(query)
        raise AssertionError(f"{query}: not cancelled")
    except psycopg2.errors.QueryCanceled as e:
        assert e.pgcode == "57014"
    finally:
        timer.cancel()
    usable(conn)
ok("cancel")

timer = cancel_after(conn, 1.0)
try:
    cur.copy_expert(f"COPY ({STREAM}) TO STDOUT", io.StringIO())
    raise AssertionError("COPY out not cancelled")
except psycopg2.errors.QueryCanceled:
    pass
finally:
    timer.cancel()
usable(conn)
ok("cancel-copy")

listener = psycopg2.connect(dsn)
listener.autocommit = True
listener.cursor().execute("LISTEN driver_check")
cur.execute("NOTIFY driver_check, 'hello'")
deadline = time.monotonic() + 30
while not listener.notifies and time.monotonic() < deadline:
    listener.poll()
    time.sleep(0.05)
assert [n.payload for n in listener.notifies] == ["hello"], listener.notifies
listener.close()
ok("notify")

conn.close()
