// node-postgres (pg, with pg-copy-streams) through rdsproxy connect: run by
// e2e's TestDrivers with the DSN connect printed. Prints "ok NAME" for each
// check that passed; the first failure throws, so node exits non-zero with
// the stack trace.
'use strict'

const assert = require('node:assert/strict')
const { pipeline } = require('node:stream/promises')
const { Readable, Writable } = require('node:stream')
const pg = require('pg')
const { to: copyTo, from: copyFrom } = require('pg-copy-streams')

const [dsn, wantUser] = process.argv.slice(2)

// A result the backend streams for hours at about 20 MB/s at most (a
// millisecond's sleep every 100 rows), so a cancel always lands in it.
const STREAM = "SELECT a, b, repeat('x', 200) FROM generate_series(1, 1000000) a, " +
  'generate_series(1, 1000) b WHERE (a + b) % 100 <> 0 OR pg_sleep(0.001) IS NULL'

const ok = (name) => console.log('ok', name)

async function usable (client) {
  const { rows } = await client.query('SELECT 41 + 1 AS n')
  assert.equal(rows[0].n, 42)
}

// cancelAfter sends a CancelRequest for client's running query, from a
// second client as node-postgres does it, after ms.
function cancelAfter (client, query, ms) {
  return setTimeout(() => new pg.Client(dsn).cancel(client, query), ms)
}

async function expectCancelled (client, query, run) {
  const timer = cancelAfter(client, query, 1000)
  try {
    await run()
    assert.fail('not cancelled')
  } catch (err) {
    assert.equal(err.code, '57014', String(err))
  } finally {
    clearTimeout(timer)
  }
  await usable(client)
}

async function main () {
  const client = new pg.Client(dsn)
  await client.connect()
  const { rows: [who] } = await client.query('SELECT current_user AS u')
  assert.equal(who.u, wantUser)
  assert.equal(client.connection.stream.encrypted === true, dsn.includes('sslmode=verify-full'), `TLS in use for ${dsn}`)
  ok('connect')

  const payload = Buffer.alloc(65536, 0).map((_, i) => i % 256)
  for (let i = 0; i < 10; i++) { // a named statement: parsed once, then bound
    const { rows: [r] } = await client.query({
      name: 'types',
      text: 'SELECT $1::int8::text AS big, $2::text AS t, $3::bytea AS b, $4::text AS n, $5::numeric AS num, $6::int * 2 AS twice',
      values: ['4611686018427387904', 'grüße ✓', payload, null, '12345.678901234567890', i]
    })
    assert.deepEqual([r.big, r.t, r.n, r.num, r.twice], ['4611686018427387904', 'grüße ✓', null, '12345.678901234567890', i * 2])
    assert.ok(r.b.equals(payload))
  }
  ok('types')

  const { rows: [want] } = await client.query('SELECT count(*)::int AS n, sum(length(md5(i::text)))::int AS s FROM generate_series(1, 200000) i')
  const { rows } = await client.query('SELECT i, md5(i::text) AS m FROM generate_series(1, 200000) i')
  assert.deepEqual([rows.length, rows.reduce((s, r) => s + r.m.length, 0)], [want.n, want.s])
  ok('large-result')

  await client.query('CREATE TEMP TABLE t (i int PRIMARY KEY, s text)')
  const chunks = []
  await pipeline(client.query(copyTo('COPY (SELECT i, md5(i::text) FROM generate_series(1, 100000) i) TO STDOUT')),
    new Writable({ write (chunk, _, done) { chunks.push(chunk); done() } }))
  const copied = Buffer.concat(chunks)
  assert.equal(copied.toString().split('\n').length - 1, 100000)
  await pipeline(Readable.from([copied]), client.query(copyFrom('COPY t FROM STDIN')))
  const { rows: [c] } = await client.query('SELECT count(*)::int AS n, bool_and(s = md5(i::text)) AS same FROM t')
  assert.deepEqual([c.n, c.same], [100000, true])
  ok('copy')

  await assert.rejects(client.query('SELECT 1/0'), { code: '22012' })
  await usable(client)
  await client.query('BEGIN')
  await client.query("INSERT INTO t VALUES (0, 'rolled back')")
  await assert.rejects(client.query("INSERT INTO t VALUES (0, 'duplicate')"), { code: '23505' })
  await client.query('ROLLBACK')
  const { rows: [gone] } = await client.query('SELECT count(*)::int AS n FROM t WHERE i = 0')
  assert.equal(gone.n, 0)
  ok('errors')

  for (const text of ['SELECT pg_sleep(30)', STREAM]) {
    const query = new pg.Query(text)
    await expectCancelled(client, query, () => new Promise((resolve, reject) => {
      query.on('end', resolve)
      query.on('error', reject)
      client.query(query)
    }))
  }
  ok('cancel')

  const copyOut = copyTo(`COPY (${STREAM}) TO STDOUT`)
  await expectCancelled(client, copyOut, () => pipeline(client.query(copyOut),
    new Writable({ write (_, __, done) { done() } })))
  ok('cancel-copy')

  const listener = new pg.Client(dsn)
  await listener.connect()
  const heard = new Promise((resolve) => listener.on('notification', (n) => resolve(n.payload)))
  await listener.query('LISTEN driver_check')
  await client.query("NOTIFY driver_check, 'hello'")
  assert.equal(await heard, 'hello')
  await listener.end()
  ok('notify')

  const pool = new pg.Pool({ connectionString: dsn, max: 8 })
  const sums = await Promise.all(Array.from({ length: 200 }, (_, i) =>
    pool.query('SELECT sum(i)::int AS s FROM generate_series(1, $1::int) i', [i + 1])))
  assert.deepEqual(sums.map((r) => r.rows[0].s), Array.from({ length: 200 }, (_, i) => (i + 1) * (i + 2) / 2))
  await pool.end()
  ok('pool')

  await client.end()
}

main().catch((err) => {
  console.error(err)
  process.exit(1)
})
