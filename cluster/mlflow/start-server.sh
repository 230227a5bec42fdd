#!/usr/bin/env bash
# Start the shared MLflow tracking server of a haloae-sweeps cluster: runs and metrics in
# Postgres, artifacts in S3 (or MinIO / any S3-compatible store, or a local folder) proxied by
# the server (the trials need no bucket credentials, only the server's URL and a user),
# basic-auth users, and a Host-header allow-list.
#
#   set -a; . cluster/mlflow/mlflow.env; set +a      # see mlflow.env.example
#   cluster/mlflow/start-server.sh
#
# Needs: pip install "mlflow[auth]==3.17.*" "psycopg[binary]" boto3 (the docker-compose.yaml
# next to this file has them, plus Postgres and MinIO). Environment:
#   required  MLFLOW_BACKEND_STORE_URI        postgresql://USER@HOST:5432/mlflow
#             MLFLOW_ARTIFACTS_DESTINATION    s3://BUCKET/mlflow-artifacts (or a folder)
#             MLFLOW_FLASK_SERVER_SECRET_KEY  random string, the same across restarts/replicas
#             MLFLOW_AUTH_ADMIN_PASSWORD      password of the admin user made on first start
#   database password, never in the URI of a command line: MLFLOW_DB_PASSWORD_FILE (a file
#             holding only the password, not readable by others) or PGPASSWORD / PGPASSFILE
#             (libpq's own); a URI with the password also works (it stays in the environment)
#   optional  MLFLOW_HOST (127.0.0.1; 0.0.0.0 to serve the cluster: basic auth sends passwords
#             in the clear, so put a TLS proxy in front of any address others can reach),
#             MLFLOW_ALLOWED_HOSTS (Host headers clients use, e.g.
#             mlflow.example.org,mlflow.example.org:*,10.0.*; required unless MLFLOW_HOST is
#             loopback), MLFLOW_AUTH_ADMIN_USERNAME (admin), MLFLOW_AUTH_DATABASE_URI (users and
#             permissions; default: the backend store, its own tables), MLFLOW_PORT (5000),
#             MLFLOW_WORKERS (4), MLFLOW_CORS_ALLOWED_ORIGINS, MLFLOW_S3_ENDPOINT_URL (MinIO),
#             AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (or an instance role),
#             MLFLOW_SERVER_STATE_DIR (where the generated auth config goes),
#             MLFLOW_AUTH_CACHE_TTL_SECONDS (60: a checked credential is cached per worker that
#             long; 0 re-hashes the password on every request, which at 64 concurrent trials on
#             2 cores lost 10% of the values to timeouts: bench/tracking_load.py).
set -euo pipefail

die() { echo "start-server.sh: $*" >&2; exit 2; }

host=${MLFLOW_HOST:-127.0.0.1}
case "$host" in
  127.0.0.1 | localhost | ::1) loopback=1 ;;
  *) loopback=0 ;;
esac
required=(MLFLOW_BACKEND_STORE_URI MLFLOW_ARTIFACTS_DESTINATION MLFLOW_FLASK_SERVER_SECRET_KEY MLFLOW_AUTH_ADMIN_PASSWORD)
[ "$loopback" = 1 ] || required+=(MLFLOW_ALLOWED_HOSTS)
for var in "${required[@]}"; do
  [ -n "${!var:-}" ] || die "$var is not set (see cluster/mlflow/mlflow.env.example)"
done
MLFLOW_ALLOWED_HOSTS=${MLFLOW_ALLOWED_HOSTS:-localhost,localhost:*,127.0.0.1,127.0.0.1:*}

# A password file others can read is a leaked password: refused, as libpq refuses a loose .pgpass.
private_file() {
  [ -f "$2" ] || die "$1: $2 is not a file"
  [ $(( 0$(stat -c %a "$2") & 4 )) = 0 ] || die "$1: $2 is readable by every user (chmod 600 $2)"
}
if [ -n "${MLFLOW_DB_PASSWORD_FILE:-}" ]; then
  private_file MLFLOW_DB_PASSWORD_FILE "$MLFLOW_DB_PASSWORD_FILE"
  # libpq (under psycopg) reads PGPASSWORD: the URI and the process arguments stay without it
  PGPASSWORD=$(<"$MLFLOW_DB_PASSWORD_FILE")
  export PGPASSWORD
fi
[ -z "${PGPASSFILE:-}" ] || private_file PGPASSFILE "$PGPASSFILE"

# MLflow's password policy; checked here so that the error names the variable before a slow start.
[ "${#MLFLOW_AUTH_ADMIN_PASSWORD}" -ge 12 ] || die "MLFLOW_AUTH_ADMIN_PASSWORD must be at least 12 characters"

case "$MLFLOW_BACKEND_STORE_URI" in
  postgresql*://*) ;;
  sqlite:*) echo "start-server.sh: warning: sqlite backend store: fine on one machine, not for a cluster's concurrent trials" >&2 ;;
  *) die "MLFLOW_BACKEND_STORE_URI must be postgresql://... (or sqlite:/// for a local try-out)" ;;
esac

command -v mlflow >/dev/null 2>&1 || die "mlflow is not on PATH (pip install \"mlflow[auth]\" \"psycopg[binary]\" boto3)"
PYTHON=$(dirname "$(command -v mlflow)")/python
[ -x "$PYTHON" ] || PYTHON=python3
missing=$("$PYTHON" - "$MLFLOW_BACKEND_STORE_URI" "$MLFLOW_ARTIFACTS_DESTINATION" <<'PY'
import importlib.util
import sys

backend, artifacts = sys.argv[1], sys.argv[2]
need = {"flask_wtf": "mlflow[auth]"}
if backend.startswith("postgresql+psycopg2"):
    need["psycopg2"] = "psycopg2-binary"
elif backend.startswith("postgresql"):  # SQLAlchemy 2.1: postgresql:// is psycopg 3
    need["psycopg"] = "psycopg[binary]"
if artifacts.startswith("s3://"):
    need["boto3"] = "boto3"
print(" ".join(pkg for mod, pkg in need.items() if importlib.util.find_spec(mod) is None))
PY
)
[ -z "$missing" ] || die "missing Python packages for this configuration: pip install $missing"

# The auth app reads its settings (where users live, default permission) from an ini file. It
# holds a database URI with a password: written private, next to nothing else.
if [ -z "${MLFLOW_AUTH_CONFIG_PATH:-}" ]; then
  state_dir=${MLFLOW_SERVER_STATE_DIR:-$HOME/.mlflow-server}
  mkdir -p "$state_dir"
  chmod 700 "$state_dir"
  export MLFLOW_AUTH_CONFIG_PATH="$state_dir/basic_auth.ini"
  (
    umask 077
    cat > "$MLFLOW_AUTH_CONFIG_PATH" <<INI
[mlflow]
# Every user may read every experiment (compare runs across a team); a user who creates an
# experiment manages it. Generated by cluster/mlflow/start-server.sh on every start.
default_permission = READ
database_uri = ${MLFLOW_AUTH_DATABASE_URI:-$MLFLOW_BACKEND_STORE_URI}
admin_username = ${MLFLOW_AUTH_ADMIN_USERNAME:-admin}
authorization_function = mlflow.server.auth:authenticate_request_basic_auth
# Basic auth hashes the password (PBKDF2) on every request: most of the server's CPU under many
# trials (bench/tracking_load.py). The TTL caches a checked credential per worker for that long
# (keyed by an HMAC, never the password; the worker that changes a password drops it at once,
# the other workers when the TTL expires). 0 turns the cache off.
auth_cache_ttl_seconds = ${MLFLOW_AUTH_CACHE_TTL_SECONDS:-60}
INI
  )
fi

# The server itself makes no telemetry lookups (clusters often have no internet access).
export MLFLOW_DISABLE_TELEMETRY=${MLFLOW_DISABLE_TELEMETRY:-true}
# Nor does it start its GenAI job runner (eight worker processes for judges and prompt
# optimisation, which sweeps never use) unless asked to.
export MLFLOW_SERVER_ENABLE_JOB_EXECUTION=${MLFLOW_SERVER_ENABLE_JOB_EXECUTION:-false}

# mlflow server reads MLFLOW_BACKEND_STORE_URI from the environment: a password in the URI
# stays out of the process arguments (ps, /proc/*/cmdline), which every user can read.
export MLFLOW_BACKEND_STORE_URI
args=(
  server
  # Artifacts go through the server (mlflow-artifacts:/ URIs): clients need no S3 credentials.
  --serve-artifacts
  --artifacts-destination "$MLFLOW_ARTIFACTS_DESTINATION"
  --host "$host"
  --port "${MLFLOW_PORT:-5000}"
  --workers "${MLFLOW_WORKERS:-4}"
  # Requests whose Host header is not listed are refused (DNS-rebinding protection); the
  # default list (localhost, private IPs) is replaced by this one.
  --allowed-hosts "$MLFLOW_ALLOWED_HOSTS"
  --app-name basic-auth
)
if [ -n "${MLFLOW_CORS_ALLOWED_ORIGINS:-}" ]; then
  args+=(--cors-allowed-origins "$MLFLOW_CORS_ALLOWED_ORIGINS")
fi

[ "$loopback" = 1 ] || echo "start-server.sh: note: serving $host with basic auth: clients must reach it through TLS (a reverse proxy), not plain HTTP" >&2
echo "start-server.sh: mlflow server on $host:${MLFLOW_PORT:-5000}, artifacts -> $MLFLOW_ARTIFACTS_DESTINATION" >&2
exec mlflow "${args[@]}"
