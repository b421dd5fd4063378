# Source me: pg_start / pg_stop a throw-away PostgreSQL cluster on a free localhost port (Debian's postgresql).
pg_bin() {
  if command -v pg_ctl >/dev/null && command -v initdb >/dev/null; then dirname "$(command -v initdb)"; return; fi
  ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1
}
pg_start() {
  local bin; bin=$(pg_bin)
  [ -n "$bin" ] || { echo "PostgreSQL not installed (apt-get install postgresql)"; return 1; }
  PG_DIR=$(mktemp -d /tmp/doctune-pg.XXXXXX)
  PG_PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  chown -R postgres "$PG_DIR" 2>/dev/null || true
  local as=""; [ "$(id -u)" = 0 ] && as="runuser -u postgres --"
  $as "$bin/initdb" -D "$PG_DIR/data" -U postgres -A trust >/dev/null
  $as "$bin/pg_ctl" -D "$PG_DIR/data" -o "-p $PG_PORT -k $PG_DIR -c listen_addresses=127.0.0.1" -l "$PG_DIR/log" -w start >/dev/null
  PG_URL="postgresql://postgres@127.0.0.1:$PG_PORT/postgres"
  PG_CTL_CMD="$as $bin/pg_ctl -D $PG_DIR/data -m fast -w stop"
  echo "PostgreSQL on 127.0.0.1:$PG_PORT"
}
pg_stop() { [ -n "${PG_CTL_CMD:-}" ] && $PG_CTL_CMD >/dev/null 2>&1; rm -rf "${PG_DIR:-/nonexistent}"; }
