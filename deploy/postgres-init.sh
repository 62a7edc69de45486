#!/bin/sh
# First start of the postgres container: Prefect's database and role, and the records store with its
# two roles (README "Running in production": the owner migrates, qms_app runs qmsflow).
set -eu
psql -v ON_ERROR_STOP=1 --username postgres <<SQL
CREATE ROLE prefect LOGIN PASSWORD '${PREFECT_DB_PASSWORD}';
CREATE DATABASE prefect OWNER prefect;
CREATE ROLE qms_owner LOGIN PASSWORD '${QMS_OWNER_PASSWORD}';
CREATE ROLE qms_app LOGIN PASSWORD '${QMS_APP_PASSWORD}';
CREATE DATABASE qms OWNER qms_owner;
SQL
psql -v ON_ERROR_STOP=1 --username postgres --dbname qms <<SQL
CREATE SCHEMA qms AUTHORIZATION qms_owner;
ALTER ROLE qms_owner SET search_path = qms;
ALTER ROLE qms_app SET search_path = qms;
GRANT CONNECT ON DATABASE qms TO qms_app;
SQL
