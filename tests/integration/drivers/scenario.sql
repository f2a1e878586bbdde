-- psql: simple protocol, COPY from the script, \copy both ways, \gset, a
-- transaction block. Run with -v ON_ERROR_STOP=1 -X -A -t.
select current_database(), current_user;
select 42::int, 'h''llo'::text, null::text, '\x0001ff'::bytea, 12345.6789::numeric,
       '2024-02-29 12:34:56.789'::timestamp, '2024-02-29 12:34:56.789+00'::timestamptz at time zone 'UTC';
drop table if exists psql_t;
create table psql_t (id int primary key, name text, data bytea);
copy psql_t from stdin;
1	one	\\x01
2	two	\\x0202
3	three	\N
\.
insert into psql_t select g, 'gen' || g, null from generate_series(10, 30) g;
\copy (select id, name from psql_t where id < 12 order by id) to stdout
select count(*) as n, sum(id) as s from psql_t \gset
select :n + 0, :s + 0;
begin;
update psql_t set name = upper(name) where id < 4;
commit;
select string_agg(name, ',' order by id) from psql_t where id < 12;
