#!/usr/bin/env bash
# Renders a `kiln quantize --report` page in headless Chromium (Debian `chromium`) to a PNG, as people see it.
#   scripts/report_screenshot.sh REPORT.html OUT.png [WIDTHxHEIGHT]
# Installs chromium if missing. The page needs no network: the browser is run offline on the file.
set -euo pipefail
[ $# -ge 2 ] || { echo "usage: $0 REPORT.html OUT.png [WIDTHxHEIGHT]" >&2; exit 2; }
report=$(realpath "$1"); out=$(realpath -m "$2"); size=${3:-1280x2400}
if ! command -v chromium >/dev/null; then
    sudo=""; [ "$(id -u)" -ne 0 ] && sudo="sudo"
    $sudo apt-get update -q && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends chromium
fi
tmp="$out.tmp.png"
chromium --headless --no-sandbox --disable-gpu --hide-scrollbars --no-first-run --disable-extensions \
    --proxy-server="127.0.0.1:9" --window-size="${size/x/,}" --screenshot="$tmp" "file://$report" 2>/dev/null
mv "$tmp" "$out"
echo "$out: $(stat -c %s "$out") bytes"
