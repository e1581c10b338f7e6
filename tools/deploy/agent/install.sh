#!/usr/bin/env bash
# Installs the Flotilla device agent on a Debian-like box as a systemd service under its own user.
#
#   sudo ./install.sh --bundle path/to/flotilla-agent.mjs [--server URL --token TOKEN] [--config agent.yaml]
#
# Needs Node.js >= 20.19 and npm (node-llama-cpp, which ships native binaries, is installed next to the bundle).
set -euo pipefail

NODE_LLAMA_CPP_VERSION="3.22.1"
APP_DIR=/opt/flotilla-agent
CONF_DIR=/etc/flotilla-agent
DATA_DIR=/var/lib/flotilla-agent
SERVICE_USER=flotilla-agent
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

bundle="" server="" token="" config=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    --bundle) bundle="$2"; shift 2 ;;
    --server) server="$2"; shift 2 ;;
    --token) token="$2"; shift 2 ;;
    --config) config="$2"; shift 2 ;;
    -h|--help) sed -n '2,7p' "$0"; exit 0 ;;
    *) echo "unknown option: $1" >&2; exit 2 ;;
  esac
done

fail() { echo "install: $*" >&2; exit 1; }
[[ $EUID -eq 0 ]] || fail "run as root (sudo)"
[[ -n "$bundle" && -f "$bundle" ]] || fail "--bundle must point at flotilla-agent.mjs (npx nx build @flotilla/device-agent)"
if [[ -n "$server" || -n "$token" ]]; then [[ -n "$server" && -n "$token" ]] || fail "--server and --token go together"; fi
command -v node >/dev/null || fail "node not found: install Node.js >= 20.19 first"
command -v npm >/dev/null || fail "npm not found"
NODE_BIN="$(command -v node)"
node -e 'const [a,b]=process.versions.node.split(".").map(Number); process.exit(a>20||(a===20&&b>=19)?0:1)' \
  || fail "Node.js $(node -v) is too old: need >= 20.19"

echo "==> user $SERVICE_USER"
if ! id "$SERVICE_USER" >/dev/null 2>&1; then
  useradd --system --home-dir "$DATA_DIR" --shell /usr/sbin/nologin --user-group "$SERVICE_USER"
fi

echo "==> $APP_DIR"
install -d -m 0755 "$APP_DIR"
install -m 0755 "$bundle" "$APP_DIR/flotilla-agent.mjs"
[[ -f "$bundle.map" ]] && install -m 0644 "$bundle.map" "$APP_DIR/flotilla-agent.mjs.map"
cat > "$APP_DIR/package.json" <<JSON
{ "name": "flotilla-agent-install", "private": true, "type": "module" }
JSON
(cd "$APP_DIR" && NODE_LLAMA_CPP_SKIP_DOWNLOAD=true npm install --omit=dev --no-audit --no-fund "node-llama-cpp@${NODE_LLAMA_CPP_VERSION}")

echo "==> $CONF_DIR and $DATA_DIR"
install -d -m 0755 "$CONF_DIR"
install -d -m 0750 -o "$SERVICE_USER" -g "$SERVICE_USER" "$DATA_DIR"
if [[ -n "$config" ]]; then
  install -m 0640 -g "$SERVICE_USER" "$config" "$CONF_DIR/agent.yaml"
elif [[ ! -f "$CONF_DIR/agent.yaml" ]]; then
  install -m 0640 -g "$SERVICE_USER" "$HERE/agent.example.yaml" "$CONF_DIR/agent.yaml"
fi

cat > /usr/local/bin/flotilla-agent <<SH
#!/bin/sh
# Runs the agent CLI as its service user with the installed config.
export FLOTILLA_AGENT_CONFIG="\${FLOTILLA_AGENT_CONFIG:-$CONF_DIR/agent.yaml}"
if [ "\$(id -u)" = "0" ]; then exec runuser -u $SERVICE_USER -- "$NODE_BIN" "$APP_DIR/flotilla-agent.mjs" "\$@"; fi
exec "$NODE_BIN" "$APP_DIR/flotilla-agent.mjs" "\$@"
SH
chmod 0755 /usr/local/bin/flotilla-agent

if [[ -n "$server" ]]; then
  echo "==> enrolling with $server"
  /usr/local/bin/flotilla-agent enroll --server "$server" --token "$token"
fi

echo "==> systemd unit"
sed "s|@NODE@|$NODE_BIN|" "$HERE/flotilla-agent.service" > /etc/systemd/system/flotilla-agent.service
systemctl daemon-reload
if [[ -f "$DATA_DIR/credentials.json" ]]; then
  systemctl enable --now flotilla-agent.service
  echo "flotilla-agent is running: journalctl -u flotilla-agent -f"
else
  systemctl enable flotilla-agent.service
  echo "not enrolled yet: flotilla-agent enroll --server URL --token TOKEN && systemctl start flotilla-agent"
fi
