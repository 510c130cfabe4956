#!/usr/bin/env bash
# Install (or remove) the grape spider inspector on a line PC. Idempotent: run it again to upgrade.
#
#   sudo deploy/install.sh --cpu            # CPU onnxruntime
#   sudo deploy/install.sh --gpu            # onnxruntime-gpu + the NVIDIA device drop-in for the unit
#   sudo deploy/install.sh --cpu --gateway  # also the PLC ejector gateway (docs/PLC.md, README "Wiring a PLC")
#   sudo deploy/install.sh --uninstall      # remove venv, unit and command; keep config and data
#   sudo deploy/install.sh --uninstall --purge   # also remove /etc/inspector, /var/lib/inspector, user
#
# Lays out:  /opt/inspector/venv                 virtual environment with the package and its extra
#            /usr/local/bin/inspector            -> /opt/inspector/venv/bin/inspector
#            /etc/inspector/config.yaml          from deploy/config.example.yaml, NEVER overwritten
#            /etc/systemd/system/inspector.service (+ inspector.service.d/gpu.conf with --gpu), and the template
#            inspector@.service for several cameras on one PC (config /etc/inspector/CAMERA.yaml each)
#            /var/lib/inspector                  state, recordings, decisions (owned by user `inspector`)
#            user and group `inspector` (system account, member of `video`)
#
# Options:   --prefix DIR   install under DIR (a DESTDIR-style root) instead of /; then no user is created and
#                           systemd is not touched (for packaging and tests)
#            --dry-run      print what would be done, change nothing
#            --no-venv      lay out files only, do not create the virtual environment (packaging, tests)
#            --source DIR   the repository to install from (default: this script's repository)
#            --python EXE   interpreter for the venv (default python3, needs >= 3.11)
#            --gateway      also the PLC ejector gateway: the extra `gateway`, /etc/inspector/gateway.yaml from
#                           deploy/gateway.example.yaml (never overwritten), inspector-gateway.service; kept
#                           up to date by every later run once installed
#            --allow-ip CIDR  let the daemon reach this network too (the units allow loopback only): the ejector
#                           controller's or PLC's net, a remote inference server; repeat for several; written
#                           to inspector.service.d/network.conf (and the template's); without it the drop-in
#                           is removed (loopback only again); the gateway's unit gets the same drop-in
# After installing: calibrate (calibration/README.md), then  sudo systemctl enable --now inspector
set -euo pipefail

usage() { sed -n '2,31p' "$0" | sed 's/^# \{0,1\}//'; }

PREFIX=""
EXTRA="cpu"
ACTION="install"
PURGE=0
DRY=0
VENV=1
SOURCE="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="python3"
ALLOW_IPS=()
GATEWAY=0

while [ $# -gt 0 ]; do
  case "$1" in
    --cpu) EXTRA="cpu" ;;
    --gpu) EXTRA="gpu" ;;
    --gateway) GATEWAY=1 ;;
    --uninstall) ACTION="uninstall" ;;
    --purge) PURGE=1 ;;
    --dry-run) DRY=1 ;;
    --no-venv) VENV=0 ;;
    --prefix) [ $# -ge 2 ] || { echo "install.sh: --prefix needs a folder" >&2; exit 2; }; PREFIX="${2%/}"; shift ;;
    --source) [ $# -ge 2 ] || { echo "install.sh: --source needs a folder" >&2; exit 2; }; SOURCE="$2"; shift ;;
    --python) [ $# -ge 2 ] || { echo "install.sh: --python needs an interpreter" >&2; exit 2; }; PYTHON="$2"; shift ;;
    --allow-ip)
      [ $# -ge 2 ] || { echo "install.sh: --allow-ip needs an address or CIDR, e.g. 10.1.2.0/24" >&2; exit 2; }
      [[ "$2" =~ ^[0-9A-Fa-f:.]+(/[0-9]{1,3})?$ ]] || {
        echo "install.sh: --allow-ip '$2' is not an IP address or CIDR (e.g. 10.1.2.0/24)" >&2; exit 2; }
      ALLOW_IPS+=("$2"); shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "install.sh: unknown option '$1'; see --help" >&2; exit 2 ;;
  esac
  shift
done

OPT="$PREFIX/opt/inspector"
VENV_DIR="$OPT/venv"
ETC="$PREFIX/etc/inspector"
STATE="$PREFIX/var/lib/inspector"
UNIT_DIR="$PREFIX/etc/systemd/system"
# once the gateway is installed, every later run (an upgrade) keeps it up to date
if [ -e "$UNIT_DIR/inspector-gateway.service" ]; then GATEWAY=1; fi
BIN_LINK="$PREFIX/usr/local/bin/inspector"
SYSTEM_ROOT=0
[ -z "$PREFIX" ] && SYSTEM_ROOT=1

say() { echo "install.sh: $*"; }
run() {  # print, then run unless --dry-run
  echo "+ $*"
  [ "$DRY" -eq 1 ] || "$@"
}
have_systemd() { [ "$SYSTEM_ROOT" -eq 1 ] && command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; }

if [ "$SYSTEM_ROOT" -eq 1 ] && [ "$DRY" -eq 0 ] && [ "$(id -u)" -ne 0 ]; then
  echo "install.sh: must run as root to install under /; use sudo, or --prefix DIR / --dry-run to try it" >&2
  exit 1
fi

do_uninstall() {
  if have_systemd; then
    run systemctl disable --now inspector.service || true
    run systemctl disable --now inspector-gateway.service || true
  fi
  for unit in inspector.service inspector@.service inspector-gateway.service; do
    run rm -f "$UNIT_DIR/$unit" "$UNIT_DIR/$unit.d/gpu.conf" "$UNIT_DIR/$unit.d/network.conf"
    [ -d "$UNIT_DIR/$unit.d" ] && run rmdir --ignore-fail-on-non-empty "$UNIT_DIR/$unit.d"
  done
  have_systemd && run systemctl daemon-reload
  run rm -f "$BIN_LINK"
  run rm -rf "$OPT"
  if [ "$PURGE" -eq 1 ]; then
    run rm -rf "$ETC" "$STATE"
    if [ "$SYSTEM_ROOT" -eq 1 ] && id inspector >/dev/null 2>&1; then run userdel inspector; fi
    say "removed everything, configuration and data included"
  else
    say "removed; kept $ETC and $STATE (add --purge to remove them and the user)"
  fi
}

do_install() {
  [ -f "$SOURCE/pyproject.toml" ] && [ -f "$SOURCE/deploy/inspector.service" ] || {
    echo "install.sh: $SOURCE is not the inspector repository; pass --source DIR" >&2; exit 1; }

  # 1. system user (only on the real root)
  if [ "$SYSTEM_ROOT" -eq 1 ]; then
    if id inspector >/dev/null 2>&1; then
      say "user inspector exists"
    else
      run useradd --system --user-group --home-dir /var/lib/inspector --no-create-home \
        --shell /usr/sbin/nologin --comment "grape spider inspector" inspector
    fi
    getent group video >/dev/null 2>&1 && run usermod -a -G video inspector
  else
    say "prefix $PREFIX: not creating the user inspector"
  fi

  # 2. virtual environment with the package and the chosen onnxruntime
  if [ "$VENV" -eq 1 ]; then
    if [ ! -x "$VENV_DIR/bin/python" ]; then
      run mkdir -p "$OPT"
      run "$PYTHON" -m venv "$VENV_DIR"
    fi
    run "$VENV_DIR/bin/pip" install --quiet --upgrade pip
    # onnxruntime and onnxruntime-gpu install the same module: remove the other one first
    local other="onnxruntime-gpu"
    [ "$EXTRA" = "gpu" ] && other="onnxruntime"
    run "$VENV_DIR/bin/pip" uninstall --quiet --yes "$other" || true
    local extras="$EXTRA"
    if [ "$GATEWAY" -eq 1 ]; then extras="$EXTRA,gateway"; fi
    run "$VENV_DIR/bin/pip" install --quiet "$SOURCE[$extras]"
  else
    say "--no-venv: not creating $VENV_DIR"
  fi
  run mkdir -p "$(dirname "$BIN_LINK")"
  run ln -sfn /opt/inspector/venv/bin/inspector "$BIN_LINK"

  # 3. configuration: never overwrite what the line already has
  run mkdir -p "$ETC"
  if [ -e "$ETC/config.yaml" ]; then
    say "keeping existing $ETC/config.yaml (new example: $ETC/config.example.yaml)"
  else
    run install -m 0644 "$SOURCE/deploy/config.example.yaml" "$ETC/config.yaml"
  fi
  run install -m 0644 "$SOURCE/deploy/config.example.yaml" "$ETC/config.example.yaml"
  if [ "$GATEWAY" -eq 1 ]; then
    if [ -e "$ETC/gateway.yaml" ]; then
      say "keeping existing $ETC/gateway.yaml (new example: $ETC/gateway.example.yaml)"
    else
      run install -m 0640 "$SOURCE/deploy/gateway.example.yaml" "$ETC/gateway.yaml"
      if [ "$SYSTEM_ROOT" -eq 1 ]; then run chgrp inspector "$ETC/gateway.yaml"; fi
    fi
    run install -m 0644 "$SOURCE/deploy/gateway.example.yaml" "$ETC/gateway.example.yaml"
  fi
  [ -e "$ETC/calibration.yaml" ] || say "no $ETC/calibration.yaml yet: calibrate the line (calibration/README.md)"

  # 4. state folder
  run mkdir -p "$STATE/recordings" "$STATE/evidence"
  if [ "$SYSTEM_ROOT" -eq 1 ]; then
    run chown -R inspector:inspector "$STATE"
    run chmod 0750 "$STATE"
  fi

  # 5. systemd units: one camera (inspector.service) and the per-camera template (+ GPU drop-ins), the gateway
  run mkdir -p "$UNIT_DIR"
  local units=(inspector.service inspector@.service)
  if [ "$GATEWAY" -eq 1 ]; then units+=(inspector-gateway.service); fi
  for unit in "${units[@]}"; do
    run install -m 0644 "$SOURCE/deploy/$unit" "$UNIT_DIR/$unit"
    if [ "$EXTRA" = "gpu" ] && [ "$unit" != inspector-gateway.service ]; then
      run mkdir -p "$UNIT_DIR/$unit.d"
      run install -m 0644 "$SOURCE/deploy/gpu.conf" "$UNIT_DIR/$unit.d/gpu.conf"
    else
      run rm -f "$UNIT_DIR/$unit.d/gpu.conf"
    fi
    if [ "${#ALLOW_IPS[@]}" -gt 0 ]; then
      run mkdir -p "$UNIT_DIR/$unit.d"
      say "$unit may also reach ${ALLOW_IPS[*]}"
      if [ "$DRY" -eq 0 ]; then
        printf '# written by install.sh --allow-ip: networks the daemon may reach besides loopback\n[Service]\nIPAddressAllow=%s\n' \
          "${ALLOW_IPS[*]}" > "$UNIT_DIR/$unit.d/network.conf"
      fi
    else
      run rm -f "$UNIT_DIR/$unit.d/network.conf"
    fi
  done
  if have_systemd; then
    run systemctl daemon-reload
    say "installed; calibrate, then: sudo systemctl enable --now inspector"
    if [ "$GATEWAY" -eq 1 ]; then
      say "gateway: edit $ETC/gateway.yaml (docs/PLC.md), then: sudo systemctl enable --now inspector-gateway"
    fi
  else
    say "installed under ${PREFIX:-/} ($EXTRA); systemd not touched"
  fi
}

if [ "$ACTION" = "uninstall" ]; then do_uninstall; else do_install; fi
