// node-postgres (pg) with its defaults: parameterised queries (unnamed
// statements), named queries {name, text, values} used again and again
// (prepared once per connection), an error inside a transaction, several
// queries in flight on one client at once (Promise.all).
// Run: node scenario.js '{"host":..,"port":..,"user":..,"password":..,"dbname":..}'
'use strict';
const { Client } = require('pg');

const t = JSON.parse(process.argv[2]);

function norm(v) {
  if (v === null || v === undefined) return null;
  if (Buffer.isBuffer(v)) return '\\x' + v.toString('hex');
  if (v instanceof Date) return 'date:' + v.toISOString();
  if (Array.isArray(v)) return v.map(norm);
  if (typeof v === 'object') {
    const o = {};
    for (const k of Object.keys(v).sort()) o[k] = norm(v[k]);
    return o;
  }
  return v;
}

function out(label, v) {
  process.stdout.write(JSON.stringify([label, norm(v)]) + '\n');
}

async function main() {
  const c = new Client({ host: t.host, port: t.port, user: t.user, password: t.password,
                         database: t.dbname, ssl: false });
  await c.connect();
  const rows = async (q, v) => (await c.query({ text: q, values: v, rowMode: 'array' })).rows;
  out('connect', await rows('select current_database(), current_user'));
  out('params', await rows(
    'select $1::int, $2::text, $3::text, $4::bytea, $5::numeric, $6::timestamp, ' +
    '$7::timestamptz, $8::bool, $9::float8',
    [42, "h\u00e9llo, 'w\u00f6rld'", null, Buffer.from([0, 1, 2, 127, 128, 255]),
     '12345678901234567890.0123456789', '2024-02-29 12:34:56.789012',
     '2024-02-29T12:34:56.789012Z', true, 1.5]));

  await c.query('drop table if exists node_t');
  await c.query('create table node_t (id int primary key, name text, data bytea, amount numeric)');
  // Named statements: parsed once per connection, then Bind/Execute only.
  for (let i = 0; i < 12; i++) {
    const r = await c.query({ name: 'node_ins', text: 'insert into node_t values ($1, $2, $3, $4)',
                              values: [i, `row ${i}`, Buffer.from([i, 255 - i]), `${i}.5`] });
    out(`insert-${i}`, r.rowCount);
    out(`named-${i}`, (await c.query({
      name: 'node_sel', rowMode: 'array',
      text: "select $1::int * 2, $2::text || '!', (select name from node_t where id = $1)",
      values: [i, `v${i}`] })).rows);
  }
  if (t.check_prepared) {
    const names = (await c.query('select name from pg_prepared_statements order by name')).rows
      .map((r) => r.name);
    if (!names.includes('node_sel') || !names.includes('node_ins'))
      throw new Error('node-postgres did not prepare: ' + names);
  }

  // An error inside a transaction, rollback, then a good query.
  await c.query('begin');
  await c.query("insert into node_t values (100, 'doomed', null, null)");
  try {
    await c.query('select 1 / $1::int', [0]);
    out('error', 'none');
  } catch (e) {
    out('error', [e.code, e.message]);
  }
  try {
    await c.query({ name: 'node_sel', text: "select $1::int * 2, $2::text || '!', (select name from node_t where id = $1)", values: [1, 'x'] });
    out('in-failed-tx', 'none');
  } catch (e) {
    out('in-failed-tx', e.code);
  }
  await c.query('rollback');
  out('after-rollback', await rows('select count(*), max(id) from node_t'));

  // Several queries in flight on one client: named, unnamed, and one that fails.
  const ps = [];
  for (let i = 0; i < 20; i++) {
    ps.push(c.query({ name: 'node_sel', rowMode: 'array',
                      text: "select $1::int * 2, $2::text || '!', (select name from node_t where id = $1)",
                      values: [i % 12, `c${i}`] }).then((r) => r.rows));
    ps.push(c.query({ text: 'select $1::text || $2::text', values: ['u', String(i)],
                      rowMode: 'array' }).then((r) => r.rows));
  }
  ps.push(c.query('select 1 / 0').then(() => 'none', (e) => e.code));
  ps.push(c.query({ name: 'node_cnt', text: 'select count(*) from node_t', rowMode: 'array' })
    .then((r) => r.rows));
  out('concurrent', await Promise.all(ps));

  // Concurrent inserts inside one transaction.
  await c.query('begin');
  await Promise.all(Array.from({ length: 30 }, (_, i) => c.query({
    name: 'node_ins', text: 'insert into node_t values ($1, $2, $3, $4)',
    values: [200 + i, `p${i}`, null, null] })));
  await c.query('commit');
  out('after-concurrent', await rows('select count(*), sum(id) from node_t'));
  for (let i = 0; i < 10; i++) {
    out(`again-${i}`, (await c.query({
      name: 'node_sel', rowMode: 'array',
      text: "select $1::int * 2, $2::text || '!', (select name from node_t where id = $1)",
      values: [i, `again${i}`] })).rows);
  }
  await c.end();
  out('done', true);
}

main().catch((e) => {
  process.stderr.write(`node scenario failed: ${e.stack}\n`);
  process.exit(1);
});
