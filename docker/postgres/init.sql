-- Runs once, when the Postgres volume is first created. doctune's checkpoints live in the default database
-- (POSTGRES_DB); the LangGraph server (compose profile `server`) keeps its own tables — which share names with
-- langgraph-checkpoint-postgres' — in a database of its own.
CREATE DATABASE langgraph;
