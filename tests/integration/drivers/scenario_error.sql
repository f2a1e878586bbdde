-- psql with ON_ERROR_STOP=0: errors inside a transaction block, rollback,
-- then good queries.
drop table if exists psql_e;
create table psql_e (id int);
begin;
insert into psql_e values (1);
select 1 / 0;
select 'not reached';
rollback;
select count(*) from psql_e;
select 'x'::int;
insert into psql_e values (2);
select count(*) from psql_e;
