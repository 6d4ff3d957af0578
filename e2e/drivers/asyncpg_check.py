"""asyncpg (its own protocol code, binary formats, prepared statements)
through rdsproxy connect: run by e2e's TestDrivers with the DSN connect
printed. Prints "ok NAME" for each check that passed; the first failure
raises, so the script exits non-zero with the traceback."""

import asyncio
import datetime
import decimal
import io
import sys

import asyncpg

dsn = sys.argv[1]
want_user = sys.argv[2]

# A result the backend streams for hours at about 20 MB/s at most (a
# millisecond's sleep every 100 rows), so a cancel always lands in it.
STREAM = ("SELECT a, b, repeat('x', 200) FROM generate_series(1, 1000000) a, "
          "generate_series(1, 1000) b WHERE (a + b) % 100 <> 0 OR pg_sleep(0.001) IS NULL")


def ok(name):
    print("ok", name, flush=True)


async def usable(conn):
    assert await conn.fetchval("SELECT 41 + 1") == 42


async def usable_soon(conn, what):
    try:
        await asyncio.wait_for(usable(conn), 60)
    except asyncio.TimeoutError:
        raise AssertionError(f"{what}: still running a minute after asyncpg's cancel") from None


async def main():
    conn = await asyncpg.connect(dsn)
    assert await conn.fetchval("SELECT current_user") == want_user
    tls = conn._transport.get_extra_info("ssl_object") is not None  # asyncpg has no public API for it
    assert tls == ("sslmode=verify-full" in dsn), f"TLS in use: {tls} for {dsn}"
    ok("connect")

    when = datetime.datetime(2026, 12, 4, 12, 30, tzinfo=datetime.timezone.utc)
    payload = bytes(range(256)) * 256
    row = await conn.fetchrow(
        "SELECT $1::int8, $2::text, $3::bytea, $4::text, $5::numeric, $6::int[], $7::timestamptz",
        2**62, "grüße ✓", payload, None, decimal.Decimal("12345.678901234567890"), [1, 2, 3], when)
    assert tuple(row) == (2**62, "grüße ✓", payload, None,
                          decimal.Decimal("12345.678901234567890"), [1, 2, 3], when), row
    stmt = await conn.prepare("SELECT $1::int * 2")
    assert [await stmt.fetchval(i) for i in range(20)] == [i * 2 for i in range(20)]
    ok("types")

    want = tuple(await conn.fetchrow(
        "SELECT count(*), sum(length(md5(i::text))) FROM generate_series(1, 200000) i"))
    rows = await conn.fetch("SELECT i, md5(i::text) FROM generate_series(1, 200000) i")
    assert (len(rows), sum(len(r[1]) for r in rows)) == want
    async with conn.transaction():
        seen = 0
        async for r in conn.cursor("SELECT i FROM generate_series(1, 50000) i", prefetch=1000):
            seen += 1
            assert r[0] == seen
        assert seen == 50000
    ok("large-result")

    await conn.execute("CREATE TEMP TABLE t (i int PRIMARY KEY, s text)")
    out = io.BytesIO()
    await conn.copy_from_query("SELECT i, md5(i::text) FROM generate_series(1, 100000) i", output=out)
    assert out.getvalue().count(b"\n") == 100000
    out.seek(0)
    await conn.copy_to_table("t", source=out)
    assert tuple(await conn.fetchrow("SELECT count(*), bool_and(s = md5(i::text)) FROM t")) == (100000, True)
    await conn.copy_records_to_table("t", records=[(i, str(i)) for i in range(-1000, 0)])
    assert await conn.fetchval("SELECT count(*) FROM t") == 101000
    ok("copy")

    try:
        await conn.fetchval("SELECT 1/0")
        raise AssertionError("1/0 did not fail")
    except asyncpg.DivisionByZeroError as e:
        assert e.sqlstate == "22012"
    await usable(conn)
    try:
        async with conn.transaction():
            await conn.execute("INSERT INTO t VALUES (0, 'rolled back')")
            await conn.execute("INSERT INTO t VALUES (0, 'duplicate')")
        raise AssertionError("duplicate key accepted")
    except asyncpg.UniqueViolationError:
        pass
    assert await conn.fetchval("SELECT count(*) FROM t WHERE i = 0") == 0
    ok("errors")

    # A timeout makes asyncpg send a CancelRequest and wait for the
    # statement's end before the connection is used again; it raises
    # TimeoutError whether or not the cancel took, so usable_soon says
    # whether it did: neither statement would end within minutes by itself.
    for query in ("SELECT pg_sleep(600)", STREAM):
        try:
            await conn.fetch(query, timeout=1.0)
            raise AssertionError(f"{query}: not cancelled")
        except asyncio.TimeoutError:
            pass
        await usable_soon(conn, query)
    try:  # a cursor's portal, in the middle of its rows
        async with conn.transaction():
            cur = await conn.cursor(STREAM)
            assert len(await cur.fetch(1000)) == 1000
            await cur.fetch(10_000_000, timeout=1.0)
        raise AssertionError("cursor fetch: not cancelled")
    except asyncio.TimeoutError:
        pass
    await usable_soon(conn, "the cursor")
    ok("cancel")

    try:
        await conn.copy_from_query(STREAM, output=io.BytesIO(), timeout=1.0)
        raise AssertionError("COPY out not cancelled")
    except asyncio.TimeoutError:
        pass
    await usable_soon(conn, "COPY out")
    ok("cancel-copy")

    got = asyncio.get_running_loop().create_future()
    listener = await asyncpg.connect(dsn)
    await listener.add_listener("driver_check", lambda *args: got.set_result(args[3]))
    await conn.execute("NOTIFY driver_check, 'hello'")
    assert await asyncio.wait_for(got, 30) == "hello"
    await listener.close()
    ok("notify")

    pool = await asyncpg.create_pool(dsn, min_size=8, max_size=8)
    sums = await asyncio.gather(*(pool.fetchval("SELECT sum(i) FROM generate_series(1, $1::int) i", n)
                                  for n in range(1, 201)))
    assert sums == [n * (n + 1) // 2 for n in range(1, 201)]
    await pool.close()
    ok("pool")

    await conn.close()


asyncio.run(main())
